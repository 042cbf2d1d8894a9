"""The training data of a run (paper §3, §4; docs/method.md §2, §8): task examples from the four sources
(the offline UDHR text, ALMA-style MT files, MASSIVE, UNER) and alignment pairs (pair files or UDHR),
with the alignment dev pairs an experiment holds out of its own alignment data."""

from __future__ import annotations

from pathlib import Path

import torch

from midalign.data import udhr
from midalign.data.tasks import Example, Pair, Task, load_pairs, read_examples
from midalign.errors import DataError

# Alignment dev pairs held out from an experiment's alignment data, per language (the early-stopping
# dev loss is task + alignment, as in the official code): this share, at most ALIGN_DEV_MAX pairs.
ALIGN_DEV_SHARE, ALIGN_DEV_MAX = 0.1, 100


def group_pairs(pairs: list[Pair]) -> dict[str, list[Pair]]:
    out: dict[str, list[Pair]] = {}
    for pair in pairs:
        out.setdefault(pair.lang, []).append(pair)
    return out


def udhr_pairs(split: str, langs: list[str] | None) -> list[Pair]:
    return [Pair(l, s, e) for l, s, e in udhr.english_pairs(split, langs=langs)]


def task_examples(task: Task, train_files: list[Path] | None, dev_files: list[Path] | None,
                  langs: list[str] | None, direction: str = "to-en") -> tuple[list[Example], list[Example]]:
    """(train, dev) examples of `task` from its files (dev from the train files for formats that hold every
    split, unless dev files are given), or without files from the task's offline default."""
    if not train_files:
        if task.offline is None:
            raise DataError(f"--task {task.name} has no offline default: pass --train-data (or the paper's --experiment)")
        return task.offline("train", langs, direction), task.offline("dev", langs, direction)
    dev_files = dev_files or (train_files if task.splits_in_one_file else [])
    return (read_examples(task, train_files, "train", langs, direction),
            read_examples(task, dev_files, "dev", langs, direction))


def hold_out(pairs: list[Pair], seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, dev): per language, ALIGN_DEV_SHARE of the pairs (at most ALIGN_DEV_MAX, at least 1 when a
    language has 2+) drawn with a fixed seed become dev pairs; the rest stay for training."""
    train, dev = [], []
    for group in group_pairs(pairs).values():
        order = torch.randperm(len(group), generator=torch.Generator().manual_seed(seed)).tolist()
        n = min(ALIGN_DEV_MAX, max(1 if len(group) > 1 else 0, round(ALIGN_DEV_SHARE * len(group))))
        dev += [group[i] for i in order[:n]]
        train += [group[i] for i in order[n:]]
    return train, dev


def alignment_pairs(files: list[Path] | None, dev_files: list[Path] | None, langs: list[str] | None,
                    split_dev: bool = False, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """(train, dev) alignment pairs from pair files (dev held out of them with `split_dev` when no dev
    files are given), or from the UDHR train/dev articles; restricted to `langs`."""
    if files:
        train = [p for f in files for p in load_pairs(f)]
        dev = [p for f in dev_files or [] for p in load_pairs(f)]
        if split_dev and not dev:
            train, dev = hold_out(train, seed)
    else:
        train, dev = udhr_pairs("train", langs), udhr_pairs("dev", langs)
    if langs:
        train = [p for p in train if p.lang in langs]
        dev = [p for p in dev if p.lang in langs]
        missing = set(langs) - {p.lang for p in train}
        if missing:
            raise DataError(f"no alignment pairs for {', '.join(sorted(missing))}: add them to --align-data "
                            f"or drop them from --align-langs")
    if len({p.en for p in train}) < 2:
        raise DataError("alignment needs at least 2 pairs with different English sentences")
    return train, dev
