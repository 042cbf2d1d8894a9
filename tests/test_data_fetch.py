"""Dataset fetchers against a loopback HTTP server serving archives with each publisher's layout
(issue: the paper's datasets from their original distributions)."""

from __future__ import annotations

import hashlib
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


FIXTURES = Path(__file__).parent / "fixtures" / "publishers"  # real-file excerpts: see its README.md
LASER_CODES = {"cy": "cym", "jv": "jav", "sw": "swh", "ja": "jpn", "tl": "tgl", "da": "dan", "sv": "swe"}


def massive_file(locale: str) -> str:
    """The MASSIVE README's real en-US and de-DE records, as a train/dev/test file of `locale`."""
    en, de = (json.loads((FIXTURES / "massive" / f).read_text()) for f in ("en-US.jsonl", "de-DE.jsonl"))
    rows = [{**en, "locale": locale, "partition": "train"}, {**de, "locale": locale, "partition": "dev"},
            {**en, "locale": locale, "partition": "test"}]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


MASSIVE = {f"1.1/data/{loc}.jsonl": massive_file(loc) for loc in [*MASSIVE_LOCALES.values(), "zh-TW"]}
MASSIVE["1.1/LICENSE"] = "CC BY 4.0"
# The official answer format of the UNER targets (the official parser's `"Results": [` list).
UNER_TARGET = '{"Results": [{"TypeName": "PER", "Text": "Anna"}, {"TypeName": "LOC", "Text": "Lisboa"}]}'


def laser(lang: str) -> tuple[str, str]:
    code = LASER_CODES[lang]
    return tuple((FIXTURES / "tatoeba-laser" / f"tatoeba.{code}-eng.{side}").read_text(encoding="utf-8")
                 for side in (code, "eng"))


def uner_parquet(split: str) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": i, "inputs": f"Anna mora em Lisboa. ({split} {i})", "targets": UNER_TARGET,
             "dataset_name": "Uner-llm-instructions", "language": lang, "script": "Latn", "split": split}
            for i, lang in enumerate(["eng", "por", "zho", "dan", "swe"])]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def publishers_files(monkeypatch, files: dict[str, bytes]) -> None:
    """Let `files` stand for the publisher's MASSIVE 1.1 files (their sha256 as the recorded ones)."""
    monkeypatch.setattr(sources, "MASSIVE_SHA256", {name: hashlib.sha256(files[name]).hexdigest()
                                                    for name in sources.MASSIVE_SHA256})


