"""Dataset fetchers against a loopback HTTP server serving archives with each publisher's layout
(issue: the paper's datasets from their original distributions)."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import tiny_args, write_tiny_data
from midalign.data import sources
from midalign.data.experiments import EXPERIMENTS, MASSIVE_LOCALES
from midalign.data.tasks import Pair, load_massive, load_pairs, load_parallel_jsonl, load_uner
from midalign.errors import DataError

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))


class Publisher(BaseHTTPRequestHandler):
    """GET with `Range: bytes=N-` support; paths in `truncate_once` send half the body the first time."""
    files: dict[str, bytes] = {}
    truncate_once: set[str] = set()
    requests: list[tuple[str, str | None]] = []

    def do_GET(self):
        body = self.files.get(self.path)
        self.requests.append((self.path, self.headers.get("Range")))
        if body is None:
            self.send_error(404)
            return
        start = int(self.headers["Range"][len("bytes="):].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path in self.truncate_once:
            self.truncate_once.discard(self.path)
            self.wfile.write(body[start:start + (len(body) - start) // 2])
            return  # the connection closes early: a truncated download
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


def tar_gz(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return buf.getvalue()


def massive_row(locale: str, partition: str, utt: str, annot: str) -> str:
    return json.dumps({"id": "1", "locale": locale, "partition": partition, "scenario": "alarm",
                       "intent": "alarm_set", "utt": utt, "annot_utt": annot}, ensure_ascii=False)


MASSIVE = {f"1.1/data/{loc}.jsonl": "\n".join([
    massive_row(loc, "train", "wake me up at five am", "wake me up at [time : five am]"),
    massive_row(loc, "dev", "olly quiet", "olly quiet"),
    massive_row(loc, "test", "set an alarm for monday", "set an alarm for [date : monday]")]) + "\n"
    for loc in [*MASSIVE_LOCALES.values(), "zh-TW"]}
MASSIVE["1.1/LICENSE"] = "CC BY 4.0"
TATOEBA_LINES = [("Bore da.", "Good morning."), ("", "Empty."), ("Diolch. Hwyl!", "Thanks. Bye!"),
                 ("Rwy'n hoffi te.", "I like tea."), ("Mae'n braf.", "It is nice.")]
WMT_XML = """<?xml version="1.0" encoding="utf-8"?>
<dataset id="wmttest2023"><collection id="general">
 <doc id="d1" origlang="de"><src lang="de"><p><seg id="1">Hallo Welt.</seg><seg id="2">Zweiter Satz.</seg>
   <seg id="3">Ohne Referenz.</seg></p></src>
  <ref lang="en" translator="A"><p><seg id="1">Hello world.</seg><seg id="2">Second sentence.</seg><seg id="3"></seg></p></ref>
  <hyp system="X" language="en"><p><seg id="1">Hi world.</seg></p></hyp></doc>
 <doc id="d2" origlang="de" testsuite="ts"><src lang="de"><p><seg id="1">Testsuite.</seg></p></src>
  <ref lang="en" translator="A"><p><seg id="1">Test suite.</seg></p></ref></doc>
