"""Preparing the slot experiment's training data: this tree against an earlier commit, in one run.

    python bench/prep.py --massive DIR                  # DIR: a prepared MASSIVE folder (<locale>.jsonl)
    python bench/prep.py --massive DIR --ref 6999310 --subset 2000

What `train.py --task slot --train-data <MASSIVE> --train-langs ar en es ru zh` does before its first
update: read the five locale files and turn the examples into token ids (chat template + tokenizer).
Each side runs in its own fresh process. The earlier commit (`--ref`, checked out in a temporary git
worktree) tokenizes every train and dev example, so it is timed on the first `--subset` lines of each
locale file and, for comparison, this tree on the same lines; this tree is also timed on the whole
files, once as a 16-update run prepares them (only the examples its micro-batches draw) and once
preparing every train and dev example (what a 5-epoch run ends up tokenizing). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LANGS = ["ar", "en", "es", "ru", "zh"]
LOCALES = {"ar": "ar-SA", "en": "en-US", "es": "es-ES", "ru": "ru-RU", "zh": "zh-CN"}


def child(tree: Path, files: list[Path]) -> dict:
    """Times in this process: reading + encoding as `train.py` does in `tree`."""
    sys.path.insert(0, str(tree))
    import train
    from midalign.checkpoint import resolve_model_dir
    from midalign.config import ModelConfig
    from midalign.tokenizer import ChatTokenizer

    args = train.parse_args(["--task", "slot", "--train-data", *map(str, files), "--train-langs", *LANGS, "--no-align",
                             "--max-steps", "16", "--batch-size", "4", "--grad-accum", "2"])
    loop = train if hasattr(train, "load_run_data") else __import__("midalign.training").training  # trees before/after the move
    folder = resolve_model_dir(args.model)
    loop.resolve_settings(args, ModelConfig.from_hf(folder))
    tok = ChatTokenizer(folder)
    start = time.perf_counter()
    data = loop.load_run_data(args, tok)
    out = {"examples": len(data.task) + len(data.dev_task)}
    if hasattr(data.task, "prepare"):  # this tree: tokenized on first use
        from midalign.schedule import task_batch

        data.task.prepare(sorted({i for index in range(16 * 2) for i in task_batch(len(data.task), 4, index, 0)}))
        out["run_s"] = time.perf_counter() - start
        data.task.prepare(range(len(data.task)))
        data.dev_task.prepare(range(len(data.dev_task)))
    out["all_s"] = time.perf_counter() - start
    return out


def run_child(tree: Path, files: list[Path]) -> dict:
    cmd = [sys.executable, __file__, "--child", str(tree), "--files", *map(str, files)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tree)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--massive", type=Path, help="prepared MASSIVE folder (python -m midalign.data fetch massive)")
    p.add_argument("--ref", default="6999310", help="the earlier commit to compare with")
    p.add_argument("--subset", type=int, default=2000, help="lines per locale file for the earlier commit")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--files", nargs="+", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.files)))
        return
    if args.massive is None:
        p.error("--massive is required")
    full = [args.massive / f"{LOCALES[l]}.jsonl" for l in LANGS]
    with tempfile.TemporaryDirectory() as tmp:
        subset = []
        for f in full:
            subset.append(Path(tmp) / f.name)
            subset[-1].write_text("".join(f.read_text(encoding="utf-8").splitlines(True)[:args.subset]), encoding="utf-8")
        ref = Path(tmp) / "ref"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(ref), args.ref], cwd=ROOT, check=True)
        try:
            before = run_child(ref, subset)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(ref)], cwd=ROOT, check=True)
        after = run_child(ROOT, subset)
        whole = run_child(ROOT, full)
    per = lambda r, key: 1e3 * r[key] / r["examples"]
    print(f"| what | examples (train + dev) | seconds | ms per example |\n|---|---|---|---|\n"
          f"| {args.ref}, first {args.subset} lines per locale, every example | {before['examples']:,} | "
          f"{before['all_s']:.1f} | {per(before, 'all_s'):.2f} |\n"
          f"| this tree, the same lines, every example | {after['examples']:,} | {after['all_s']:.1f} | "
          f"{per(after, 'all_s'):.2f} |\n"
          f"| this tree, whole files, a 16-update run (the examples it draws) | {whole['examples']:,} | "
          f"{whole['run_s']:.1f} | — |\n"
          f"| this tree, whole files, every example | {whole['examples']:,} | {whole['all_s']:.1f} | "
          f"{per(whole, 'all_s'):.2f} |\n\n"
          f"Per example: {per(before, 'all_s') / per(after, 'all_s'):.1f}× faster; the whole slot training data "
          f"(every example) {per(before, 'all_s') * whole['examples'] / 1e3:.0f} s by the earlier commit's rate "
          f"against {whole['all_s']:.1f} s measured; a 16-update run {whole['run_s']:.1f} s.")


if __name__ == "__main__":
    main()