@pytest.fixture()
def publisher(monkeypatch, tmp_path):
    files = {"/massive/amazon-massive-dataset-1.1.tar.gz": tar_gz(MASSIVE),
             "/flores/flores200_dataset.tar.gz": tar_gz({
                 "flores200_dataset/dev/eng_Latn.dev": "One.\nTwo.\n", "flores200_dataset/dev/deu_Latn.dev": "Eins.\nZwei.\n",
                 "flores200_dataset/devtest/eng_Latn.devtest": "Three.\n", "flores200_dataset/README": "readme"}),
             "/wmt/v.0.1.tar.gz": tar_gz({"wmt23-news-systems-v.0.1/xml/wmttest2023.ru-en.all.xml":
                                          (FIXTURES / "wmt23/xml/wmttest2023.ru-en.all.xml").read_text(encoding="utf-8"),
                                          "wmt23-news-systems-v.0.1/txt/README": "x"})}
    for lang in sources.TATOEBA_LANGS:  # OPUS names: en-swh.txt.zip → Tatoeba.en-swh.swh / .en
        code = sources.OPUS_CODES.get(lang, lang)
        a, b = sorted([code, "en"])
        side = dict(zip((code, "en"), laser(lang)))
        files[f"/opus/{a}-{b}.txt.zip"] = zip_bytes({f"Tatoeba.{a}-{b}.{a}": side[a], f"Tatoeba.{a}-{b}.{b}": side[b],
                                                     "README": "opus"})
    for path in (FIXTURES / "alma").rglob("*.*"):  # the publisher's human_written_data/<x>en/ files
        files[f"/alma/{path.relative_to(FIXTURES / 'alma')}"] = path.read_bytes()
    for split in ("train", "validation", "test"):
        files[f"/aya/{split}-00000-of-00001.parquet"] = uner_parquet(split)
    Publisher.files, Publisher.truncate_once, Publisher.requests = files, set(), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Publisher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(sources, "URLS", {
        "massive": f"{base}/massive/amazon-massive-dataset-1.1.tar.gz", "tatoeba": f"{base}/opus/{{pair}}.txt.zip",
        "flores": f"{base}/flores/flores200_dataset.tar.gz", "alma": f"{base}/alma/{{x}}en/{{file}}",
        "wmt23": f"{base}/wmt/v.0.1.tar.gz", "uner": f"{base}/aya/{{split}}-00000-of-00001.parquet"})
    monkeypatch.setattr(sources, "PUBLISHED", {})
    publishers_files(monkeypatch, {Path(k).name: v.encode() for k, v in MASSIVE.items()})
    yield tmp_path / "data"
    server.shutdown()


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def test_each_dataset_becomes_files_the_loaders_read(publisher, capsys):
    root = publisher
    [massive] = sources.ensure("massive", root, progress=False)
    assert sorted(p.name for p in massive.glob("*.jsonl"))[:3] == ["af-ZA.jsonl", "ar-SA.jsonl", "az-AZ.jsonl"]
    assert [ex.answer for ex in load_massive(massive / "de-DE.jsonl", "train")] == ["time: five am; date: this week"]
    assert [ex.answer for ex in load_massive(massive / "de-DE.jsonl", "dev")] == ["date: diese woche; time: fünf uhr morgens"]
    assert "CC BY 4.0" in capsys.readouterr().err  # licence and citation on first use

    [flores] = sources.ensure("flores", root, progress=False)
    assert (flores / "dev" / "deu_Latn.dev").read_text() == "Eins.\nZwei.\n" and (flores / "devtest" / "eng_Latn.devtest").is_file()

    [uner] = sources.ensure("uner", root, progress=False)
    [ex] = load_uner(uner / "test.pt.jsonl")
    assert ex.lang == "pt" and ex.answer == UNER_TARGET


def test_tatoeba_opus_names_and_the_filter_on_real_lines(publisher):
    sw, cy = sources.ensure("tatoeba", publisher, ["sw", "cy"], progress=False)
    assert ("/opus/en-swh.txt.zip", None) in Publisher.requests and ("/opus/cy-en.txt.zip", None) in Publisher.requests
    src, en = (lines(FIXTURES / "tatoeba-laser" / f"tatoeba.swh-eng.{s}") for s in ("swh", "eng"))
    kept = load_pairs(sw / "sw-en.tsv")
    # read by hand (fixture README): lines 27 and 37 hold two sentences; every other line is kept, in order
    expected = [Pair("sw", s, e) for n, (s, e) in enumerate(zip(src, en), 1) if n not in (27, 37)]
    assert kept == expected and len(kept) == 38
    assert len(load_pairs(cy / "cy-en.tsv")) == 40


def test_alma_real_layout_and_icelandic_dev(publisher):
    cs, is_ = sources.ensure("alma", publisher, ["cs", "is"], progress=False)
    assert ("/alma/csen/train.cs-en.cs", None) in Publisher.requests
    assert ("/alma/isen/test.is-en.json", None) in Publisher.requests  # no valid.is-en.json upstream
    train = load_parallel_jsonl(cs / "train.cs-en.jsonl", "cs", "en")
    src, en = (lines(FIXTURES / "alma/csen" / f"train.cs-en.{s}") for s in ("cs", "en"))
    assert [(ex.user, ex.answer) for ex in train] == list(zip(src, en))
    valid = json.loads((FIXTURES / "alma/csen/valid.cs-en.json").read_text(encoding="utf-8"))
    assert [ex.user for ex in load_parallel_jsonl(cs / "valid.cs-en.jsonl", "cs", "en")] == [r["translation"]["cs"] for r in valid]
    dev = json.loads((FIXTURES / "alma/isen/test.is-en.json").read_text(encoding="utf-8"))
    assert [ex.answer for ex in load_parallel_jsonl(is_ / "valid.is-en.jsonl", "is", "en")] == [r["translation"]["en"] for r in dev]
    assert load_pairs(cs / "pairs.tsv")[0] == Pair("cs", src[0], en[0])  # MT aligns on its own training pairs