</collection></dataset>"""


def uner_parquet(split: str) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": i, "inputs": f"Find the entities: Anna lives in Lisbon. ({split} {i})",
             "targets": '[{"type": "PER", "text": "Anna"}, {"type": "LOC", "text": "Lisbon"}]',
             "dataset_name": "Uner-llm-instructions", "language": lang, "script": "Latn", "split": split}
            for i, lang in enumerate(["eng", "por", "zho", "dan", "swe"])]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


@pytest.fixture()
def publisher(monkeypatch, tmp_path):
    files = {"/massive/amazon-massive-dataset-1.1.tar.gz": tar_gz(MASSIVE),
             "/flores/flores200_dataset.tar.gz": tar_gz({
                 "flores200_dataset/dev/eng_Latn.dev": "One.\nTwo.\n", "flores200_dataset/dev/deu_Latn.dev": "Eins.\nZwei.\n",
                 "flores200_dataset/devtest/eng_Latn.devtest": "Three.\n", "flores200_dataset/README": "readme"}),
             "/wmt/v.0.1.tar.gz": tar_gz({"wmt23-news-systems-v.0.1/xml/wmttest2023.de-en.all.xml": WMT_XML,
                                          "wmt23-news-systems-v.0.1/xml/wmttest2023.cs-uk.all.xml": WMT_XML,
                                          "wmt23-news-systems-v.0.1/txt/README": "x"})}
    for lang in sources.TATOEBA_LANGS:
        a, b = sorted([lang, "en"])
        side = {lang: "\n".join(s for s, _ in TATOEBA_LINES), "en": "\n".join(e for _, e in TATOEBA_LINES)}
        files[f"/opus/{a}-{b}.txt.zip"] = zip_bytes({f"Tatoeba.{a}-{b}.{a}": side[a] + "\n",
                                                     f"Tatoeba.{a}-{b}.{b}": side[b] + "\n", "README": "opus"})
    for x in sources.ALMA_LANGS:
        for split in ("train", "valid"):
            rows = [{"translation": {x: f"{x} sentence {i}", "en": f"English sentence {i}"}} for i in range(3)]
            files[f"/alma/{split}/{x}-en/{split}.{x}-en.json"] = "\n".join(map(json.dumps, rows)).encode()
    for split in ("train", "validation", "test"):
        files[f"/aya/{split}-00000-of-00001.parquet"] = uner_parquet(split)
    Publisher.files, Publisher.truncate_once, Publisher.requests = files, set(), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Publisher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(sources, "URLS", {
        "massive": f"{base}/massive/amazon-massive-dataset-1.1.tar.gz", "tatoeba": f"{base}/opus/{{pair}}.txt.zip",
        "flores": f"{base}/flores/flores200_dataset.tar.gz", "alma": f"{base}/alma/{{split}}/{{x}}-en/{{split}}.{{x}}-en.json",
        "wmt23": f"{base}/wmt/v.0.1.tar.gz", "uner": f"{base}/aya/{{split}}-00000-of-00001.parquet"})
    monkeypatch.setattr(sources, "PUBLISHED", {})
    yield tmp_path / "data"
    server.shutdown()


def test_each_dataset_becomes_files_the_loaders_read(publisher, capsys):
    root = publisher
    [massive] = sources.ensure("massive", root, progress=False)
    assert sorted(p.name for p in massive.glob("*.jsonl"))[:3] == ["af-ZA.jsonl", "ar-SA.jsonl", "az-AZ.jsonl"]
    assert [ex.answer for ex in load_massive(massive / "de-DE.jsonl", "train")] == ["time: five am"]
    assert "CC BY 4.0" in capsys.readouterr().err  # licence and citation on first use

    [cy] = sources.ensure("tatoeba", root, ["cy"], progress=False)
    # empty and multi-sentence translations dropped (either side), as the paper filtered Tatoeba
    assert load_pairs(cy / "cy-en.tsv") == [Pair("cy", "Bore da.", "Good morning."), Pair("cy", "Rwy'n hoffi te.", "I like tea."),
                                            Pair("cy", "Mae'n braf.", "It is nice.")]

    [flores] = sources.ensure("flores", root, progress=False)
    assert (flores / "dev" / "deu_Latn.dev").read_text() == "Eins.\nZwei.\n" and (flores / "devtest" / "eng_Latn.devtest").is_file()

    [de] = sources.ensure("alma", root, ["de"], progress=False)
    assert [ex.user for ex in load_parallel_jsonl(de / "train.de-en.jsonl", "de", "en")] == [f"de sentence {i}" for i in range(3)]
    assert load_pairs(de / "pairs.tsv")[0] == Pair("de", "de sentence 0", "English sentence 0")

    [wmt] = sources.ensure("wmt23", root, progress=False)
    assert sorted(p.name for p in wmt.glob("*.jsonl")) == ["test.de-en.jsonl"]  # X↔en pairs only
    got = [(ex.user, ex.answer) for ex in load_parallel_jsonl(wmt / "test.de-en.jsonl", "de", "en")]
    assert got == [("Hallo Welt.", "Hello world."), ("Zweiter Satz.", "Second sentence.")]  # no testsuite, no empty ref

    [uner] = sources.ensure("uner", root, progress=False)
    [ex] = load_uner(uner / "test.pt.jsonl")
    assert ex.lang == "pt" and json.loads(ex.answer)[1] == {"type": "LOC", "text": "Lisbon"}


def test_truncated_download_is_reported_then_resumed(publisher):
    path = "/flores/flores200_dataset.tar.gz"
    Publisher.truncate_once = {path}
    with pytest.raises(DataError, match=r"truncated download .* run the same command again to resume"):
        sources.ensure("flores", publisher, progress=False)
    assert not (publisher / "flores200").exists()
    part = publisher / "downloads" / "flores200_dataset.tar.gz.part"
    half = part.stat().st_size
    assert 0 < half < len(Publisher.files[path])
    sources.ensure("flores", publisher, progress=False)
    assert Publisher.requests[-1] == (path, f"bytes={half}-")  # resumed, not restarted
    assert (publisher / "flores200" / "dev" / "eng_Latn.dev").is_file() and not part.exists()


def test_published_checksum_mismatch_deletes_the_download(publisher, monkeypatch):
    monkeypatch.setattr(sources, "PUBLISHED", {"v.0.1.tar.gz": ("md5", "0" * 32)})
    with pytest.raises(DataError, match=r"md5 [0-9a-f]{32} does not match the published 0{32}"):
        sources.ensure("wmt23", publisher, progress=False)
    assert not list((publisher / "downloads").glob("v.0.1*")) and not (publisher / "wmt23").exists()


def test_manifest_catches_a_changed_file_on_a_later_load(publisher):
    [massive] = sources.ensure("massive", publisher, progress=False)
    manifest = json.loads((massive / "manifest.json").read_text())
    assert manifest["sources"] == {"amazon-massive-dataset-1.1.tar.gz": sources.URLS["massive"]}
    assert len(manifest["files"]["de-DE.jsonl"]) == 64
    (massive / "de-DE.jsonl").write_text("edited\n")
    with pytest.raises(DataError, match=r"de-DE.jsonl: missing or changed since it was downloaded"):
        sources.ensure("massive", publisher, progress=False)


def test_offline_fails_fast_naming_the_address_and_the_manual_path(monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "URLS", {**sources.URLS, "flores": "http://127.0.0.1:9/flores200_dataset.tar.gz"})
    start = time.perf_counter()
    with pytest.raises(DataError) as e:
        sources.ensure("flores", tmp_path, progress=False)
    assert time.perf_counter() - start < 5
    manual = tmp_path / "downloads" / "flores200_dataset.tar.gz"
    assert "cannot reach http://127.0.0.1:9/flores200_dataset.tar.gz" in str(e.value) and str(manual) in str(e.value)
    manual.write_bytes(tar_gz({"flores200_dataset/dev/eng_Latn.dev": "One.\n"}))  # placed by hand
    [flores] = sources.ensure("flores", tmp_path, progress=False)
    assert (flores / "dev" / "eng_Latn.dev").read_text() == "One.\n"


def test_cli_fetch_and_list(publisher, monkeypatch, capsys):
    from midalign.data.__main__ import main

    main(["fetch", "tatoeba", "--langs", "sw", "--data-dir", str(publisher)])
    assert capsys.readouterr().out.strip() == f"tatoeba: {publisher / 'tatoeba' / 'sw'}"
    main(["list"])
    assert "CC BY-SA 4.0" in capsys.readouterr().out


def test_slot_experiment_is_one_command(publisher, tiny_chat_checkpoint, tmp_path):
    import train

    out = tmp_path / "run"
    train.main(["--experiment", "slot", "--data-dir", str(publisher), "--model", str(tiny_chat_checkpoint),
                "--max-steps", "2", "--eval-every", "2", "--batch-size", "5", "--align-batch-size", "2",
                "--grad-accum", "2", "--align-layer", "2", "--out", str(out)])
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "slot" and config["train_langs"] == ["ar", "en", "es", "ru", "zh"]
    assert [Path(p).name for p in config["train_data"]] == ["ar-SA.jsonl", "en-US.jsonl", "es-ES.jsonl", "ru-RU.jsonl", "zh-CN.jsonl"]
    assert sorted(Path(p).name for p in config["align_data"]) == ["cy-en.tsv", "ja-en.tsv", "jv-en.tsv", "sw-en.tsv", "tl-en.tsv"]
    assert config["preset"] is None and config["epochs"] == 5 and config["pool"] == "mean"  # the paper preset
    assert (out / "last" / "adapter_model.safetensors").is_file()


def test_mt_and_json_experiments_select_the_papers_files(publisher):
    train, dev, pairs = EXPERIMENTS["mt"].train_files(publisher)
    assert [p.name for p in train] == [f"train.{x}-en.jsonl" for x in ["cs", "de", "is", "ru", "zh"]]
    assert [p.name for p in dev] == [f"valid.{x}-en.jsonl" for x in ["cs", "de", "is", "ru", "zh"]]
    assert load_pairs(pairs[1])[2] == Pair("de", "de sentence 2", "English sentence 2")  # aligned on its own pairs
    assert [p.name for p in EXPERIMENTS["mt"].test_files(publisher)] == ["test.de-en.jsonl"]
    train, dev, pairs = EXPERIMENTS["json"].train_files(publisher)
    assert [p.name for p in train] == ["train.en.jsonl", "train.pt.jsonl", "train.zh.jsonl"]
    assert [p.name for p in pairs] == ["da-en.tsv", "sv-en.tsv"]
    with pytest.raises(DataError, match=r"lacks .*test.hr.jsonl"):  # the served parquet has no Croatian
        EXPERIMENTS["json"].test_files(publisher)


def test_evaluate_experiment_groups_supervised_aligned_and_transfer(publisher, tiny_chat_checkpoint, tmp_path):
    import evaluate

    out = tmp_path / "eval"
    evaluate.main(["--experiment", "slot", "--data-dir", str(publisher), "--model", str(tiny_chat_checkpoint),
                   "--max-new-tokens", "4", "--out", str(out)])
    scores = json.loads((out / "scores.json").read_text())
    assert sorted(scores["per_language"]) == sorted(EXPERIMENTS["slot"].test_langs)  # zh = zh-CN only
    assert scores["n_examples"] == 20  # one test utterance per locale
    assert scores["group_members"] == {"supervised": ["ar", "en", "es", "ru", "zh"], "aligned": ["cy", "jv", "ja", "sw", "tl"],
                                       "transfer": ["af", "az", "de", "el", "fr", "hi", "is", "th", "tr", "ur"]}
