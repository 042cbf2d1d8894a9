"""The task weight of a merge, chosen on dev data (paper §6.3, Table 6: 0.9 among 0.5, 0.7, 0.9).

A task adapter and an alignment adapter are merged with weights (w, 1 - w) for each candidate w; each
merged model decodes the dev examples and is scored with the task's metric (mean over languages); the
best w is kept. The merged weights are folded into the model for decoding and taken out again, so the
base model is loaded once for all candidates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from midalign.adapters import Adapter, load_adapter_weights, merge_adapters, save_adapter
from midalign.data.tasks import Example, Task
from midalign.evaluation import predict, score_units
from midalign.io import atomic_write_text
from midalign.lora import apply_lora, lora_modules, merge_lora, unmerge_lora


def search_weight(model, tok, adapters: Sequence[Adapter], weights: Sequence[float], method: str, task: Task,
                  examples: list[Example], max_new_tokens: int, batch_size: int) -> tuple[Adapter, dict]:
    """(the best merged adapter, the search record: method, task, best weight, and per weight its dev scores and
    its predictions, in the order of `examples`, so that the choice can be re-scored from the record)."""
    task_adapter, align_adapter = adapters
    results, best = {}, None
    for w in weights:
        merged = merge_adapters([task_adapter, align_adapter], [w, 1 - w], method)
        if not lora_modules(model):
            apply_lora(model, merged.config)
        load_adapter_weights(model, merged, where=f"merge with weights {w}, {1 - w:g}")
        merge_lora(model)  # inference at the base model's cost
        predictions, _ = predict(model, tok, examples, max_new_tokens, batch_size)
        unmerge_lora(model)
        per_unit = score_units(task, examples, predictions)
        score = sum(s["score"] for s in per_unit.values()) / len(per_unit)
        results[f"{w:g}"] = {"score": score, "per_language": {u: s["score"] for u, s in per_unit.items()},
                             "predictions": predictions}
        print(f"task weight {w:g}: dev score {score:.2f} (mean over {len(per_unit)} languages)")
        if best is None or score > best[0]:
            best = (score, w, merged)
    _, w, merged = best
    return merged, {"method": method, "task": task.name, "best_weight": w, "weights": results}


def save_search(out: Path, merged: Adapter, record: dict) -> None:
    """The chosen merged adapter and search.json (every weight's scores and predictions) in `out`."""
    save_adapter(merged, out)
    atomic_write_text(out / "search.json", json.dumps(record, indent=1))
