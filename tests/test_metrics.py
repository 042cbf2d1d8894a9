"""Metrics against hand-computed values, and BLEU against sacrebleu's own command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from midalign.metrics import entities_from_json, gold_tags, json_f1, mt_scores, parse_slots, slot_f1, spans


def test_gold_tags_from_brackets():
    toks, tags = gold_tags("wake me up at [time : five am] [date : this week]", "en")
    assert toks == ["wake", "me", "up", "at", "five", "am", "this", "week"]
    assert tags == ["O", "O", "O", "O", "B-time", "I-time", "B-date", "I-date"]
    assert spans(tags) == {(4, 6, "time"), (6, 8, "date")}


def test_prediction_parsing_ignores_malformed_parts():
    assert parse_slots("time: five am; date: this week") == [("time", "five am"), ("date", "this week")]
    assert parse_slots("None") == []
    assert parse_slots("time five am; date: a: b; : x; place: here") == [("place", "here")]


@pytest.mark.parametrize("prediction, expected", [
    # all right: 2 of 2 spans → P = R = F1 = 1
    ("time: five am; date: this week", (1.0, 1.0, 1.0)),
    # one right, one wrong type: tp 1, pred 2, gold 2 → 0.5 / 0.5 / 0.5
    ("time: five am; place: this week", (0.5, 0.5, 0.5)),
    # case-insensitive match, value absent from the utterance dropped: tp 1, pred 1, gold 2 → 1 / 0.5 / 2/3
    ("time: FIVE AM; date: next year", (1.0, 0.5, 2 / 3)),
    # a partial span is a different span: tp 0, pred 1 → 0
    ("time: five", (0.0, 0.0, 0.0)),
    # None: nothing predicted → 0, 0, 0
    ("None", (0.0, 0.0, 0.0)),
    # unparseable
    ("the time is five am", (0.0, 0.0, 0.0)),
])
def test_slot_f1_hand_computed(prediction, expected):
    s = slot_f1(["wake me up at [time : five am] [date : this week]"], [prediction], "en")
    assert (s["precision"], s["recall"], s["f1"]) == pytest.approx(expected)


def test_slot_f1_repeated_values_micro_average_and_cjk():
    # "two" occurs twice; the first predicted "two" takes the first occurrence, the second the next one.
    annot = "set [number : two] alarms for [time : two] pm"
    s = slot_f1([annot], ["number: two; time: two"], "en")
    assert s["f1"] == pytest.approx(1.0)
    s = slot_f1([annot], ["time: two"], "en")  # tags the first "two" as time: wrong span → 0 of 1
    assert (s["precision"], s["recall"]) == pytest.approx((0.0, 0.0))
    # micro-average over two utterances; "work" is not in the utterance, so it is dropped (not a wrong span):
    # tp 1+0, pred 1+0, gold 1+1 → P 1, R 0.5, F1 2/3
    s = slot_f1(["[date : today]", "at [place : home]"], ["date: today", "place: work"], "en")
    assert (s["precision"], s["recall"], s["f1"]) == pytest.approx((1.0, 0.5, 2 / 3))
    # a wrong value that *is* in the utterance counts against precision: tp 1+0, pred 1+1, gold 1+1 → 0.5
    s = slot_f1(["[date : today]", "at [place : home]"], ["date: today", "place: at"], "en")
    assert s["f1"] == pytest.approx(0.5)
    # Chinese: characters are tokens; "明天" is a 2-character span
    s = slot_f1(["提醒我[date : 明天]开会"], ["date: 明天"], "zh")
    assert s["f1"] == pytest.approx(1.0)
    s = slot_f1(["提醒我[date : 明天]开会"], ["date: 明"], "zh")
    assert s["f1"] == pytest.approx(0.0)


def test_json_entities_and_f1_by_hand():
    ents, ok = entities_from_json('{"PER": ["Ada Lovelace"], "LOC": ["London", "Paris"]}')
    assert ok and set(ents) == {("per", "Ada Lovelace"), ("loc", "London"), ("loc", "Paris")}
    ents, ok = entities_from_json('Here: ```json\n[{"type": "ORG", "text": "UN"}]\n```')
    assert ok and ents == {("org", "UN"): 1}
    assert entities_from_json("not json at all") == ({}, False)
    ref = '{"PER": ["Ada"], "LOC": ["London"]}'
    # tp 1 (Ada), pred 2, gold 2 → 0.5; the invalid one: tp 0, pred 0, gold 2
    s = json_f1([ref, ref], ['{"PER": ["Ada"], "ORG": ["London"]}', "{broken"])
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(0.25)
    assert s["f1"] == pytest.approx(2 * 0.5 * 0.25 / 0.75) and s["invalid_json"] == 0.5


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
