"""Task data formats and prompts (paper §3, §4, App. D.2; docs/method.md §3, §8).

Each task becomes chat examples — system prompt, user turn, answer — rendered with the model's own
chat template. Loaders validate every line and stop with `file:line: what is wrong`.

- slot: MASSIVE 1.1 JSONL (`locale`, `partition`, `utt`, `annot_utt`); answer `type: value; …` from the
  bracket annotation (`[time : five am]`), `None` without slots.
- mt:   ALMA-style JSONL `{"translation": {"de": …, "en": …}}`; or the offline UDHR text.
- json: UNER from the Aya collection: JSONL with `inputs` (instruction) and `targets` (JSON answer).
- alignment pairs: TSV `lang<TAB>sentence<TAB>english sentence`, JSONL `{"lang", "text", "en"}`, or
  Tatoeba/OPUS aligned text files (`Tatoeba.cy-en.cy` beside `Tatoeba.cy-en.en`, one sentence per line).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from midalign.data.udhr import LANGUAGE_NAMES
from midalign.errors import DataError

# The official inference script's wording (`scripts/run_inference_massive.py`; longer than App. D.2's:
# it adds the song-name example), three lines joined by newlines.
SLOT_SYSTEM = ("Given a command from the user, a voice assistant will extract entities essential for carry out "
               "the command.\nFor example, for a command about playing a specific song, the name of the song "
               "mentioned by the user would be an entity, falling under the type of \"song name\".\nYour task is "
               "to extract the entities as words from the command if they fall under a predefined list of entity types.")
MT_SYSTEM = "Translate the following sentences from {src} to {tgt}."
# Language names in MT prompts: the official `translation_lang_map` (`scripts/utils.py`) where it differs
# from the plain English name.
MT_LANGUAGE_NAMES = {**LANGUAGE_NAMES, "ar": "modern standard Arabic", "zh": "mandarin Chinese", "he": "Hebrew",
                     "el": "Greek", "da": "Danish", "hr": "Croatian", "sk": "Slovak", "sr": "Serbian",
                     "sv": "Swedish", "fa": "Farsi (Persian)", "am": "Amharic", "mn": "Mongolian", "ro": "Romanian"}
SLOT_PATTERN = re.compile(r"\[\s*([^\[\]:]+?)\s*:\s*([^\[\]]*?)\s*\]")


@dataclass(frozen=True)
class Example:
    """One supervised chat example."""
    lang: str
    system: str
    user: str
    answer: str
    annot: str = ""  # slot filling: the MASSIVE bracket annotation the F1 is computed against
    target: str = ""  # mt: the target language (BLEU tokenizer choice)

    @property
    def unit(self) -> str:
        """What a score is reported for: the direction for MT (`de-en`, `en-de`), else the language."""
        if not self.target:
            return self.lang
        return f"{self.lang}-en" if self.target == "en" else f"en-{self.target}"

    def messages(self) -> list[dict[str, str]]:
        """The prompt's chat turns: the system prompt (when the task has one) and the user turn."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + [{"role": "user", "content": self.user}]


@dataclass(frozen=True)
class Pair:
    """One alignment pair: a sentence and its English translation (paper §3)."""
    lang: str
    text: str
    en: str


def language_name(code: str) -> str:
    return MT_LANGUAGE_NAMES.get(code.split("-")[0].split("_")[0], code)


def slots_from_annotation(annot_utt: str) -> str:
    """`wake me up at [time : five am] [date : this week]` → `time: five am; date: this week` (or `None`)."""
    slots = [f"{t.strip()}: {v.strip()}" for t, v in SLOT_PATTERN.findall(annot_utt)]
    return "; ".join(slots) if slots else "None"


