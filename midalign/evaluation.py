"""Generation on task examples and the paper's scores per language (per direction for MT) and per group
(paper §4.2, Tables 2, 10, 11; docs/method.md §7), and the model set-up for inference (an adapter merged
into the weights). Used by evaluate.py, retrieve.py, preflight.py, the merge weight search
(midalign/merging.py) and the studies."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from midalign.adapters import load_adapter
from midalign.checkpoint import load_model_and_tokenizer
from midalign.checks import among, check, count
from midalign.data.tasks import Example, Task, read_examples
from midalign.errors import DataError
from midalign.generate import generate


def load_examples(task: Task, paths: list[Path], langs: list[str] | None = None, limit: int | None = None,
                  partition: str = "test") -> list[Example]:
    """The task's examples of `partition` in its files (MT: each file in its own direction); at most `limit`
    per language (per direction for MT). A requested language without examples is an error."""
    check("load_examples", limit=(limit, (lambda v: v is None or count(1)[0](v), "None or an integer ≥ 1")),
          partition=(partition, among(("train", "dev", "test"))))
    out = read_examples(task, paths, partition, langs)
    out = first_per_unit(out, limit) if limit else out
    missing = sorted(set(langs or []) - {ex.lang for ex in out})
    if not out or missing:
        raise DataError(f"no {task.name} examples in {', '.join(map(str, paths))} for languages "
                        f"{', '.join(missing) or langs or 'any'}")
    return out


def first_per_unit(examples: list[Example], limit: int) -> list[Example]:
    """The first `limit` examples of each unit (language, or MT direction), in order."""
    kept, counts = [], Counter()
    for ex in examples:
        if counts[ex.unit] < limit:
            kept.append(ex)
            counts[ex.unit] += 1
    return kept


def load_for_inference(model: str, adapter: Path | None = None, device: str | None = None, dtype: str | None = None,
                       released_template: bool = False):
    """(model, tokenizer) with `adapter` merged into the weights: inference at the base model's cost."""
    m, tok = load_model_and_tokenizer(model, device, dtype, released_template)
    if adapter:
        load_adapter(m, adapter, merge=True)
    return m, tok


def predict(model, tok, examples: list[Example], max_new_tokens: int, batch_size: int,
            progress: bool = True) -> tuple[list[str], dict]:
    """Greedy outputs (decoded, stripped) and generation statistics."""
    check("predict", max_new_tokens=(max_new_tokens, count(1)), batch_size=(batch_size, count(1)))
    prompts = tok.chat_ids_batch([ex.messages() for ex in examples])
    start = time.perf_counter()
    outputs = generate(model, prompts, max_new_tokens, tok.eos_ids, tok.pad_id, batch_size, progress=progress)
    seconds = time.perf_counter() - start
    n_tokens = sum(len(o) for o in outputs)
    return [tok.decode(o).strip() for o in outputs], {
        "seconds": round(seconds, 1), "new_tokens": n_tokens, "tokens_per_s": round(n_tokens / max(seconds, 1e-9), 2),
        "batch_size": batch_size, "max_new_tokens": max_new_tokens}


def score_unit(task: Task, examples: list[Example], predictions: list[str]) -> dict:
    """The task's scores for one language (one direction for MT), with its main metric as `score`."""
    s = task.score(examples, predictions)
    return {**s, "score": s[task.metric]}


def score_units(task: Task, examples: list[Example], predictions: list[str]) -> dict[str, dict]:
    """unit (language, or MT direction) → its scores, in the order the units first appear."""
    members = {}
    for i, ex in enumerate(examples):
        members.setdefault(ex.unit, []).append(i)
    return {u: score_unit(task, [examples[i] for i in idx], [predictions[i] for i in idx]) for u, idx in members.items()}


def group_units(groups: dict[str, list[str]], units: list[str]) -> dict[str, list[str]]:
    """Language groups → the scored units in each; MT groups split by direction (X→en and en→X are
    never averaged together, as the paper's tables)."""
    out = {}
    for name, langs in groups.items():
        for suffix, keep in (("", lambda u: "-" not in u), (" →en", lambda u: u.endswith("-en")),
                             (" en→", lambda u: u.startswith("en-"))):
            members = [u for u in units if keep(u) and (set(u.split("-")) - {"en"} or {"en"}) & set(langs)]
            if members:
                out[name + suffix] = members
    return out


def group_averages(per_unit: dict[str, dict], groups: dict[str, list[str]], metric: str = "score") -> dict[str, float]:
    return {name: sum(per_unit[u][metric] for u in units) / len(units) for name, units in groups.items()}