def test_wmt23_xml_refA_counts(publisher):
    xml = (FIXTURES / "wmt23/xml/wmttest2023.ru-en.all.xml").read_bytes()
    src, tgt, rows = sources.wmt_xml_pairs(xml, "refA")
    # independent count: <seg> lines between each <ref … translator="refA"> and its </ref>
    text = xml.decode()
    refs = [block.split("</ref>")[0] for block in text.split('translator="refA">')[1:]]
    assert (src, tgt) == ("ru", "en") and len(rows) == sum(block.count("<seg ") for block in refs) > 0
    assert rows[0] == ("ТЕХНИЧЕСКИЙ РЕГЛАМЕНТ ЧЕМПИОНАТА РОССИИ ВФЛА В ПОМЕЩЕНИИ, ВСЕРОССИЙСКИЕ СОРЕВНОВАНИЯ В ПОМЕЩЕНИИ",
                       refs[0].split('<seg id="1">')[1].split("</seg>")[0])
    assert sources.wmt_xml_pairs(xml, "refB")[2] == []
    # the release archive must hold every X↔English direction: the excerpt archive has only ru-en
    with pytest.raises(DataError, match=r"no xml/wmttest2023\.de-en\.all\.xml"):
        sources.ensure("wmt23", publisher, progress=False)
    assert not (publisher / "wmt23").exists()


def test_wmt23_txt_layout_per_direction(tmp_path):
    [wmt] = sources.ensure("wmt23", tmp_path, progress=False, local=FIXTURES / "wmt23")
    names = sorted(p.stem.split(".")[1] for p in wmt.glob("test.*.jsonl"))
    assert names == sorted(d for d in sources.WMT23_DIRECTIONS if d not in sources.WMT23_MISSING)
    txt = FIXTURES / "wmt23/txt"
    for d, ref in (("ru-en", "refA"), ("en-he", "refB"), ("he-en", "refB")):
        s, t = d.split("-")
        pairs = list(zip(lines(txt / f"sources/generaltest2023.{d}.src.{s}"),
                         lines(txt / f"references/generaltest2023.{d}.ref.{ref}.{t}")))
        got = [(ex.user, ex.answer) for ex in load_parallel_jsonl(wmt / f"test.{d}.jsonl", s, t)]
        assert got == [(a, b) for a, b in pairs if a.strip() and b.strip()] and got


def test_wmt23_hub_copy_adds_is_and_reverses_en_cs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    hub, txt = tmp_path / "WMT23-Test", FIXTURES / "wmt23/txt"
    for d in sources.WMT23_DIRECTIONS:
        if d == "cs-en":
            continue
        s, t = d.split("-")
        have = (txt / f"sources/generaltest2023.{d}.src.{s}").is_file()
        a = lines(txt / f"sources/generaltest2023.{d}.src.{s}") if have else [f"{s} {i}" for i in range(3)]
        b = lines(txt / f"references/generaltest2023.{d}.ref.refA.{t}") if have else [f"{t} {i}" for i in range(3)]
        (hub / d).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist([{d: {s: x, t: y}} for x, y in zip(a, b)]),
                       hub / d / "test-00000-of-00001-0123abcd.parquet")
    [wmt] = sources.ensure("wmt23-hub", tmp_path / "data", progress=False, local=hub)
    assert sorted(p.stem.split(".")[1] for p in wmt.glob("test.*.jsonl")) == sorted(sources.WMT23_DIRECTIONS)
    cs_en = load_parallel_jsonl(wmt / "test.cs-en.jsonl", "cs", "en")
    en_cs = lines(txt / "sources/generaltest2023.en-cs.src.en")
    assert [ex.answer for ex in cs_en] == en_cs  # cs→en is en→cs read backwards, as the official script


