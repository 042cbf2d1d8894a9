"""What the studies share: result files stamped with their design, and the command line around them."""

from __future__ import annotations

import argparse
import json
import multiprocessing
from pathlib import Path

from midalign.cli import run
from midalign.errors import MidalignError
from midalign.registry import DEFAULT_MODEL
from midalign.training import TrainSettings, fit

ROOT = Path(__file__).resolve().parent.parent


def fit_quietly(settings: TrainSettings) -> None:
    """fit() ending as a script does: an error or Ctrl-C in one line (a checkpoint already written stays)."""
    run(lambda: fit(settings))


def fit_apart(settings: TrainSettings) -> Path:
    """`fit(settings)` in a child process, so that the decoding after it runs in a process that never
    trained. Measured on the slot study's test decoding, first 3 batches: right after training in the same
    process (13 GB still resident) 2.4× (SFT seed 0: 114 vs 47 s) and 2.2× (joint seed 0: 166 vs 74 s) as
    long as in a fresh process."""
    child = multiprocessing.get_context("spawn").Process(target=fit_quietly, args=(settings,))
    child.start()
    child.join()
    if child.exitcode:
        raise MidalignError(f"training {settings.out} stopped (exit code {child.exitcode}; its error is printed above); "
                            "run the study again to resume it")
    return settings.out / "best"


def read_result(path: Path, design: str) -> dict | None:
    """A run's result file, or None when it is not there; one made under another design is an error."""
    if not path.is_file():
        return None
    result = json.loads(path.read_text(encoding="utf-8"))
    if result.get("design") != design:
        raise MidalignError(f"{path} was made under another design ({result.get('design')}, this one is "
                            f"{design}): results of one design never replace another's; pass --results DIR, a new "
                            f"folder, to run this design beside them")
    return result


def curves(log: Path) -> dict:
    """A training run's loss curves and time per update, from its log.jsonl (empty when there is none)."""
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    return {"dev_curve": [{k: r[k] for k in ("step", "dev_loss", "dev_task_loss", "dev_align_loss") if k in r}
                          for r in records if r.get("eval")],
            "train_curve": [{k: r[k] for k in ("step", "task_loss", "align_loss", "elapsed_s", "grad_norm",
                                               "task_grad_norm", "align_grad_norm") if k in r}
                            for r in records if not r.get("eval") and "step" in r]}


def training_seconds(curve: list[dict]) -> float:
    """A run's training time from its stored curve. Before the training clock went on across a resume
    (2026-12-02), a resumed run's `elapsed_s` restarted from 0: each such restart adds the time before it."""
    total = last = 0.0
    for r in curve:
        if r.get("elapsed_s", last) < last:
            total += last
        last = r.get("elapsed_s", last)
    return total + last


def check_report_only(args) -> None:
    """--report-only rewrites the report from --results alone: a folder that is not there (a typo) is an
    error, never a report that says nothing was run."""
    if args.report_only and not any(Path(args.results).glob("*.json")):
        raise MidalignError(f"--results {args.results}: no result files there; --report-only would write a report of "
                            f"nothing over {args.report}. Check the path")


def study_parser(doc: str, stages: tuple[str, ...], name: str, results: Path) -> argparse.ArgumentParser:
    """The options every study has; a study adds its data sources."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", nargs="+", choices=stages, default=list(stages))
    p.add_argument("--quick", action="store_true", help="every stage at toy size (needs --model, e.g. a tiny model)")
    p.add_argument("--model", help=f"model (default {DEFAULT_MODEL})")
    p.add_argument("--results", type=Path, default=results, help="result files (committed)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / name, help="adapters and raw outputs (not committed)")
    p.add_argument("--report", type=Path, default=ROOT / "docs" / f"{name}.md")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from the result files")
    p.add_argument("--data-dir", type=Path, help="root of prepared datasets (default: $MIDALIGN_CACHE/datasets)")
    return p
