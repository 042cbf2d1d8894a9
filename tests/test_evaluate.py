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
        assert scores["per_language"][p["lang"]]["f1"] == \
            100 * slot_f1([row["utt"]], [row["annot_utt"]], [p["prediction"]], p["lang"])["f1"]
    assert scores["groups"] == {"supervised": scores["per_language"]["en"]["f1"], "transfer": scores["per_language"]["de"]["f1"]}



def test_mt_is_scored_per_direction_on_real_wmt23(tiny_chat_checkpoint, tmp_path):
    """Real WMT23 segments (fixtures/publishers/wmt23/txt), both directions of ru↔en and zh→en in one run:
    one score per direction, never pooled, each with the target language's BLEU tokenizer."""
    from midalign.data import sources

    [wmt] = sources.ensure("wmt23", tmp_path / "data", progress=False,
                           local=Path(__file__).parent / "fixtures/publishers/wmt23")
    files = [wmt / f"test.{d}.jsonl" for d in ("ru-en", "en-ru", "zh-en", "en-zh")]
    res = run_eval("--model", str(tiny_chat_checkpoint), "--data", *map(str, files), "--limit", "3",
                   "--max-new-tokens", "6", "--groups", "supervised=ru", "transfer=zh", "--out", str(tmp_path / "mt"))
    assert res.returncode == 0, res.stderr
    scores = json.loads((tmp_path / "mt" / "scores.json").read_text())
    preds = [json.loads(l) for l in (tmp_path / "mt" / "predictions.jsonl").read_text().splitlines()]
    assert list(scores["per_language"]) == ["ru-en", "en-ru", "zh-en", "en-zh"]
    for d in scores["per_language"]:
        s, t = d.split("-")
        rows = [json.loads(l)["translation"] for l in (wmt / f"test.{d}.jsonl").read_text().splitlines()][:3]
        hyps = [p["prediction"] for p in preds if p["input"] in {r[s] for r in rows}]
        expected = mt_scores(hyps, [r[t] for r in rows], t)
        assert scores["per_language"][d]["bleu"] == expected["bleu"]
        assert scores["per_language"][d]["bleu_signature"] == expected["bleu_signature"]
        assert f"{d}: BLEU" in res.stdout and expected["bleu_signature"] in res.stdout  # one row per direction
    assert "tok:zh" in scores["per_language"]["en-zh"]["bleu_signature"]
    assert "tok:13a" in scores["per_language"]["en-ru"]["bleu_signature"]
    assert scores["group_members"] == {"supervised →en": ["ru-en"], "supervised en→": ["en-ru"],
                                       "transfer →en": ["zh-en"], "transfer en→": ["en-zh"]}
    assert scores["per_language"]["ru-en"]["comet"] == "skipped"
    assert (tmp_path / "mt" / "table.md").read_text().startswith("| model | ru-en | en-ru |")


def test_bad_test_file_names_file_and_line(tiny_chat_checkpoint, tmp_path):
    (tmp_path / "m.jsonl").write_text('{"locale": "en-US", "partition": "test", "utt": "a", "annot_utt": "a"}\n'
                                      '{"locale": "en-US", "partition": "test", "utt": "b"}\n')
    res = run_eval("--task", "slot", "--model", str(tiny_chat_checkpoint), "--data", str(tmp_path / "m.jsonl"),
                   "--out", str(tmp_path / "o"))
    assert res.returncode != 0 and "m.jsonl:2: missing field 'annot_utt'" in res.stderr
    assert not (tmp_path / "o" / "scores.json").exists()
    res = run_eval("--task", "slot", "--model", str(tiny_chat_checkpoint), "--out", str(tmp_path / "o"))
    assert res.returncode != 0 and "--task slot needs --data" in res.stderr


def test_an_earlier_evaluation_is_replaced_only_when_told_and_whole(tiny_chat_checkpoint, tmp_path):
    """Two evaluations into one --out both exited 0 (one result gone); a --langs typo wrote an empty one."""
    data = tmp_path / "m.jsonl"
    data.write_text("".join(json.dumps({"locale": l, "partition": "test", "utt": u, "annot_utt": u}) + "\n"
                            for l, u in (("en-US", "wake me up"), ("de-DE", "weck mich"))))
    run = lambda *a: run_eval("--task", "slot", "--model", str(tiny_chat_checkpoint), "--data", str(data),
                              "--max-new-tokens", "2", "--out", str(tmp_path / "o"), *a)
    assert run("--langs", "en").returncode == 0
    (tmp_path / "o" / "table.md").unlink()  # an earlier evaluation's file that the next one would not rewrite…
    (tmp_path / "o" / "table.md").write_text("stale")
    res = run("--langs", "de")
    assert res.returncode == 1 and "holds an earlier output" in res.stderr and "pass --overwrite" in res.stderr
    assert run("--langs", "de", "--overwrite").returncode == 0
    assert (tmp_path / "o" / "table.md").read_text() != "stale"  # …is gone: the folder is written whole
    record = json.loads((tmp_path / "o" / "provenance.json").read_text())
    assert record["langs"] == ["de"] and record["model"] == str(tiny_chat_checkpoint) and "--overwrite" in record["command"]
    res = run_eval("--task", "slot", "--model", str(tiny_chat_checkpoint), "--data", str(data), "--langs", "xx",
                   "--out", str(tmp_path / "typo"))
    assert res.returncode == 1 and "no slot examples" in res.stderr and "for languages xx" in res.stderr
    assert not (tmp_path / "typo").exists()
