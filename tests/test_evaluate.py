"""evaluate.py end to end on a tiny model: predictions, per-language scores recomputed from them, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from midalign.metrics import mt_scores, slot_f1

ROOT = Path(__file__).parent.parent


def run_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *args], capture_output=True, text=True, cwd=ROOT)


def test_slot_and_mt_evaluation_write_consistent_scores(tiny_chat_checkpoint, tmp_path):
    rows = [{"locale": "en-US", "partition": "test", "utt": "wake me up at five am",
             "annot_utt": "wake me up at [time : five am]"},
            {"locale": "de-DE", "partition": "test", "utt": "weck mich um fünf",
             "annot_utt": "weck mich um [time : fünf]"},
            {"locale": "de-DE", "partition": "train", "utt": "x", "annot_utt": "x"}]
    (tmp_path / "massive.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    res = run_eval("--task", "slot", "--model", str(tiny_chat_checkpoint), "--data", str(tmp_path / "massive.jsonl"),
                   "--max-new-tokens", "8", "--groups", "supervised=en", "transfer=de", "--out", str(tmp_path / "slot"))
    assert res.returncode == 0, res.stderr
    scores = json.loads((tmp_path / "slot" / "scores.json").read_text())
    preds = [json.loads(l) for l in (tmp_path / "slot" / "predictions.jsonl").read_text().splitlines()]
    assert [p["lang"] for p in preds] == ["en", "de"] and set(scores["per_language"]) == {"en", "de"}
    for row, p in zip(rows, preds):
        assert scores["per_language"][p["lang"]]["f1"] == 100 * slot_f1([row["annot_utt"]], [p["prediction"]], p["lang"])["f1"]
    assert scores["groups"] == {"supervised": scores["per_language"]["en"]["f1"], "transfer": scores["per_language"]["de"]["f1"]}

    mt = [{"translation": {"de": f"Satz {i}.", "en": f"Sentence {i}."}} for i in range(3)]
    (tmp_path / "test.de-en.jsonl").write_text("\n".join(json.dumps(r) for r in mt))
    res = run_eval("--model", str(tiny_chat_checkpoint), "--data", str(tmp_path / "test.de-en.jsonl"),
                   "--max-new-tokens", "6", "--out", str(tmp_path / "mt"))
    assert res.returncode == 0, res.stderr
    scores = json.loads((tmp_path / "mt" / "scores.json").read_text())
    preds = [json.loads(l)["prediction"] for l in (tmp_path / "mt" / "predictions.jsonl").read_text().splitlines()]
    assert scores["per_language"]["de"]["bleu"] == mt_scores(preds, [r["translation"]["en"] for r in mt], "en")["bleu"]
    assert scores["per_language"]["de"]["comet"] == "skipped"
    assert (tmp_path / "mt" / "table.md").read_text().startswith("| model | de |")


def test_bad_test_file_names_file_and_line(tiny_chat_checkpoint, tmp_path):
    (tmp_path / "m.jsonl").write_text('{"locale": "en-US", "partition": "test", "utt": "a", "annot_utt": "a"}\n'
                                      '{"locale": "en-US", "partition": "test", "utt": "b"}\n')
    res = run_eval("--task", "slot", "--model", str(tiny_chat_checkpoint), "--data", str(tmp_path / "m.jsonl"),
                   "--out", str(tmp_path / "o"))
    assert res.returncode != 0 and "m.jsonl:2: missing field 'annot_utt'" in res.stderr
    assert not (tmp_path / "o" / "scores.json").exists()
    res = run_eval("--task", "slot", "--model", str(tiny_chat_checkpoint), "--out", str(tmp_path / "o"))
    assert res.returncode != 0 and "--task slot needs --data" in res.stderr
