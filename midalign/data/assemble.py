"""The training data of a run (paper §3, §4; docs/method.md §2, §8): task examples from the four sources
(the offline UDHR text, ALMA-style MT files, MASSIVE, UNER) and alignment pairs (pair files or UDHR),
with the alignment dev pairs an experiment holds out of its own alignment data."""

from __future__ import annotations

from pathlib import Path

import torch

from midalign.data import udhr
from midalign.data.tasks import Example, Pair, load_massive, load_pairs, load_parallel_jsonl, load_uner, mt_examples
from midalign.errors import DataError

UDHR_TASK_LANGS = ["de", "es", "fr", "ru", "zh"]  # the offline default's (UDHR MT) task languages
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


def mt_from_pairs(pairs: list[Pair], direction: str) -> list[Example]:
    """Translation examples X→English (`to-en`), English→X (`from-en`) or both."""
    out = []
    if direction in ("to-en", "both"):
        out += mt_examples(pairs, to_english=True)
    if direction in ("from-en", "both"):
        out += mt_examples(pairs, to_english=False)
    return out


def jsonl_files(paths: list[Path]) -> list[Path]:
    """Files as given; a folder stands for its *.jsonl files."""
    out = []
    for path in paths:
        out += sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    return out


def _parallel_file(path: Path, direction: str) -> list[Example]:
    """ALMA-style files are named like train.de-en.json(l); the pair comes from the name."""
    pair = path.name.split(".")[-2] if path.name.count(".") >= 2 else ""
    if "-" not in pair:
        raise DataError(f"{path}: cannot tell the language pair; name the file like train.de-en.jsonl")
    src, tgt = pair.split("-", 1)
    x = src if tgt == "en" else tgt
    out = []
    if direction in ("to-en", "both"):
        out += load_parallel_jsonl(path, x, "en")
    if direction in ("from-en", "both"):
        out += load_parallel_jsonl(path, "en", x)
    return out


def task_examples(task: str, train_files: list[Path] | None, dev_files: list[Path] | None,
                  langs: list[str] | None, direction: str = "to-en") -> tuple[list[Example], list[Example]]:
    """(train, dev) examples of `task`; mt without files: the offline UDHR train/dev articles.
    slot: the files' `train` and `dev` partitions (dev from the train files unless dev files are given)."""
    if task == "none":
        return [], []
    if task == "mt":
        if not train_files:
            langs = langs or UDHR_TASK_LANGS
            return (mt_from_pairs(udhr_pairs("train", langs), direction),
                    mt_from_pairs(udhr_pairs("dev", langs), direction))
        load = lambda fs: [ex for f in jsonl_files(fs) for ex in _parallel_file(f, direction)]
        return load(train_files), load(dev_files or [])
    if task == "slot":
        train = [ex for f in jsonl_files(train_files) for ex in load_massive(f, "train", langs)]
        dev = [ex for f in jsonl_files(dev_files or train_files) for ex in load_massive(f, "dev", langs)]
        return train, dev
    return ([ex for f in jsonl_files(train_files) for ex in load_uner(f)],
            [ex for f in jsonl_files(dev_files or []) for ex in load_uner(f)])


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


def encode_pairs(tok, pairs: list[Pair], max_length: int) -> tuple[list[list[int]], list[list[int]]]:
    """Raw sentences with the tokenizer's default special tokens (no chat template), cut to max_length."""
    cut = lambda texts: [ids[:max_length] for ids in tok.encode_batch(texts)]
    return cut([p.text for p in pairs]), cut([p.en for p in pairs])
