"""Task metrics (paper §4.2; REFERENCE.md §7).

- Slot F1 as the official MASSIVE script computes it: gold BIO tags from the `annot_utt` brackets;
  the prediction `type: value; type: value` is split on "; " then ": " (parts that do not split into
  exactly two are ignored); each value's tokens are located case-insensitively in the utterance's
  tokens and tagged with the type (values not found are dropped; a repeated value takes its first
  still-untagged occurrence); tags → spans → micro F1 (seqeval-style). ja/zh are split into characters.
- MT: sacreBLEU corpus BLEU (13a; `zh` for Chinese; `ja-mecab` for Japanese when installed) and chrF.
- JSON NER: the generated JSON parsed back to (type, text) tuples; invalid JSON counts as no entities.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from dataclasses import dataclass

CHAR_SPLIT_LANGS = ("ja", "zh")
_BRACKET = re.compile(r"\[\s*([^\[\]:]+?)\s*:\s*([^\[\]]*?)\s*\]|([^\[\]]+)")


def tokens(text: str, lang: str) -> list[str]:
    """Whitespace tokens; for ja/zh every non-space character is a token."""
    if lang.split("-")[0] in CHAR_SPLIT_LANGS:
        return [c for c in text if not c.isspace()]
    return text.split()


def gold_tags(annot_utt: str, lang: str) -> tuple[list[str], list[str]]:
    """(utterance tokens, BIO tags) from a MASSIVE bracket annotation."""
    toks, tags = [], []
    for slot_type, value, plain in _BRACKET.findall(annot_utt):
        if plain:
            t = tokens(plain, lang)
            toks += t
            tags += ["O"] * len(t)
        else:
            t = tokens(value, lang)
            toks += t
            tags += [f"B-{slot_type}"] + [f"I-{slot_type}"] * (len(t) - 1)
    return toks, tags


def parse_slots(prediction: str) -> list[tuple[str, str]]:
    """`time: five am; date: this week` → [(time, five am), (date, this week)]; malformed parts ignored."""
    out = []
    for part in prediction.strip().split("; "):
        pieces = part.split(": ")
        if len(pieces) == 2 and pieces[0].strip() and pieces[1].strip():
            out.append((pieces[0].strip(), pieces[1].strip()))
    return out


def predicted_tags(utt_tokens: list[str], slots: list[tuple[str, str]], lang: str) -> list[str]:
    """Tag each predicted value at its first untagged case-insensitive occurrence in the utterance."""
    tags = ["O"] * len(utt_tokens)
    lower = [t.lower() for t in utt_tokens]
    for slot_type, value in slots:
        v = [t.lower() for t in tokens(value, lang)]
        for start in range(len(lower) - len(v) + 1):
            if v and lower[start:start + len(v)] == v and all(t == "O" for t in tags[start:start + len(v)]):
                tags[start:start + len(v)] = [f"B-{slot_type}"] + [f"I-{slot_type}"] * (len(v) - 1)
                break
    return tags


def spans(tags: list[str]) -> set[tuple[int, int, str]]:
    """(start, end, type) chunks of a BIO sequence (an I- that does not continue a chunk starts one)."""
    out, start, kind = set(), None, None
    for i, tag in enumerate(tags + ["O"]):
        prefix, _, t = tag.partition("-")
        if start is not None and (prefix != "I" or t != kind):
            out.add((start, i, kind))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, kind = i, t
    return out


@dataclass
class F1:
    tp: int = 0
    n_pred: int = 0
    n_gold: int = 0

    def add(self, pred: set | Counter, gold: set | Counter) -> None:
        if isinstance(pred, Counter):
            self.tp += sum((pred & gold).values())
            self.n_pred += sum(pred.values())
            self.n_gold += sum(gold.values())
        else:
            self.tp += len(pred & gold)
            self.n_pred += len(pred)
            self.n_gold += len(gold)

    @property
    def score(self) -> dict[str, float]:
        p = self.tp / self.n_pred if self.n_pred else 0.0
        r = self.tp / self.n_gold if self.n_gold else 0.0
        return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def slot_f1(annot_utts: list[str], predictions: list[str], lang: str) -> dict[str, float]:
    """Span-level micro F1 of predicted slot strings against MASSIVE annotations (one language)."""
    f1 = F1()
    for annot, pred in zip(annot_utts, predictions, strict=True):
        utt, gold = gold_tags(annot, lang)
        f1.add(spans(predicted_tags(utt, parse_slots(pred), lang)), spans(gold))
    return f1.score


def bleu_tokenizer(target_lang: str) -> str:
    """sacreBLEU tokenizer by target language: zh → 'zh', ja → 'ja-mecab' (if installed), else '13a'."""
    lang = target_lang.split("-")[0]
    if lang == "zh":
        return "zh"
    if lang == "ja":
        try:
            import ipadic  # noqa: F401  (sacrebleu's ja-mecab needs mecab-python3 + ipadic)
            import MeCab  # noqa: F401
            return "ja-mecab"
        except ImportError:
            warnings.warn("ja-mecab is not installed (pip install 'sacrebleu[ja]'): Japanese BLEU uses 13a; "
                          "the tokenizer used is recorded in the output")
    return "13a"


def mt_scores(hypotheses: list[str], references: list[str], target_lang: str) -> dict:
    """Corpus BLEU and chrF with their sacreBLEU signatures."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(tokenize=bleu_tokenizer(target_lang)), CHRF()
    b, c = bleu.corpus_score(hypotheses, [references]), chrf.corpus_score(hypotheses, [references])
    return {"bleu": b.score, "chrf": c.score, "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature())}


def entities_from_json(text: str) -> tuple[Counter, bool]:
    """(Counter of (type, text) tuples, parsed ok) from generated JSON.

    Accepts {type: [texts]} / {type: text}, or a list of {type|label|entity_type, text|entity|name} objects
    or [text, type] pairs."""
    try:
        data = json.loads(text.strip())
    except json.JSONDecodeError:
        match = re.search(r"[\[{].*[\]}]", text, re.S)  # JSON inside surrounding prose or a code fence
        try:
            data = json.loads(match.group(0)) if match else None
        except json.JSONDecodeError:
            data = None
    if data is None:
        return Counter(), False
    out = Counter()
    if isinstance(data, dict):
        for kind, values in data.items():
            for v in values if isinstance(values, list) else [values]:
                if isinstance(v, str) and v.strip():
                    out[(str(kind).strip().lower(), v.strip())] += 1
    elif isinstance(data, list):
        for item in data:
            if isinstance(item, dict):
                kind = item.get("type", item.get("label", item.get("entity_type")))
                value = item.get("text", item.get("entity", item.get("name")))
                if isinstance(kind, str) and isinstance(value, str):
                    out[(kind.strip().lower(), value.strip())] += 1
            elif isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(x, str) for x in item):
                out[(item[1].strip().lower(), item[0].strip())] += 1
    return out, True


def json_f1(references: list[str], predictions: list[str]) -> dict[str, float]:
    """Micro F1 over (type, text) tuples; also the share of predictions that were not valid JSON."""
    f1, invalid = F1(), 0
    for ref, pred in zip(references, predictions, strict=True):
        gold, _ = entities_from_json(ref)
        got, ok = entities_from_json(pred)
        invalid += not ok
        f1.add(got, gold)
    return {**f1.score, "invalid_json": invalid / max(len(predictions), 1)}
