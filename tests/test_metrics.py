"""Metrics against the official scorers' behaviour.

Slot F1: cases derived by reading the paper's official `scripts/eval_massive.py` (dannigt/mid-align) —
how it builds gold labels from `annot_utt`, tags EVERY occurrence of a predicted value, lets later parts
overwrite earlier ones, splits ja/zh into characters — and the F1 itself against seqeval, the library
that script calls. JSON NER: the official `parse_3standard_ner_from_json` answer format
(`"Results": [{"TypeName": "LOC", "Text": "…"}]`, scripts/utils.py). BLEU: sacrebleu's command line.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from midalign.metrics import (bio, gold_labels, json_f1, mt_scores, ner_entities, parse_slots, predicted_labels,
                              slot_f1, spans)

seqeval = pytest.importorskip("seqeval.metrics")

# The real en-US and de-DE records of the MASSIVE README (alexa/massive, README.md).
EN_UTT, EN_ANNOT = "wake me up at five am this week", "wake me up at [time : five am] [date : this week]"
DE_UTT, DE_ANNOT = ("weck mich diese woche um fünf uhr morgens auf",
                    "weck mich [date : diese woche] um [time : fünf uhr morgens] auf")


def test_gold_labels_walk_the_annotation():
    tokens, labels = gold_labels(EN_UTT, EN_ANNOT, "en")
    assert tokens == EN_UTT.split()
    assert labels == ["Other"] * 4 + ["time", "time", "date", "date"]
    assert bio(labels) == ["O"] * 4 + ["B-time", "I-time", "B-date", "I-date"]
    tokens, labels = gold_labels(DE_UTT, DE_ANNOT, "de")
    assert labels == ["Other", "Other", "date", "date", "Other", "time", "time", "time", "Other"]
    # a one-word slot closes on its own token
    assert gold_labels("what is today", "what is [date : today]", "en")[1] == ["Other", "Other", "date"]


def test_gold_labels_ja_zh_characters_and_ascii_chunks():
    tokens, labels = gold_labels("", "提醒我 [date : 明天] 开会", "zh")
    assert tokens == list("提醒我明天开会")
    assert labels == ["Other"] * 3 + ["date"] * 2 + ["Other"] * 2
    # An ASCII chunk is one token. As in the official scorer, an ASCII chunk that closes a slot
    # ("5pm]") does not reset the label: the following characters stay inside the slot.
    tokens, labels = gold_labels("", "[time : 5pm] に 起こして", "ja")
    assert tokens == ["5pm", "に", "起", "こ", "し", "て"]
    assert labels == ["time"] * 6


def test_prediction_parsing_as_the_official_script():
    assert parse_slots("time: five am; date: this week") == [("time", "five am"), ("date", "this week")]
    assert parse_slots("None") == parse_slots(" none ") == []
    # parts that do not split into exactly two on ": " are ignored; "; " is the only separator
    assert parse_slots("time five am; date: a: b; place: here") == [("place", "here")]
    assert parse_slots("place: here;time: now") == []  # one part, three pieces on ": "


def test_every_occurrence_is_tagged_and_later_parts_win():
    tokens = "set two alarms for two pm".split()
    # "two" occurs twice: both are tagged
    assert predicted_labels(tokens, [("number", "two")], "en", 6) == ["Other", "number", "Other", "Other", "number", "Other"]
    # a later part overwrites an earlier one where they overlap
    assert predicted_labels(tokens, [("number", "two"), ("time", "two pm")], "en", 6) == \
        ["Other", "number", "Other", "Other", "time", "time"]
    # case-insensitive; a value not in the utterance is dropped
    assert predicted_labels(tokens, [("time", "TWO PM"), ("date", "friday")], "en", 6)[4:] == ["time", "time"]
    # adjacent occurrences of one label merge into one span (convert_to_bio continues equal labels)
    assert spans(predicted_labels("la la land".split(), [("song_name", "la")], "en", 3)) == {(0, 2, "song_name")}
    # ja/zh: the value is split into characters; an ASCII word never matches an ASCII chunk token
    assert predicted_labels(["5pm", "に", "起"], [("time", "5pm")], "ja", 3) == ["Other"] * 3
    assert predicted_labels(list("提醒我明天开会"), [("date", "明天")], "zh", 7)[3:5] == ["date", "date"]


@pytest.mark.parametrize("utt, annot, lang, prediction", [
    (EN_UTT, EN_ANNOT, "en", "time: five am; date: this week"),
    (EN_UTT, EN_ANNOT, "en", "time: five am; place: this week"),
    (EN_UTT, EN_ANNOT, "en", "time: FIVE AM; date: next year"),
    (EN_UTT, EN_ANNOT, "en", "time: five"),
    (EN_UTT, EN_ANNOT, "en", "None"),
    (EN_UTT, EN_ANNOT, "en", "the time is five am"),
    (DE_UTT, DE_ANNOT, "de", "date: diese woche; time: fünf uhr morgens"),
    (DE_UTT, DE_ANNOT, "de", "time: uhr morgens; date: woche"),
    ("set two alarms for two pm", "set [number : two] alarms for [time : two pm]", "en", "number: two; time: two pm"),
    ("set two alarms for two pm", "set [number : two] alarms for [time : two pm]", "en", "number: two"),
    ("", "提醒我 [date : 明天] 开会", "zh", "date: 明天"),
    ("", "提醒我 [date : 明天] 开会", "zh", "date: 明"),
])
def test_slot_f1_equals_seqeval_on_the_official_bio(utt, annot, lang, prediction):
    tokens, gold = gold_labels(utt, annot, lang)
    pred = predicted_labels(tokens, parse_slots(prediction), lang, len(gold))
    ours = slot_f1([utt], [annot], [prediction], lang)["f1"]
    assert ours == pytest.approx(seqeval.f1_score([bio(gold)], [bio(pred)]))


def test_slot_f1_repeated_values_by_hand():
    # gold: number=two (pos 1), time=two pm (pos 4-5). Predicting "number: two" tags BOTH "two"s as number:
    # spans (1,2,number) ✓ and (4,5,number) ✗ → tp 1, pred 2, gold 2 → F1 0.5. (A first-occurrence rule
    # would have given P 1, R 0.5, F1 2/3: the two rules differ.)
    s = slot_f1(["set two alarms for two pm"], ["set [number : two] alarms for [time : two pm]"], ["number: two"], "en")
    assert (s["precision"], s["recall"], s["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    # micro average over two utterances: tp 1+0, pred 1+0, gold 2+2 → P 1, R 0.25
    s = slot_f1([EN_UTT, DE_UTT], [EN_ANNOT, DE_ANNOT], ["time: five am", "place: berlin"], "en")
    assert (s["precision"], s["recall"]) == pytest.approx((1.0, 0.25))


# The official answer format of the Aya-collection UNER targets, as `parse_3standard_ner_from_json`
# (scripts/utils.py in dannigt/mid-align) reads it: a "Results" list of TypeName/Text objects.
UNER_ANSWER = ('{"Results": [{"TypeName": "PER", "Text": "Ada Lovelace"}, {"TypeName": "LOC", "Text": "London"}, '
               '{"TypeName": "ORG", "Text": "Royal Society"}, {"TypeName": "LOC", "Text": "London"}]}')


def test_ner_parsing_as_the_official_parser():
    entities, ok = ner_entities(UNER_ANSWER)
    assert ok and entities == {("LOC", "London"): 2, ("PER", "Ada Lovelace"): 1, ("ORG", "Royal Society"): 1}
    assert ner_entities('{"Results": []}') == ({}, True)
    assert ner_entities("Ada is a person") == ({}, False)
    # only LOC, PER, ORG are read; whitespace between the two keys is allowed
    entities, _ = ner_entities('"Results": [{"TypeName": "MISC", "Text": "x"}, {"TypeName": "PER",\n "Text": "Bo"}]')
    assert entities == {("PER", "Bo"): 1}


def test_json_f1_gold_against_itself_and_by_hand():
    assert json_f1([UNER_ANSWER], [UNER_ANSWER])["f1"] == 1.0
    pred = '{"Results": [{"TypeName": "PER", "Text": "Ada Lovelace"}, {"TypeName": "ORG", "Text": "London"}]}'
    # tp 1 (Ada), pred 2, gold 4 → P 0.5, R 0.25; the second prediction has no Results list: pred 0, gold 4
    s = json_f1([UNER_ANSWER, UNER_ANSWER], [pred, "no entities here"])
    assert (s["precision"], s["recall"], s["no_results_list"]) == pytest.approx((0.5, 1 / 8, 0.5))


def test_bleu_and_chrf_equal_sacrebleu_cli(tmp_path):
    hyps = ["All human beings are born free and equal.", "They have reason and conscience.", "Everyone is entitled."]
    refs = ["All human beings are born free and equal in dignity and rights.",
            "They are endowed with reason and conscience.", "Everyone is entitled to all the rights."]
    (tmp_path / "hyp.txt").write_text("\n".join(hyps) + "\n")
    (tmp_path / "ref.txt").write_text("\n".join(refs) + "\n")
    ours = mt_scores(hyps, refs, "en")
    cli = subprocess.run([sys.executable, "-m", "sacrebleu", str(tmp_path / "ref.txt"), "-i", str(tmp_path / "hyp.txt"),
                          "-m", "bleu", "chrf", "-b", "-w", "4"], capture_output=True, text=True, check=True)
    bleu, chrf = json.loads(cli.stdout)  # -b with two metrics prints a JSON list of the scores
    assert round(ours["bleu"], 4) == pytest.approx(bleu) and round(ours["chrf"], 4) == pytest.approx(chrf)
    assert "tok:13a" in ours["bleu_signature"]
    assert "tok:zh" in mt_scores(["人人生而自由"], ["人人生而自由，在尊严和权利上一律平等。"], "zh")["bleu_signature"]
