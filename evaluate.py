"""Generation and the paper's metrics per language (paper §4.2, Tables 2, 10, 11; docs/method.md §3, §7).

    python evaluate.py                                     # offline default: UDHR test articles X→English
    python evaluate.py --adapter runs/demo/best --out runs/eval-aligned
    python evaluate.py --task slot --data massive/1.1/data --adapter runs/slot/best \\
        --groups supervised=ar,en,es,ru,zh aligned=cy,jv,ja,sw,tl

Greedy decoding with the KV cache and left padding. Writes predictions.jsonl (every output, to inspect
any number), scores.json (per language and per group; `retrieve.py --correlate` reads it) and
table.md (a row of per-language scores and group averages, as the paper's Tables 10/11).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


from midalign.cli import add_model_arguments, add_template_argument, positive_int, run
from midalign.data.experiments import EXPERIMENTS
from midalign.data.tasks import TASKS, Example, Task, get_task
from midalign.errors import DataError
from midalign.evaluation import (first_per_unit, group_averages, group_units, load_examples, load_for_inference,
                                 predict, score_units)
from midalign.io import (PROVENANCE, atomic_write_text, check_output_folder, check_writable_folder, output_dir,
                         write_provenance)
from midalign.registry import DEFAULT_MODEL

UDHR_GROUPS = {"supervised": ["de", "es", "fr", "ru", "zh"]}  # every other language is transfer
OWN_FILES = {"predictions.jsonl", "scores.json", "table.md", PROVENANCE}  # what an evaluation writes into --out
UDHR_LIMIT, UDHR_MAX_NEW_TOKENS = 4, 128  # the offline default: the 4 shortest held-out paragraphs per language


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), default="mt", help="the task (midalign/data/tasks.py)")
    p.add_argument("--experiment", choices=sorted(EXPERIMENTS),
                   help="the paper's test sets and languages (Table 1), downloaded on first use; sets --task")
    p.add_argument("--data-dir", type=Path, help="root of downloaded datasets (default: $MIDALIGN_CACHE/datasets)")
    add_model_arguments(p, DEFAULT_MODEL)
    p.add_argument("--data", nargs="+", type=Path,
                   help="test files: MASSIVE JSONL (slot; partition 'test'), ALMA/WMT-style "
                        "<name>.<xx>-<yy>.jsonl (mt), UNER JSONL (json). Default for mt: the UDHR test articles")
    p.add_argument("--langs", nargs="+", help="languages to evaluate (default: all in the data; UDHR: all 34 X→en)")
    p.add_argument("--limit", type=positive_int, help="at most this many examples per language (MT: per direction; UDHR "
                                             "default: the 4 shortest held-out paragraphs)")
    p.add_argument("--groups", nargs="+", metavar="NAME=l1,l2",
                   help="language groups to average (default UDHR: supervised=de,es,fr,ru,zh; the rest 'transfer')")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="prompts decoded together (32: the fastest per answer measured on a 2-core CPU)")
    p.add_argument("--max-new-tokens", type=positive_int, help="default: slot 128, mt 512 (UDHR 128), json 512")
    p.add_argument("--mt-test", choices=["wmt23", "wmt23-hub"], default="wmt23",
                   help="--experiment mt: the WMT23 release (no cs→en, is↔en) or the official evaluation's hub copy")
    add_template_argument(p)
    p.add_argument("--comet-python", type=Path,
                   help="python of a separate environment with unbabel-comet, for COMET-22 (mt)")
    p.add_argument("--out", type=Path, default=Path("runs/eval"), help="output folder (written whole, atomically)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier evaluation in --out (never anything else, never an input)")
    return p.parse_args(argv)


def test_examples(args, task: Task) -> list[Example]:
    """--data's test examples (MT: each file in its own direction), else the task's offline default
    (UDHR: the --limit shortest held-out paragraphs, UDHR_LIMIT by default)."""
    if args.data:
        # an experiment's languages may lack a test set in the chosen copy (said when its files were chosen)
        examples = load_examples(task, args.data, None if args.experiment else args.langs, args.limit)
        return [ex for ex in examples if not args.langs or ex.lang in args.langs]
    if task.offline is None:
        raise DataError(f"--task {task.name} needs --data (see --help for the formats)")
    return first_per_unit(task.offline("test", args.langs, None), args.limit or UDHR_LIMIT)


def comet_scores(examples: list[Example], predictions: list[str], python: Path | None) -> list[float] | None:
    """COMET-22 segment scores: importable `comet`, or a separate environment's python; else None."""
    data = [{"src": ex.user, "mt": p, "ref": ex.answer} for ex, p in zip(examples, predictions)]
    script = ("import json,sys\nfrom comet import download_model,load_from_checkpoint\n"
              "m=load_from_checkpoint(download_model('Unbabel/wmt22-comet-da'))\n"
              "d=json.load(open(sys.argv[1]))\nprint(json.dumps(m.predict(d,batch_size=16,gpus=0).scores))\n")
    if python is None:
        try:
            import comet  # noqa: F401
        except ImportError:
            return None
        python = Path(sys.executable)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(data, f)
    run = subprocess.run([str(python), "-c", script, f.name], capture_output=True, text=True)
    Path(f.name).unlink()
    if run.returncode != 0:
        raise RuntimeError(f"COMET failed in {python}: {run.stderr.strip()[-500:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def check_comet(python: Path) -> None:
    """--comet-python imports unbabel-comet (checked before generating, not after)."""
    try:
        done = subprocess.run([str(python), "-c", "import comet"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"--comet-python {python}: cannot run it ({e})") from e
    if done.returncode != 0:
        raise DataError(f"--comet-python {python}: cannot import comet ({done.stderr.strip().splitlines()[-1:]}); "
                        f"pip install unbabel-comet in that environment")


def markdown_table(per_unit: dict[str, dict], groups: dict[str, float], metric: str, label: str) -> str:
    units = list(per_unit)
    head = "| model | " + " | ".join(units) + " | " + " | ".join(groups) + " |"
    sep = "|---" * (1 + len(units) + len(groups)) + "|"
    row = f"| {label} | " + " | ".join(f"{per_unit[u][metric]:.1f}" for u in units) + " | " + \
          " | ".join(f"{v:.1f}" for v in groups.values()) + " |"
    return "\n".join([head, sep, row]) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    experiment = EXPERIMENTS.get(args.experiment)
    if experiment:
        args.task = experiment.task
        args.data = args.data or experiment.test_files(args.data_dir, args.mt_test)
        args.langs = args.langs or experiment.test_langs
    task = get_task(args.task)
    examples = test_examples(args, task)
    if not examples:
        raise DataError(f"no test examples for --langs {' '.join(args.langs or [])} in "
                        f"{', '.join(map(str, args.data or ['the offline data']))}: check the language codes")
    langs = list(dict.fromkeys(ex.lang for ex in examples))
    units = list(dict.fromkeys(ex.unit for ex in examples))
    if args.groups:
        groups = {}
        for spec in args.groups:
            name, _, members = spec.partition("=")
            if not members:
                raise DataError(f"--groups {spec}: expected NAME=l1,l2")
            unknown = [l for l in members.split(",") if l not in langs]
            if unknown:
                raise DataError(f"--groups {spec}: {', '.join(unknown)} not among the evaluated languages "
                                f"({', '.join(langs)})")
            groups[name] = members.split(",")
    elif experiment:
        seen = set(experiment.train_langs) | set(experiment.align_langs)
        groups = {"supervised": experiment.train_langs, "aligned": experiment.align_langs,
                  "transfer": [l for l in langs if l not in seen]}
        groups = {name: members for name, members in groups.items() if set(members) & set(langs)}
    elif not args.data:
        groups = {**UDHR_GROUPS, "transfer": [l for l in langs if l not in UDHR_GROUPS["supervised"]]}
    else:
        groups = {}
    groups = group_units(groups, units)
    max_new = args.max_new_tokens or (task.max_new_tokens if args.data else UDHR_MAX_NEW_TOKENS)
    check_output_folder(args.out, [a for a in (args.adapter, *(args.data or [])) if a], OWN_FILES.__contains__,
                        args.overwrite)
    check_writable_folder(args.out)  # what can fail cheaply fails before the generation
    if task.comet and args.comet_python:
        check_comet(args.comet_python)

    model, tok = load_for_inference(args.model, args.adapter, args.device, args.dtype, args.no_default_template)
    predictions, generation = predict(model, tok, examples, max_new, args.batch_size)
    per_unit = score_units(task, examples, predictions)
    metric = task.metric
    if task.comet:
        comet = comet_scores(examples, predictions, args.comet_python)
        for unit in units:
            idx = [i for i, ex in enumerate(examples) if ex.unit == unit]
            per_unit[unit]["comet"] = (100 * sum(comet[i] for i in idx) / len(idx)) if comet else "skipped"
            if "tok:13a" in per_unit[unit]["bleu_signature"] and unit.endswith("-ja"):
                print(f"note: {unit} BLEU fell back to the 13a tokenizer (ja-mecab not installed)", file=sys.stderr)
        if comet is None:
            print("note: COMET-22 skipped (unbabel-comet not importable; pass --comet-python PATH)", file=sys.stderr)
    averages = group_averages(per_unit, groups)
    label = f"{args.model}" + (f" + {args.adapter}" if args.adapter else "")
    scores = {"task": args.task, "model": args.model, "adapter": str(args.adapter) if args.adapter else None,
              "metric": metric, "n_examples": len(examples), "per_language": per_unit, "groups": averages,
              "group_members": groups, "generation": generation}
    table = markdown_table(per_unit, averages, metric, label)
    with output_dir(args.out) as tmp:  # the whole folder at once: no earlier evaluation's file stays beside it
        atomic_write_text(tmp / "predictions.jsonl", "".join(
            json.dumps({"lang": ex.lang, "unit": ex.unit, "input": ex.user, "reference": ex.answer, "prediction": p},
                       ensure_ascii=False) + "\n"
            for ex, p in zip(examples, predictions)))
        atomic_write_text(tmp / "scores.json", json.dumps(scores, indent=1, ensure_ascii=False))
        atomic_write_text(tmp / "table.md", table)
        write_provenance(tmp, model=args.model, adapter=args.adapter, task=args.task, data=args.data,
                         langs=langs, dtype=args.dtype, batch_size=args.batch_size, max_new_tokens=max_new)
    print(table)
    for unit, s in per_unit.items():
        print(f"{unit}: {task.summary(s)}")
    print(f"{len(examples)} examples, {generation['new_tokens']} new tokens in {generation['seconds']:.0f} s "
          f"({generation['tokens_per_s']:.1f} tokens/s, batch {args.batch_size}); wrote {args.out}/scores.json, "
          f"predictions.jsonl, table.md")


if __name__ == "__main__":
    run(main)
