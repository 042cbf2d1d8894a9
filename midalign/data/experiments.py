"""The paper's three experiments (Table 1; docs/method.md §8) as data files, fetched on first use.

`train.py --experiment slot|mt|json` and `evaluate.py --experiment …` read their languages and files
from here; `python train.py` without an experiment keeps the offline UDHR default.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from midalign.data.sources import ensure, fetch_together
from midalign.errors import DataError


@dataclass(frozen=True)
class Experiment:
    """One of the paper's setups: its task (a name in midalign.data.tasks.TASKS), languages, and where its
    files come from. `sources(experiment, data_dir, task, align)` gives (task train files, task dev files,
    alignment pair files), fetching only what is asked for; `tests(experiment, data_dir, mt_test)` the
    test files; `train_files(…)` and `test_files(…)` call them with the experiment itself."""
    task: str  # train.py --task
    train_langs: list[str]
    test_langs: list[str]  # supervised languages first, then the transfer languages
    align_langs: list[str]
    sources: Callable[["Experiment", Path | None, bool, bool], tuple[list[Path], list[Path], list[Path]]]
    tests: Callable[["Experiment", Path | None, str], list[Path]]
    mt_direction: str = "to-en"

    def train_files(self, data_dir: Path | None, task: bool = True, align: bool = True
                    ) -> tuple[list[Path], list[Path], list[Path]]:
        """(task train files, task dev files, alignment pair files); only what is asked for is fetched."""
        return self.sources(self, data_dir, task, align)

    def test_files(self, data_dir: Path | None, mt_test: str = "wmt23") -> list[Path]:
        return self.tests(self, data_dir, mt_test)


def slot_sources(exp: Experiment, data_dir, task: bool, align: bool):
    """MASSIVE locale files (train and dev partitions in the same files); Tatoeba pairs."""
    files, pairs = fetch_together(lambda: _massive(data_dir, exp.train_langs) if task else [],
                                  lambda: _tatoeba(data_dir, exp.align_langs) if align else [])
    return files, files, pairs


def mt_sources(exp: Experiment, data_dir, task: bool, align: bool):
    """ALMA train/valid per language; the MT experiment aligns on its own training pairs."""
    if not (task or align):
        return [], [], []
    alma = ensure("alma", data_dir, exp.train_langs)
    train = [f / f"train.{l}-en.jsonl" for f, l in zip(alma, exp.train_langs)] if task else []
    dev = [f / f"valid.{l}-en.jsonl" for f, l in zip(alma, exp.train_langs)] if task else []
    return train, dev, [f / "pairs.tsv" for f in alma] if align else []


def json_sources(exp: Experiment, data_dir, task: bool, align: bool):
    """UNER train/validation files per language; Tatoeba pairs."""
    uner, pairs = fetch_together(lambda: ensure("uner", data_dir)[0] if task else None,
                                 lambda: _tatoeba(data_dir, exp.align_langs) if align else [])
    if uner is None:
        return [], [], pairs
    return (_existing([uner / f"train.{l}.jsonl" for l in exp.train_langs]),
            _existing([uner / f"validation.{l}.jsonl" for l in exp.train_langs]), pairs)


def slot_tests(exp: Experiment, data_dir, mt_test: str) -> list[Path]:
    return _massive(data_dir, exp.test_langs)


def json_tests(exp: Experiment, data_dir, mt_test: str) -> list[Path]:
    return _existing([ensure("uner", data_dir)[0] / f"test.{l}.jsonl" for l in exp.test_langs])


def mt_tests(exp: Experiment, data_dir, mt_test: str) -> list[Path]:
    """Every X↔English direction of the test languages that `mt_test` holds."""
    wmt = ensure(mt_test, data_dir)[0]
    files = sorted(f for f in wmt.glob("test.*.jsonl") if set(f.name.split(".")[1].split("-")) - {"en"} <= set(exp.test_langs))
    missing = sorted({d for l in exp.test_langs for d in (f"{l}-en", f"en-{l}")} - {f.name.split(".")[1] for f in files})
    if missing:
        print(f"[data] {mt_test} has no {', '.join(missing)}: not evaluated (the official evaluation read "
              f"them from the hub copy: --mt-test wmt23-hub)", file=sys.stderr)
    return files


def _existing(paths: list[Path]) -> list[Path]:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"the prepared data lacks {', '.join(map(str, missing))}; delete {missing[0].parent} "
                        f"to fetch it again")
    return paths


def _massive(data_dir: Path | None, langs: list[str]) -> list[Path]:
    unknown = [l for l in langs if l not in MASSIVE_LOCALES]
    if unknown:
        raise DataError(f"no MASSIVE locale chosen for {', '.join(unknown)}; known: {', '.join(MASSIVE_LOCALES)}")
    folder = ensure("massive", data_dir)[0]
    return _existing([folder / f"{MASSIVE_LOCALES[l]}.jsonl" for l in langs])


def _tatoeba(data_dir: Path | None, langs: list[str]) -> list[Path]:
    return [f / f"{l}-en.tsv" for f, l in zip(ensure("tatoeba", data_dir, langs), langs)]


# MASSIVE locale of each language the paper uses (zh: Simplified, not zh-TW).
MASSIVE_LOCALES = {"ar": "ar-SA", "en": "en-US", "es": "es-ES", "ru": "ru-RU", "zh": "zh-CN", "af": "af-ZA",
                   "az": "az-AZ", "cy": "cy-GB", "de": "de-DE", "el": "el-GR", "fr": "fr-FR", "hi": "hi-IN",
                   "is": "is-IS", "ja": "ja-JP", "jv": "jv-ID", "sw": "sw-KE", "th": "th-TH", "tl": "tl-PH",
                   "tr": "tr-TR", "ur": "ur-PK"}
EXPERIMENTS = {
    "slot": Experiment("slot", ["ar", "en", "es", "ru", "zh"],
                       ["ar", "en", "es", "ru", "zh", "af", "az", "cy", "de", "el", "fr", "hi", "is", "ja", "jv",
                        "sw", "th", "tl", "tr", "ur"], ["cy", "jv", "ja", "sw", "tl"], slot_sources, slot_tests),
    "mt": Experiment("mt", ["cs", "de", "is", "ru", "zh"], ["cs", "de", "is", "ru", "zh", "he", "ja", "uk"],
                     ["cs", "de", "is", "ru", "zh"], mt_sources, mt_tests, mt_direction="both"),
    "json": Experiment("json", ["en", "pt", "zh"], ["en", "pt", "zh", "da", "hr", "sk", "sr", "sv"], ["da", "sv"],
                       json_sources, json_tests),
}