def test_from_is_refused_for_sources_without_a_local_layout(tmp_path):
    with pytest.raises(DataError, match="--from reads a local copy of massive, tatoeba, alma, wmt23, wmt23-hub only"):
        sources.ensure("flores", tmp_path, progress=False, local=FIXTURES / "massive")


MASSIVE_EXCERPT = FIXTURES / "massive" / "1.1" / "data"  # the first 12 records of each real locale file


def excerpt_tarball(path: Path, leave_out: tuple[str, ...] = ()) -> Path:
    """The excerpts in the publisher's layout, 1.1/data/<locale>.jsonl, as a .tar.gz."""
    with tarfile.open(path, "w:gz") as t:
        for f in sorted(MASSIVE_EXCERPT.glob("*.jsonl")):
            if f.name not in leave_out:
                t.add(f, arcname=f"1.1/data/{f.name}")
    return path


def test_massive_from_the_publishers_tarball_or_its_unpacked_folder(tmp_path, monkeypatch, capsys):
    tarball = excerpt_tarball(tmp_path / "amazon-massive-dataset-1.1.tar.gz")
    real = sorted(MASSIVE_EXCERPT.glob("*.jsonl"))
    assert len(real) == 20
    publishers_files(monkeypatch, {f.name: f.read_bytes() for f in real})
    for i, local in enumerate([tarball, FIXTURES / "massive"]):
        [massive] = sources.ensure("massive", tmp_path / f"data{i}", progress=False, local=local)
        assert [(massive / f.name).read_bytes() for f in real] == [f.read_bytes() for f in real]
    # read by hand in the real cy-GB.jsonl: record 0 is a test utterance with two slots, record 1 a train one
    test = load_massive(massive / "cy-GB.jsonl", "test")
    assert test[0].user == "deffra fi am pump y bore wythnos yma"
    assert test[0].answer == "time: pump y bore; date: wythnos yma"
    assert [len(load_massive(massive / "cy-GB.jsonl", p)) for p in ("train", "dev", "test")] == [8, 1, 3]
    with pytest.raises(DataError, match=r"tar\.gz: not a folder$"):
        sources.ensure("alma", tmp_path / "data3", progress=False, local=tarball)


def test_a_massive_tarball_that_is_not_the_publishers_is_refused(tmp_path):
    """The excerpts are not the publisher's 16,521-record files: with the recorded sha256 a tarball of
    them is refused, naming the files; the same excerpts as a folder are accepted, the difference said."""
    tarball = excerpt_tarball(tmp_path / "amazon-massive-dataset-1.1.tar.gz")
    with pytest.raises(DataError, match=r"af-ZA.jsonl, ar-SA.jsonl, .*zh-CN.jsonl differ from the publisher's "
                                        r"MASSIVE 1.1 files \(sha256\).*replace it with an intact copy"):
        sources.ensure("massive", tmp_path / "data", progress=False, local=tarball)
    assert not (tmp_path / "data" / "massive").exists()


