"""The bad-input matrix of docs/reliability.md: each bad input stops with file/line/key and the fix,
before anything is written (issue: reliability and scale)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_args, write_tiny_data
from midalign.data.tasks import load_massive, load_pairs, load_parallel_jsonl, load_uner
from midalign.data.udhr import Version, resolve_versions
from midalign.errors import DataError, MidalignError

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))

MASSIVE_ROW = '{"locale": "de-DE", "partition": "train", "utt": "weck mich", "annot_utt": "weck mich"}'


@pytest.mark.parametrize("name, text, load, message", [
    ("m.jsonl", MASSIVE_ROW + "\n{\"locale\": \"de-DE\",\n", load_massive, r"m.jsonl:2: not valid JSON"),
    ("m.jsonl", MASSIVE_ROW.replace('"utt"', '"text"'), load_massive, r"m.jsonl:1: missing field 'utt'"),
    ("m.jsonl", MASSIVE_ROW + '\n["a list"]', load_massive, r"m.jsonl:2: expected a JSON object"),
    ("m.jsonl", "\n\n", load_massive, r"m.jsonl: file is empty"),
    ("m.jsonl", MASSIVE_ROW.replace("weck mich\"}", "[time : fünf\"}"), load_massive,
     r"m.jsonl:1: annot_utt '\[time : fünf' has brackets that are not MASSIVE's `\[type : value\]` spans"),
    ("m.jsonl", MASSIVE_ROW.replace("weck mich\"}", "[time fünf]\"}"), load_massive,  # no ' : ': scored F1 0 before
     r"m.jsonl:1: annot_utt '\[time fünf\]' has brackets"),
    ("m.jsonl", MASSIVE_ROW.replace("weck mich\"}", "[time : [fünf]]\"}"), load_massive, r"m.jsonl:1: .* nested"),
    ("m.jsonl", MASSIVE_ROW + "\n" + MASSIVE_ROW.replace('"train"', '"validation"'), load_massive,
     r"m.jsonl:2: partition 'validation' is not one of train, dev, test"),
    ("u.jsonl", '{"inputs": "x"}', load_uner, r"u.jsonl:1: missing field 'targets'"),
    ("u.jsonl", '{"inputs": "x", "targets": 3}', load_uner, r"u.jsonl:1: field 'targets' must be str"),
    ("a.jsonl", '{"translation": {"de": "Hallo"}}', lambda p: load_parallel_jsonl(p, "de", "en"),
     r"a.jsonl:1: translation has no 'en' sentence \(keys: de\)"),
    ("p.tsv", "", load_pairs, r"p.tsv: file is empty"),
    ("p.tsv", "de\tHallo\tHello\nde\tHallo Hello\n", load_pairs, r"p.tsv:2: expected 3 tab-separated fields"),
    ("p.tsv", "de\t \tHello\n", load_pairs, r"p.tsv:1: field sentence is empty \(fields: lang, sentence, english\)$"),
    ("p.jsonl", '{"lang": "de", "text": "Hallo"}', load_pairs, r"p.jsonl:1: missing field 'en'"),
])
def test_data_file_errors_name_file_line_and_key(tmp_path, name, text, load, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load(path)


def test_massive_zh_tw_is_its_own_language_and_empty_utterances_are_skipped_and_counted(tmp_path, capsys):
    rows = [MASSIVE_ROW.replace("de-DE", locale) for locale in ("zh-CN", "zh-TW")]
    rows += [MASSIVE_ROW.replace('"utt": "weck mich"', '"utt": " "'), MASSIVE_ROW.replace('"utt": "weck mich"', '"utt": ""')]
    (tmp_path / "m.jsonl").write_text("\n".join(rows), encoding="utf-8")
    assert [ex.lang for ex in load_massive(tmp_path / "m.jsonl")] == ["zh", "zh-TW"]
    assert capsys.readouterr().err.strip().endswith("m.jsonl: 2 record(s) with an empty utterance skipped")
    assert [ex.lang for ex in load_massive(tmp_path / "m.jsonl", langs=["zh-TW"])] == ["zh-TW"]
    assert capsys.readouterr().err == ""  # the empty ones were not asked for (German)


def test_missing_file_and_unknown_language_code(tmp_path):
    with pytest.raises(DataError, match=r"nothere.jsonl: file not found"):
        load_massive(tmp_path / "nothere.jsonl")
    versions = {"eng": Version("eng", "en", "English", {}), "deu_1996": Version("deu_1996", "de", "German", {})}
    assert resolve_versions(["de"], versions) == {"de": "deu_1996"}
    with pytest.raises(DataError, match=r"unknown UDHR language 'xx': use an ISO 639-1 code of af, ar"):
        resolve_versions(["xx"], versions)


@pytest.mark.parametrize("extra, message", [
    (("--align-layer", "0"), "align_layer = 0 (train.py --align-layer) must be a decoder layer (an integer ≥ 1)"),
    (("--align-layer", "5"), "--align-layer 5 is out of range"),
    (("--align-langs", "de", "xx"), "no alignment pairs for xx: add them to --align-data or drop them from --align-langs"),
    (("--align-only", "--no-align"), "--align-only with --no-align leaves nothing to train"),
    (("--task", "slot", "--train-data", "{data}/train.de-en.jsonl"), "missing field 'locale'"),
])
def test_train_rejects_bad_settings_before_writing_anything(tiny_chat_checkpoint, tmp_path, extra, message):
    import train

    data = write_tiny_data(tmp_path / "data")
    out = tmp_path / "run"
    args = tiny_args(tiny_chat_checkpoint, data, out, "--max-steps", "1", *(e.format(data=tmp_path / "data") for e in extra))
    with pytest.raises(MidalignError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train.main(args)
    assert not out.exists(), "nothing is written for a run that cannot start"


def test_cli_error_is_one_line_and_exit_status_1(tiny_chat_checkpoint, tmp_path):
    data = write_tiny_data(tmp_path / "data")
    (tmp_path / "empty.tsv").write_text("")
    res = subprocess.run([sys.executable, str(ROOT / "train.py"),
                          *tiny_args(tiny_chat_checkpoint, {**data, "pairs": tmp_path / "empty.tsv"}, tmp_path / "run")],
                         capture_output=True, text=True, cwd=ROOT)
    first, error = res.stderr.strip().splitlines()  # the resolved preset (the first log line), then the error
    assert first.startswith("[train] preset demo (the default")
    assert res.returncode == 1 and error == f"error: {tmp_path / 'empty.tsv'}: file is empty"
    assert "Traceback" not in res.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "retrieve.py"])
@pytest.mark.parametrize("file, text, message", [
    ("config.json", '{"model_type": "llama",\n "hidden_size": 64,,}', "config.json:2: not valid JSON"),
    ("config.json", '{"model_type": "gpt2"}', "model_type 'gpt2' is not supported"),
    ("tokenizer.json", "{not json", "tokenizer.json"),
])
def test_bad_model_files_are_one_line_errors(tiny_chat_checkpoint, tmp_path, script, file, text, message):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_chat_checkpoint, model)
    (model / file).write_text(text)
    data = write_tiny_data(tmp_path / "data")
    args = {"train.py": tiny_args(model, data, tmp_path / "run"),
            "evaluate.py": ["--model", str(model), "--data", str(data["dev"]), "--out", str(tmp_path / "run")],
            "retrieve.py": ["--model", str(model), "--out", str(tmp_path / "run")]}[script]
    res = subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, cwd=ROOT)
    [error] = [line for line in res.stderr.splitlines() if not line.startswith("[train] preset ")]  # the first log line
    assert res.returncode == 1 and error.startswith("error: "), res.stderr
    assert message in res.stderr and str(model) in res.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("script, flag, value", [
    ("train", "--batch-size", "0"), ("train", "--eval-every", "0"), ("train", "--grad-accum", "-2"),
    ("train", "--lora-r", "0"), ("train", "--lr", "nan"), ("train", "--temperature", "0"),
    ("train", "--warmup-ratio", "inf"), ("evaluate", "--limit", "-3"), ("evaluate", "--limit", "0"),
    ("evaluate", "--max-new-tokens", "0"), ("retrieve", "--k", "0"), ("merge", "--weights", "nan"),
    ("merge", "--batch-size", "x")])
def test_numeric_arguments_are_checked_where_they_are_parsed(script, flag, value, capsys):
    """Zero, negative, nan and inf stop at parsing with a message naming the flag (argparse exit 2), before
    a model is loaded or anything is written (they used to run something else, or fail with a traceback)."""
    module = __import__(script)
    argv = [flag, value] + (["--adapters", "a", "b"] if script == "merge" else [])
    with pytest.raises(SystemExit) as exit_:
        module.parse_args(argv)
    assert exit_.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_late_and_silent_failures_are_early_one_line_errors(tiny_chat_checkpoint, tmp_path, monkeypatch):
    """A --groups language that is not evaluated (it vanished from the table), one language for retrieval (it
    failed after embedding), --device cuda without a GPU (a traceback), a report rebuilt from a mistyped
    --results folder (it overwrote the report with "Not run yet"): each a one-line error before any work."""
    import evaluate
    import retrieve
    import torch

    from midalign.checkpoint import load_model_and_tokenizer
    from midalign.errors import MidalignError

    data = write_tiny_data(tmp_path / "data")
    with pytest.raises(DataError, match=r"--groups odd=de,xx: xx not among the evaluated languages"):
        evaluate.main(["--model", str(tiny_chat_checkpoint), "--data", str(data["dev"]), "--groups", "odd=de,xx",
                       "--out", str(tmp_path / "e")])
    with pytest.raises(DataError, match="retrieval needs at least two languages"):
        retrieve.main(["--model", str(tiny_chat_checkpoint), "--langs", "de", "--out", str(tmp_path / "r")])
    with pytest.raises(DataError, match=r"--layers 3,99: this model has hidden states 0..4"):  # a SystemExit before
        retrieve.main(["--model", str(tiny_chat_checkpoint), "--langs", "de", "fr", "--layers", "3,99",
                       "--out", str(tmp_path / "r")])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MidalignError, match="--device cuda: no CUDA GPU"):
        load_model_and_tokenizer(tiny_chat_checkpoint, "cuda")
    report = tmp_path / "docs" / "slot.md"
    report.parent.mkdir()
    report.write_text("months of results")
    res = subprocess.run([sys.executable, str(ROOT / "experiments" / "slot.py"), "--report-only", "--results",
                          str(tmp_path / "typo"), "--report", str(report)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 1 and "no result files there" in res.stderr and report.read_text() == "months of results"
    assert not (tmp_path / "e").exists() and not (tmp_path / "r").exists()


def test_one_token_sentences_keep_their_token_and_relative_model_paths_match_absolute(tiny_chat_checkpoint, tmp_path,
                                                                                       monkeypatch):
    """Under mean-skip-first a one-token sentence pooled to a zero vector (its alignment loss was exactly
    ln n); an adapter trained with a relative --model was refused for the same folder given absolutely."""
    import torch

    import train
    from midalign.adapters import load_adapter, read_adapter
    from midalign.align import mean_pool
    from midalign.checkpoint import load_model

    h = torch.randn(2, 3, 4)
    mask = torch.tensor([[0, 0, 1], [1, 1, 1]])  # one token (left-padded), three tokens
    pooled = mean_pool(h, mask, skip_first=True)
    torch.testing.assert_close(pooled[0], h[0, 2])
    torch.testing.assert_close(pooled[1], h[1, 1:].mean(0))

    data = write_tiny_data(tmp_path / "data")
    monkeypatch.chdir(tiny_chat_checkpoint.parent)
    train.main(tiny_args(Path(tiny_chat_checkpoint.name), data, tmp_path / "run", "--max-steps", "1"))
    assert read_adapter(tmp_path / "run" / "best").base_model == str(tiny_chat_checkpoint.resolve())
    monkeypatch.chdir(tmp_path)
    model = load_model(tiny_chat_checkpoint.resolve(), device="cpu")
    load_adapter(model, tmp_path / "run" / "best")  # the absolute path of the same folder: accepted


def test_checked_before_the_expensive_part_and_never_a_traceback(tiny_chat_checkpoint, tmp_path):
    """--out a file and a --comet-python that cannot import comet stop evaluate.py before any generation (after
    it, before); retrieve.py's --out likewise; non-UTF-8 bytes name file:line; a corrupt trainer.json on
    --resume is one line; --train-langs matching nothing in an MT file is an error (it trained on German)."""
    import evaluate
    import retrieve
    import train
    from midalign.errors import CheckpointError, MidalignError

    data = write_tiny_data(tmp_path / "data")
    (tmp_path / "file").write_text("x")
    model = ["--model", str(tiny_chat_checkpoint)]
    with pytest.raises(MidalignError, match="is a file; choose a folder"):
        evaluate.main([*model, "--data", str(data["dev"]), "--out", str(tmp_path / "file")])
    with pytest.raises(MidalignError, match="is a file; choose a folder"):
        retrieve.main([*model, "--langs", "de", "fr", "--out", str(tmp_path / "file")])
    with pytest.raises(DataError, match="--comet-python .*: cannot import comet"):
        evaluate.main([*model, "--data", str(data["dev"]), "--comet-python", sys.executable, "--out",
                       str(tmp_path / "e")])
    assert not (tmp_path / "e").exists()  # nothing left behind by the checks

    latin1 = tmp_path / "train.de-en.jsonl"
    latin1.write_bytes(b'{"translation": {"de": "ok", "en": "ok"}}\n{"translation": {"de": "Gr\xfc\xdfe", "en": "hi"}}\n')
    with pytest.raises(DataError, match=r"train.de-en.jsonl:2: not UTF-8 text \(byte 68: b'\\xfc'\)"):
        train.main(tiny_args(tiny_chat_checkpoint, {**data, "train": latin1}, tmp_path / "u"))
    with pytest.raises(DataError, match=r"no task training examples \(task mt, languages \['fr'\]\)"):
        train.main(tiny_args(tiny_chat_checkpoint, data, tmp_path / "fr", "--train-langs", "fr"))

    out = tmp_path / "run"
    train.main(tiny_args(tiny_chat_checkpoint, data, out, "--max-steps", "2"))
    (out / "state" / "trainer.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="trainer.json: unreadable .*training state is damaged"):
        train.main(tiny_args(tiny_chat_checkpoint, data, out, "--max-steps", "4", "--resume"))


def test_a_batch_larger_than_the_data_is_said_and_estimated_as_what_it_holds(tiny_chat_checkpoint, tmp_path, capsys):
    """--batch-size beyond the task examples (8) and --align-batch-size beyond the distinct English
    sentences (6) draw all of them: said at start, and the memory estimate is that of the batch really
    drawn (it multiplied the flag's size before: thousands of GiB for a large flag)."""
    import train

    data = write_tiny_data(tmp_path / "data")
    memory = lambda err: next(l for l in err.splitlines() if l.startswith("[memory]"))
    train.main(tiny_args(tiny_chat_checkpoint, data, tmp_path / "big", "--max-steps", "1", "--batch-size", "100000",
                         "--align-batch-size", "100000"))
    big = capsys.readouterr().err
    assert "--batch-size 100000 exceeds the 8 task examples: each task micro-batch holds 8" in big
    assert "--align-batch-size 100000 exceeds the 6 distinct English sentences of the pairs" in big
    train.main(tiny_args(tiny_chat_checkpoint, data, tmp_path / "fit", "--max-steps", "1", "--batch-size", "8",
                         "--align-batch-size", "6"))
    fit = capsys.readouterr().err
    assert "exceeds" not in fit
    assert memory(big) == memory(fit) and "task 8 × " in memory(fit) and "alignment 12 × " in memory(fit)

