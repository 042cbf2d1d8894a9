"""Task metrics (paper §4.2; docs/method.md §7).

- Slot F1 as the official MASSIVE scorer (`scripts/eval_massive.py` of the paper's code, itself the MASSIVE
  authors' `eval_preds`) computes it:
  gold: the utterance's whitespace tokens, labelled by walking the `annot_utt` tokens (`[type` opens a
  slot and skips the `:`, a token ending in `]` closes it); ja/zh: characters of `annot_utt`, with ASCII
  chunks kept whole. prediction: `type: value; …` split on "; " then ": " (a part that does not split
  into exactly two is ignored; `None` means no slot); each value's tokens (ja/zh: its characters) are
  searched case-insensitively in the utterance tokens and EVERY occurrence is labelled (later parts
  overwrite earlier ones; values not found are dropped). Labels → BIO where adjacent equal labels form
  one span → span micro F1 (seqeval's default mode).
  Kept as the official scorer has them, because the paper's numbers come from it: in ja/zh an ASCII
  chunk that closes a slot (`5pm]`) does not reset the label, so the following tokens stay inside
  that slot; an ASCII word in a ja/zh value never matches (values are split into characters, the
  utterance keeps ASCII chunks whole).
- MT: sacreBLEU corpus BLEU per direction with the target language's tokenizer (13a; `zh` for
  Chinese; `ja-mecab` for Japanese when installed) and chrF.
- JSON NER as the official `parse_3standard_ner_from_json`: the text after `"Results": [`, the
  `"TypeName": "<T>", "Text": "<v>"` entries for T in LOC, PER, ORG; micro F1 over (type, text) pairs.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass

CHAR_SPLIT_LANGS = ("ja", "zh")  # the official scorer's ja-JP, zh-CN, zh-TW
OUTSIDE = "Other"


def char_split(lang: str) -> bool:
    return lang.split("-")[0] in CHAR_SPLIT_LANGS


def gold_labels(utt: str, annot_utt: str, lang: str) -> tuple[list[str], list[str]]:
    """(utterance tokens, one label per token; `Other` outside slots) from a MASSIVE annotation."""
    if char_split(lang):
        return _gold_labels_chars(annot_utt)
    labels, label, chunks, i = [], OUTSIDE, annot_utt.split(), 0
    while i < len(chunks):
        if chunks[i].startswith("["):
            label = chunks[i].lstrip("[")
            i += 2  # the slot type and its ":"
            continue
        labels.append(label)
        if chunks[i].endswith("]"):
            label = OUTSIDE
        i += 1
    return utt.split(), labels


def _gold_labels_chars(annot_utt: str) -> tuple[list[str], list[str]]:
    tokens, labels, label, after_type = [], [], OUTSIDE, False
    for chunk in annot_utt.split():
        if chunk.startswith("["):
            label, after_type = chunk.lstrip("["), True
        elif chunk == ":" and after_type:
            after_type = False
        elif chunk.isascii():  # kept whole; as in the official scorer, its "]" does not reset the label
            tokens.append(chunk.rstrip("]"))
            labels.append(label)
        else:
            for char in chunk:
                if char == "]":
                    label = OUTSIDE
                else:
                    tokens.append(char)
                    labels.append(label)
    return tokens, labels


def parse_slots(prediction: str) -> list[tuple[str, str]]:
    """`time: five am; date: this week` → [(time, five am), (date, this week)]; malformed parts ignored."""
    text = prediction.strip()
    if text.lower() == "none":
        return []
    return [tuple(part.split(": ")) for part in text.split("; ") if len(part.split(": ")) == 2]


def predicted_labels(utt_tokens: list[str], slots: list[tuple[str, str]], lang: str, n_labels: int) -> list[str]:
    """Label every case-insensitive occurrence of each predicted value in the utterance tokens; the
    result has the gold sequence's length `n_labels` (the official scorer pads/cuts to it)."""
    labels = [OUTSIDE] * n_labels
    lower = [t.lower() for t in utt_tokens]
    for slot_type, value in slots:
        pattern = [t.lower() for t in (list(value) if char_split(lang) else value.split())]
        n = len(pattern)
        if not n:
            continue
        for start in range(len(lower) - n + 1):
            if lower[start:start + n] == pattern:
                labels[start:start + n] = [slot_type] * n
    return (labels + [OUTSIDE] * n_labels)[:n_labels]


def spans(labels: list[str]) -> set[tuple[int, int, str]]:
    """(start, end, label) of each run of equal labels other than `Other` (the official BIO conversion)."""
    out, start = set(), 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            if labels[start] != OUTSIDE:
                out.add((start, i, labels[start]))
            start = i
    return out


def bio(labels: list[str]) -> list[str]:
    """Labels → BIO tags, adjacent equal labels continuing one span (the official `convert_to_bio`)."""
    return ["O" if l == OUTSIDE else ("I-" if i and labels[i - 1] == l else "B-") + l for i, l in enumerate(labels)]


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


def slot_counts(utt: str, annot_utt: str, prediction: str, lang: str) -> tuple[int, int, int]:
    """(correct spans, predicted spans, gold spans) of one utterance: summed over items, they give the
    official scorer's micro F1 (and any resample's, for a bootstrap over test items)."""
    tokens, gold = gold_labels(utt, annot_utt, lang)
    f1 = F1()
    f1.add(spans(predicted_labels(tokens, parse_slots(prediction), lang, len(gold))), spans(gold))
    return f1.tp, f1.n_pred, f1.n_gold


def slot_f1(utts: list[str], annot_utts: list[str], predictions: list[str], lang: str) -> dict[str, float]:
    """Span micro F1 of predicted slot strings against MASSIVE annotations (one language), as the official scorer."""
    f1 = F1()
    for utt, annot, pred in zip(utts, annot_utts, predictions, strict=True):
        tp, n_pred, n_gold = slot_counts(utt, annot, pred, lang)
        f1.tp, f1.n_pred, f1.n_gold = f1.tp + tp, f1.n_pred + n_pred, f1.n_gold + n_gold
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


NER_TYPES = ("LOC", "PER", "ORG")


def ner_entities(text: str) -> tuple[Counter, bool]:
    """(Counter of (type, text) pairs, whether the answer had a `"Results": [` list), as the official
    `parse_3standard_ner_from_json`: only LOC, PER and ORG entries are read."""
    if '"Results": [' not in text:
        return Counter(), False
    results = text.strip().split('"Results": [')[1].strip("]")
    out = Counter()
    for kind in NER_TYPES:
        out.update((kind, v) for v in re.findall(rf'"TypeName": "{kind}",\s*"Text": "([^"]+)"', results))
    return out, True


def json_f1(references: list[str], predictions: list[str]) -> dict[str, float]:
    """Micro F1 over (type, text) pairs; also the share of predictions without a `"Results": [` list."""
    f1, unparsed = F1(), 0
    for ref, pred in zip(references, predictions, strict=True):
        gold, _ = ner_entities(ref)
        got, ok = ner_entities(pred)
        unparsed += not ok
        f1.add(got, gold)
    return {**f1.score, "no_results_list": unparsed / max(len(predictions), 1)}