def test_a_damaged_or_incomplete_massive_copy_is_an_error_naming_what_is_wrong(tmp_path, monkeypatch, capsys):
    publishers_files(monkeypatch, {f.name: f.read_bytes() for f in MASSIVE_EXCERPT.glob("*.jsonl")})
    damaged = excerpt_tarball(tmp_path / "damaged.tar.gz")
    data = bytearray(damaged.read_bytes())
    middle = len(data) // 2
    data[middle - 2048:middle + 2048] = bytes(4096)  # 4 KB zeroed mid-file
    damaged.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"damaged.tar.gz: (damaged archive|not a readable archive)"):
        sources.ensure("massive", tmp_path / "d1", progress=False, local=damaged)
    partial = excerpt_tarball(tmp_path / "partial.tar.gz", leave_out=("ru-RU.jsonl", "zh-CN.jsonl"))
    with pytest.raises(DataError, match=r"partial.tar.gz: no ru-RU.jsonl, zh-CN.jsonl"):
        sources.ensure("massive", tmp_path / "d2", progress=False, local=partial)
    folder = tmp_path / "copy" / "1.1" / "data"
    folder.mkdir(parents=True)
    for f in MASSIVE_EXCERPT.glob("*.jsonl"):
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "sw-KE.jsonl").write_text("")
    with pytest.raises(DataError, match=r"sw-KE.jsonl: file is empty"):
        sources.ensure("massive", tmp_path / "d3", progress=False, local=folder.parent.parent)
    (folder / "sw-KE.jsonl").write_bytes((MASSIVE_EXCERPT / "sw-KE.jsonl").read_bytes().replace(b"[date : ", b"[date ", 1))
    with pytest.raises(DataError, match=r"sw-KE.jsonl:\d+: annot_utt .* not MASSIVE's `\[type : value\]`"):
        sources.ensure("massive", tmp_path / "d4", progress=False, local=folder.parent.parent)
    for d in ("d1", "d2", "d3", "d4"):
        assert not (tmp_path / d / "massive").exists()
    (folder / "sw-KE.jsonl").write_bytes((MASSIVE_EXCERPT / "sw-KE.jsonl").read_bytes().replace(b"wiki", b"juma", 1))
    [massive] = sources.ensure("massive", tmp_path / "d5", progress=False, local=folder.parent.parent)
    assert "1 of the paper's 20 locale files" in capsys.readouterr().err
    assert json.loads((massive / "manifest.json").read_text())["sources"]["not the publisher's files"] == "sw-KE.jsonl"


def test_tatoeba_from_lasers_test_set_folder(tmp_path):
    sw, ja = sources.ensure("tatoeba", tmp_path, ["sw", "ja"], progress=False, local=FIXTURES / "tatoeba-laser")
    src, en = (lines(FIXTURES / "tatoeba-laser" / f"tatoeba.swh-eng.{s}") for s in ("swh", "eng"))
    # the same filter as the OPUS files: lines 27 and 37 hold two sentences (read by hand)
    assert load_pairs(sw / "sw-en.tsv") == [Pair("sw", s, e) for n, (s, e) in enumerate(zip(src, en), 1)
                                            if n not in (27, 37)]
    assert load_pairs(ja / "ja-en.tsv")[0].lang == "ja"  # LASER's jpn
    with pytest.raises(DataError, match="no LASER Tatoeba code known for 'xx'"):
        sources.ensure("tatoeba", tmp_path, ["xx"], progress=False, local=FIXTURES / "tatoeba-laser")


def test_a_folder_prepared_from_elsewhere_is_not_reused_for_from(publisher):
    sources.ensure("tatoeba", publisher, ["sw"], progress=False)  # from OPUS
    with pytest.raises(DataError, match="was prepared from .*opus.* delete"):
        sources.ensure("tatoeba", publisher, ["sw"], progress=False, local=FIXTURES / "tatoeba-laser")


def test_the_slot_experiment_runs_offline_from_local_copies(tiny_chat_checkpoint, tmp_path, monkeypatch):
    """`fetch --from` once, then the design card's `train.py --task slot` needs no network."""
    import train
    from midalign.data.__main__ import main as fetch_main

    monkeypatch.setattr(sources, "URLS", {k: "http://127.0.0.1:9/unreachable" for k in sources.URLS})
    data = tmp_path / "data"
    fetch_main(["fetch", "massive", "--data-dir", str(data), "--from", str(FIXTURES / "massive")])
    fetch_main(["fetch", "tatoeba", "--langs", "cy", "jv", "ja", "sw", "tl", "--data-dir", str(data), "--from",
                str(FIXTURES / "tatoeba-laser")])
    out = tmp_path / "run"
    train.main(["--task", "slot", "--align-layer", "2", "--data-dir", str(data), "--model", str(tiny_chat_checkpoint),
                "--max-steps", "1", "--batch-size", "2", "--align-batch-size", "4", "--grad-accum", "2",
                "--out", str(out)])
    config = json.loads((out / "config.json").read_text())
    assert [Path(p).name for p in config["train_data"]] == ["ar-SA.jsonl", "en-US.jsonl", "es-ES.jsonl", "ru-RU.jsonl",
                                                            "zh-CN.jsonl"]
    assert (out / "last" / "adapter_model.safetensors").is_file()