def _jsonl(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not any(line.strip() for line in lines):
        raise DataError(f"{path}: file is empty")
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from e
        if not isinstance(row, dict):
            raise DataError(f"{path}:{n}: expected a JSON object")
        yield n, row


def _field(path: Path, n: int, row: dict, key: str, kind=str):
    if key not in row:
        raise DataError(f"{path}:{n}: missing field '{key}'")
    if not isinstance(row[key], kind):
        raise DataError(f"{path}:{n}: field '{key}' must be {kind.__name__}")
    return row[key]


def load_massive(path: Path, partition: str | None = None, langs: list[str] | None = None) -> list[Example]:
    """MASSIVE 1.1 JSONL → slot-filling examples (locale `de-DE` → language `de`)."""
    out = []
    for n, row in _jsonl(path):
        locale = _field(path, n, row, "locale")
        lang = locale.split("-")[0]
        if partition and _field(path, n, row, "partition") != partition:
            continue
        if langs and lang not in langs:
            continue
        annot = _field(path, n, row, "annot_utt")
        if annot.count("[") != annot.count("]"):
            raise DataError(f"{path}:{n}: unbalanced brackets in annot_utt {annot!r}")
        out.append(Example(lang, SLOT_SYSTEM, _field(path, n, row, "utt"), slots_from_annotation(annot), annot))
    return out


def load_parallel_jsonl(path: Path, src: str, tgt: str) -> list[Example]:
    """ALMA-style `{"translation": {src: …, tgt: …}}` lines → translation examples src→tgt."""
    system = MT_SYSTEM.format(src=language_name(src), tgt=language_name(tgt))
    out = []
    for n, row in _jsonl(path):
        pair = _field(path, n, row, "translation", dict)
        for lang in (src, tgt):
            if not isinstance(pair.get(lang), str) or not pair[lang].strip():
                raise DataError(f"{path}:{n}: translation has no '{lang}' sentence (keys: {', '.join(pair)})")
        out.append(Example(src if tgt == "en" else tgt, system, pair[src], pair[tgt], target=tgt))
    return out


def load_uner(path: Path) -> list[Example]:
    """Aya-collection UNER JSONL (`inputs`, `targets`, optional `language`) → JSON NER examples."""
    out = []
    for n, row in _jsonl(path):
        lang = row.get("language", row.get("lang", "")) or path.stem
        out.append(Example(str(lang), "", _field(path, n, row, "inputs"), _field(path, n, row, "targets")))
    return out


def mt_examples(pairs: list[Pair], to_english: bool = True) -> list[Example]:
    """Translation examples X→English (or English→X) from alignment-style pairs."""
    out = []
    for p in pairs:
        src, tgt = (p.lang, "en") if to_english else ("en", p.lang)
        system = MT_SYSTEM.format(src=language_name(src), tgt=language_name(tgt))
        out.append(Example(p.lang, system, p.text if to_english else p.en, p.en if to_english else p.text,
                           target=tgt))
    return out


def load_aligned_text(path: Path) -> list[Pair]:
    """OPUS/Tatoeba moses files: `<name>.<xx>-en.<xx>` and its sibling `<name>.<xx>-en.en`, line by line.

    Lines where either side is empty are dropped (as the paper filtered Tatoeba)."""
    lang = path.suffix[1:]
    pair = Path(path.stem).suffix[1:]  # "cy-en"
    if set(pair.split("-")) != {lang, "en"}:
        raise DataError(f"{path}: aligned text files are named like Tatoeba.cy-en.cy (with Tatoeba.cy-en.en beside)")
    english = path.with_suffix(".en")
    if not path.is_file() or not english.is_file():
        raise DataError(f"{path}: needs both {path.name} and {english.name}")
    src = path.read_text(encoding="utf-8").split("\n")
    tgt = english.read_text(encoding="utf-8").split("\n")
    for side in (src, tgt):
        if side and side[-1] == "":
            side.pop()
    if len(src) != len(tgt):
        raise DataError(f"{path}: {len(src)} lines but {english.name} has {len(tgt)}; the files must be line-aligned")
    out = [Pair(lang, s.strip(), t.strip()) for s, t in zip(src, tgt) if s.strip() and t.strip()]
    if not out:
        raise DataError(f"{path}: no non-empty sentence pairs")
    return out


def load_pairs(path: Path) -> list[Pair]:
    """Alignment pairs from TSV (`lang<TAB>sentence<TAB>english`), JSONL (`{"lang", "text", "en"}`) or
    Tatoeba-style aligned text files."""
    if re.fullmatch(r"\.[a-z]{2,3}", path.suffix) and re.search(r"\.[a-z]{2,3}-[a-z]{2,3}$", path.stem):
        return load_aligned_text(path)
    if path.suffix == ".jsonl":
        return [Pair(_field(path, n, r, "lang"), _field(path, n, r, "text"), _field(path, n, r, "en"))
                for n, r in _jsonl(path)]
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise DataError(f"{path}:{n}: expected 3 tab-separated fields (lang, sentence, english), got {len(parts)}")
        out.append(Pair(*(p.strip() for p in parts)))
    if not out:
        raise DataError(f"{path}: file is empty")
    return out
