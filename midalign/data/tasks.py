"""Tasks: their data formats, prompts and scorers, each task one `Task` record in `TASKS` (paper §3, §4,
App. D.2; docs/method.md §3, §7, §8). train.py, evaluate.py and merge.py take everything task-specific
from the record, so a new task (say XNLI) is one entry here: a reader and a scorer. (The slot study reads
and scores MASSIVE itself, through `load_massive` and the metrics, to store every item it decodes.)

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
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from midalign.data import udhr
from midalign.data.udhr import LANGUAGE_NAMES
from midalign.errors import DataError
from midalign.metrics import json_f1, mt_scores, slot_f1

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
PARTITIONS = ("train", "dev", "test")  # MASSIVE's `partition` values
REGIONAL_LOCALES = {"zh-TW"}  # MASSIVE locales whose language another locale has too (zh-CN)


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


def read_text(path: Path) -> str:
    """A data file's text; bytes that are not UTF-8 are an error naming the file, line and byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r}); convert the "
                        f"file to UTF-8, e.g. iconv -f latin1 -t utf-8") from e


def _jsonl(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    lines = read_text(path).splitlines()
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


def massive_language(locale: str) -> str:
    """The language code of a MASSIVE locale: `de-DE` → `de`; zh-TW keeps its region (MASSIVE has two
    Chinese locales: the paper's `zh` is zh-CN), so the two never pool into one language."""
    return locale if locale in REGIONAL_LOCALES else locale.split("-")[0]


def check_annotation(path: Path, n: int, annot: str) -> None:
    """Every bracket of `annot_utt` belongs to a `[type : value]` span, the only spelling the scorer reads
    (an unreadable span would score even the right answer F1 0)."""
    rest = SLOT_PATTERN.sub("", annot)
    if "[" in rest or "]" in rest:
        raise DataError(f"{path}:{n}: annot_utt {annot!r} has brackets that are not MASSIVE's `[type : value]` "
                        f"spans (unbalanced, nested or without ' : ')")


def load_massive(path: Path, partition: str | None = None, langs: list[str] | None = None) -> list[Example]:
    """MASSIVE 1.1 JSONL → slot-filling examples (locale `de-DE` → language `de`, see `massive_language`).

    Every record is checked, whatever partition is read (fields, partition name, annotation spelling);
    a kept record whose utterance is empty is skipped and counted on stderr."""
    out, empty = [], 0
    for n, row in _jsonl(path):
        lang = massive_language(_field(path, n, row, "locale"))
        part = _field(path, n, row, "partition")
        if part not in PARTITIONS:
            raise DataError(f"{path}:{n}: partition {part!r} is not one of {', '.join(PARTITIONS)}")
        annot, utt = _field(path, n, row, "annot_utt"), _field(path, n, row, "utt")
        check_annotation(path, n, annot)
        if partition and part != partition or langs and lang not in langs:
            continue
        if not utt.strip():
            empty += 1
            continue
        out.append(Example(lang, SLOT_SYSTEM, utt, slots_from_annotation(annot), annot))
    if empty:
        print(f"[data] {path}: {empty} record(s) with an empty utterance skipped", file=sys.stderr)
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
    src = read_text(path).split("\n")
    tgt = read_text(english).split("\n")
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
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise DataError(f"{path}:{n}: expected 3 tab-separated fields (lang, sentence, english), got {len(parts)}")
        empty = [name for name, p in zip(("lang", "sentence", "english"), parts) if not p.strip()]
        if empty:
            raise DataError(f"{path}:{n}: field {', '.join(empty)} is empty (fields: lang, sentence, english)")
        out.append(Pair(*(p.strip() for p in parts)))
    if not out:
        raise DataError(f"{path}: file is empty")
    return out


# ------------------------------------------------------------------------------------ the task record

@dataclass(frozen=True)
class Task:
    """What midalign knows of a task: how to read its files, how to score a prediction, how long an answer
    may be. `read(file, split, direction)` returns the file's examples of `split` ('train', 'dev' or
    'test'; a format whose files hold one split ignores it) — for translation, in `direction` (to-en,
    from-en, both) or, with None, the file's own. `score(examples, predictions)` returns the scores of one
    unit (a language, or an MT direction) in percent, `metric` among them. `offline(split, langs,
    direction)` gives examples when no file is given (the UDHR text for MT)."""
    name: str
    read: Callable[[Path, str, str | None], list[Example]]
    score: Callable[[list[Example], list[str]], dict]
    metric: str
    max_new_tokens: int  # the paper's generation limit
    splits_in_one_file: bool = False  # dev examples come from the train files when no dev file is given
    offline: Callable[[str, list[str] | None, str | None], list[Example]] | None = None
    comet: bool = False  # COMET-22 beside the metric, when unbabel-comet is available
    describe: Callable[[dict], str] | None = None  # one unit's scores as a line (default: the metric)

    def summary(self, scores: dict) -> str:
        return self.describe(scores) if self.describe else f"{self.metric} {scores[self.metric]:.1f}"


def read_parallel(path: Path, split: str, direction: str | None) -> list[Example]:
    """ALMA/WMT-style files named like `train.de-en.jsonl`: the pair comes from the name; examples in
    `direction` (to-en, from-en, both), or with None in the file's own direction."""
    pair = path.name.split(".")[-2] if path.name.count(".") >= 2 else ""
    if "-" not in pair:
        raise DataError(f"{path}: cannot tell the language pair; name the file like {split}.de-en.jsonl")
    src, tgt = pair.split("-", 1)
    if direction is None:
        return load_parallel_jsonl(path, src, tgt)
    x = src if tgt == "en" else tgt
    return ((load_parallel_jsonl(path, x, "en") if direction in ("to-en", "both") else []) +
            (load_parallel_jsonl(path, "en", x) if direction in ("from-en", "both") else []))


UDHR_TASK_LANGS = ["de", "es", "fr", "ru", "zh"]  # the offline default's (UDHR MT) task languages


def udhr_mt(split: str, langs: list[str] | None, direction: str | None) -> list[Example]:
    """Translation examples from the UDHR articles of `split` (the offline default task)."""
    if split == "test":  # held-out rows shared by every language (all versions by default), shortest first
        langs = langs or [l for l in udhr.DEFAULT_VERSIONS if l != "en"]
        rows = sorted(udhr.parallel_rows(["en", *langs], "test"), key=lambda r: len(r["en"]))
        pairs = [Pair(l, r[l], r["en"]) for l in langs for r in rows]
    else:
        pairs = [Pair(l, s, e) for l, s, e in udhr.english_pairs(split, langs=langs or UDHR_TASK_LANGS)]
    direction = direction or "to-en"
    return ((mt_examples(pairs, to_english=True) if direction in ("to-en", "both") else []) +
            (mt_examples(pairs, to_english=False) if direction in ("from-en", "both") else []))


def percent(scores: dict, *keys: str) -> dict:
    return {**scores, **{k: 100 * scores[k] for k in keys}}


TASKS = {t.name: t for t in [
    Task("slot", read=lambda path, split, direction: load_massive(path, split),
         score=lambda exs, preds: percent(slot_f1([e.user for e in exs], [e.annot for e in exs], preds, exs[0].lang), "f1"),
         metric="f1", max_new_tokens=128, splits_in_one_file=True),
    Task("mt", read=read_parallel,
         score=lambda exs, preds: mt_scores(preds, [e.answer for e in exs], exs[0].target),
         metric="bleu", max_new_tokens=512, offline=udhr_mt, comet=True,
         describe=lambda s: f"BLEU {s['bleu']:.1f} ({s['bleu_signature']}), chrF {s['chrf']:.1f}"),
    Task("json", read=lambda path, split, direction: load_uner(path),
         score=lambda exs, preds: percent(json_f1([e.answer for e in exs], preds), "f1"),
         metric="f1", max_new_tokens=512),
]}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise DataError(f"unknown task '{name}': choose from {', '.join(TASKS)}")
    return TASKS[name]


def read_examples(task: Task, paths: list[Path], split: str, langs: list[str] | None = None,
                  direction: str | None = None) -> list[Example]:
    """The examples of `split` in the task's files (a folder stands for its *.jsonl), kept to `langs`."""
    files = [f for path in paths for f in (sorted(path.glob("*.jsonl")) if path.is_dir() else [path])]
    return [ex for f in files for ex in task.read(f, split, direction) if not langs or ex.lang in langs]