def test_a_direction_without_rows_is_an_error(tmp_path):
    copy = tmp_path / "wmt23"
    import shutil

    shutil.copytree(FIXTURES / "wmt23", copy)
    (copy / "txt/references/generaltest2023.de-en.ref.refA.en").write_text("\n" * 8)
    (copy / "txt/sources/generaltest2023.de-en.src.de").write_text("\n" * 8)
    with pytest.raises(DataError, match=r"generaltest2023\.de-en\.ref\.refA\.en: no segments with a reference for de-en"):
        sources.ensure("wmt23", tmp_path / "data", progress=False, local=copy)
    assert not (tmp_path / "data" / "wmt23").exists()


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
    assert str(e.value).startswith("1 of the publisher's files cannot be downloaded here (cannot reach http://127.0.0.1:9/")
    assert f": http://127.0.0.1:9/flores200_dataset.tar.gz (save it as {manual})" in str(e.value)
    manual.write_bytes(tar_gz({"flores200_dataset/dev/eng_Latn.dev": "One.\n"}))  # placed by hand
    [flores] = sources.ensure("flores", tmp_path, progress=False)
    assert (flores / "dev" / "eng_Latn.dev").read_text() == "One.\n"


def test_offline_the_slot_experiment_names_every_missing_file_at_once_and_the_from_way(monkeypatch, tmp_path):
    """It named the MASSIVE tarball alone, then one Tatoeba language per try, and never --from."""
    monkeypatch.setattr(sources, "URLS", {k: f"http://127.0.0.1:9/{k}/" + v.rsplit("/", 1)[-1]
                                          for k, v in sources.URLS.items()})
    with pytest.raises(DataError) as e:
        EXPERIMENTS["slot"].train_files(tmp_path)
    message, downloads = str(e.value), tmp_path / "downloads"
    assert message.startswith("6 of the publisher's files cannot be downloaded here (cannot reach "
                              f"http://127.0.0.1:9/massive/amazon-massive-dataset-1.1.tar.gz (")
    assert f") and are not in {downloads}: http://127.0.0.1:9/massive/" in message
    for url, name in [("massive/amazon-massive-dataset-1.1.tar.gz", "amazon-massive-dataset-1.1.tar.gz"),
                      ("tatoeba/cy-en.txt.zip", "tatoeba-cy-en.txt.zip"), ("tatoeba/en-jv.txt.zip", "tatoeba-en-jv.txt.zip"),
                      ("tatoeba/en-ja.txt.zip", "tatoeba-en-ja.txt.zip"), ("tatoeba/en-swh.txt.zip", "tatoeba-en-swh.txt.zip"),
                      ("tatoeba/en-tl.txt.zip", "tatoeba-en-tl.txt.zip")]:
        assert f"http://127.0.0.1:9/{url} (save it as {downloads / name})" in message
    assert message.endswith(
        f"or prepare the data from local copies: python -m midalign.data fetch massive --data-dir {tmp_path} --from "
        f"<MASSIVE 1.1's tarball or its unpacked folder>; python -m midalign.data fetch tatoeba --langs cy jv ja sw tl "
        f"--data-dir {tmp_path} --from <LASER's Tatoeba test set folder, data/tatoeba/v1>")
    assert "\n" not in message


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
    de, en = (lines(FIXTURES / "alma/deen" / f"train.de-en.{s}") for s in ("de", "en"))
    assert load_pairs(pairs[1])[2] == Pair("de", de[2], en[2])  # aligned on its own pairs
    assert EXPERIMENTS["mt"].train_files(publisher, task=False) == ([], [], pairs)
    sources.ensure("wmt23", publisher, progress=False, local=FIXTURES / "wmt23")
    names = [p.name.split(".")[1] for p in EXPERIMENTS["mt"].test_files(publisher)]
    assert names == ["de-en", "en-cs", "en-de", "en-he", "en-ja", "en-ru", "en-uk", "en-zh", "he-en", "ja-en",
                     "ru-en", "uk-en", "zh-en"]
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
    assert scores["group_members"] == {"supervised": ["ar", "en", "es", "ru", "zh"], "aligned": ["cy", "ja", "jv", "sw", "tl"],  # in test-set order
                                       "transfer": ["af", "az", "de", "el", "fr", "hi", "is", "th", "tr", "ur"]}


def dry_run(capsys, *argv: str) -> dict:
    import train

    train.main(["--dry-run", *argv])
    return json.loads(capsys.readouterr().out)


def test_presets_resolve_as_the_paper(publisher, tiny_checkpoint, capsys):
    """τ by model family (App. D.1), the paper preset with an experiment, every flag overriding it."""
    family = json.loads((tiny_checkpoint / "config.json").read_text())["model_type"]
    settings = dry_run(capsys, "--experiment", "slot", "--model", str(tiny_checkpoint), "--data-dir", str(publisher))
    assert settings["temperature"] == {"llama": 0.1, "qwen2": 1.5}[family]
    assert settings["task"] == "slot" and settings["align_layer"] == 2 and settings["batch_size"] == 32
    assert settings["align_langs"] == ["cy", "jv", "ja", "sw", "tl"]
    assert not (publisher / "massive").exists()  # a dry run downloads nothing
    settings = dry_run(capsys, "--experiment", "slot", "--align-only", "--temperature", "0.5",
                       "--model", str(tiny_checkpoint), "--data-dir", str(publisher))
    assert settings["align_only"] and settings["temperature"] == 0.5 and settings["train_langs"] is None


def test_experiment_alignment_only_trains_no_task_and_holds_out_dev_pairs(publisher, tiny_chat_checkpoint, tmp_path):
    import train

    out = tmp_path / "align"
    train.main(["--experiment", "slot", "--align-only", "--data-dir", str(publisher), "--model",
                str(tiny_chat_checkpoint), "--max-steps", "2", "--eval-every", "2", "--align-batch-size", "4",
                "--grad-accum", "2", "--out", str(out)])
    config = json.loads((out / "config.json").read_text())
    assert config["align_only"] and config["micro_batches"] == ["align", "align"] and config["train_data"] is None
    assert not (publisher / "massive").exists()  # the task data is not even fetched
    rows = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert all("task_loss" not in r for r in rows if "eval" not in r)
    [ev] = [r for r in rows if "eval" in r]
    assert ev["dev_loss"] == ev["dev_align_loss"] > 0  # alignment dev pairs held out from the Tatoeba data


def test_hold_out_is_per_language_and_disjoint():
    from midalign.data.assemble import hold_out

    pairs = [Pair(l, f"{l} {i}", f"en {i}") for l in ("cy", "sw") for i in range(40)] + [Pair("jv", "jv 0", "en 0")]
    kept, dev = hold_out(pairs, seed=0)
    assert sorted(kept + dev, key=str) == sorted(pairs, key=str) and not set(kept) & set(dev)
    assert sorted(p.lang for p in dev) == ["cy"] * 4 + ["sw"] * 4  # 10% of 40; a language with 1 pair keeps it
    assert hold_out(pairs, seed=0) == (kept, dev)


def test_a_run_without_dev_data_says_so_and_keeps_the_last_adapter(tiny_chat_checkpoint, tmp_path, capfd):
    import train
    from conftest import write_tiny_data

    data = write_tiny_data(tmp_path / "data")
    out = tmp_path / "run"
    train.main(["--model", str(tiny_chat_checkpoint), "--train-data", str(data["train"]), "--align-data",
                str(data["pairs"]), "--align-layer", "2", "--batch-size", "2", "--align-batch-size", "4",
                "--grad-accum", "2", "--max-steps", "4", "--eval-every", "2", "--patience", "1", "--out", str(out)])
    assert "no dev data" in capfd.readouterr().err
    rows = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # no evaluations, no early stop after `patience`
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (out / "best" / name).read_bytes() == (out / "last" / name).read_bytes()
