"""The paper's datasets from their publishers (docs/method.md §8), as files midalign's loaders read.

    python -m midalign.data list
    python -m midalign.data fetch massive tatoeba --langs cy jv ja sw tl
    python -m midalign.data fetch wmt23 --data-dir /data/midalign
    python -m midalign.data fetch alma --from ALMA/human_written_data   # a local copy of the publisher's files

Each fetcher downloads (midalign.data.fetch: resumable, checked) into `<root>/downloads/`, keeps only
what the experiments read, in midalign's formats, in `<root>/<name>/` (built in a temp folder and
renamed), and records every file's sha256 in `<root>/<name>/manifest.json`, checked on each later use.
`<root>` is --data-dir, else `$MIDALIGN_CACHE/datasets`. Without network, put the publisher's file
(its name is in the error) in `<root>/downloads/` by hand and run the same command, or pass `--from
DIR`, a folder laid out as the publisher's repository is (ALMA: `<x>en/train.<x>-en.<x>`; WMT23:
`txt/sources/…` and `txt/references/…`, or `xml/…`; the hub copy of WMT23: `<src>-<tgt>/test-*.parquet`;
MASSIVE: its tarball, or a folder holding `1.1/data/<locale>.jsonl`; Tatoeba: LASER's test set,
`tatoeba.<xxx>-eng.<xxx>` and `.eng`, a smaller sample of the paper's OPUS release).

| name    | publisher's file                                | becomes                                     |
|---------|-------------------------------------------------|---------------------------------------------|
| massive | MASSIVE 1.1 tarball (Amazon); --from: the tarball or its unpacked folder | massive/<locale>.jsonl |
| tatoeba | OPUS Tatoeba v2021-07-22 moses zip per pair; --from: LASER's Tatoeba test set folder | tatoeba/<xx>/<xx>-en.tsv (lang, sentence, en) |
| flores  | FLORES-200 tarball (Meta, NLLB)                 | flores200/dev/<code>.dev, devtest/…         |
| alma    | ALMA human-written train text + valid JSON (GitHub) | alma/<xx>/{train,valid}.<xx>-en.jsonl, pairs.tsv |
| wmt23   | WMT23 general test XML or txt (wmt-conference)  | wmt23/test.<src>-<tgt>.jsonl                |
| wmt23-hub | the official evaluation's copy (haoranxu/WMT23-Test, parquet) | wmt23-hub/test.<src>-<tgt>.jsonl: adds is↔en, cs→en |
| uner    | Aya collection templated_uner_llm parquet (HF)  | uner/{train,validation,test}.<xx>.jsonl     |
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tarfile
import xml.etree.ElementTree as ET
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

from midalign.cache import cache_dir
from midalign.data.fetch import CHUNK, Manifest, OfflineError, download
from midalign.data.tasks import load_massive
from midalign.errors import DataError
from midalign.io import atomic_dir

# Publishers' addresses (tests point these at a loopback server).
URLS = {
    "massive": "https://amazon-massive-nlu-dataset.s3.amazonaws.com/amazon-massive-dataset-1.1.tar.gz",
    "tatoeba": "https://object.pouta.csc.fi/OPUS-Tatoeba/v2021-07-22/moses/{pair}.txt.zip",
    "flores": "https://dl.fbaipublicfiles.com/nllb/flores200_dataset.tar.gz",
    "alma": "https://raw.githubusercontent.com/fe1ixxu/ALMA/master/human_written_data/{x}en/{file}",
    "wmt23": "https://github.com/wmt-conference/wmt23-news-systems/archive/refs/tags/v.0.1.tar.gz",
    "uner": "https://huggingface.co/datasets/CohereForAI/aya_collection/resolve/main/templated_uner_llm/{split}-00000-of-00001.parquet",
}
HUB_WMT23 = "haoranxu/WMT23-Test"
# the sources whose builders read a local copy of the publisher's files (--from); massive also its tarball
LOCAL_COPIES = ("massive", "tatoeba", "alma", "wmt23", "wmt23-hub")
# Checksums the publisher states (sacrebleu's registry for WMT23); other files are pinned on first download.
PUBLISHED = {"v.0.1.tar.gz": ("md5", "63576405e4ce07130a19ad76ba7eb75b")}
ALMA_LANGS = ["cs", "de", "is", "ru", "zh"]
TATOEBA_LANGS = ["cy", "jv", "ja", "sw", "tl", "da", "sv"]  # the paper's alignment languages (slot, json)
# OPUS names Tatoeba files by Tatoeba's own code where it has no two-letter one: Swahili is `swh`
# (`en-swh.txt.zip` → `Tatoeba.en-swh.swh`); the pair is ordered alphabetically (`cy-en`, `en-jv`).
OPUS_CODES = {"sw": "swh"}
# WMT23 general test: X↔English directions, the reference sacrebleu uses (refB for en↔he).
WMT23_DIRECTIONS = ["cs-en", "de-en", "he-en", "is-en", "ja-en", "ru-en", "uk-en", "zh-en",
                    "en-cs", "en-de", "en-he", "en-is", "en-ja", "en-ru", "en-uk", "en-zh"]
WMT23_MISSING = {"cs-en", "is-en", "en-is"}  # not in WMT23 itself; the official evaluation used the hub copy
# LASER's Tatoeba test set names languages by ISO 639-3 (Mandarin `cmn`, Swahili `swh`, Persian `pes`).
LASER_CODES = {"af": "afr", "ar": "ara", "az": "aze", "cs": "ces", "cy": "cym", "da": "dan", "de": "deu",
               "el": "ell", "es": "spa", "fi": "fin", "fr": "fra", "he": "heb", "hi": "hin", "hr": "hrv",
               "hu": "hun", "id": "ind", "is": "isl", "it": "ita", "ja": "jpn", "jv": "jav", "ko": "kor",
               "nl": "nld", "pl": "pol", "pt": "por", "ru": "rus", "sk": "slk", "sr": "srp", "sv": "swe",
               "sw": "swh", "th": "tha", "tl": "tgl", "tr": "tur", "uk": "ukr", "ur": "urd", "vi": "vie",
               "zh": "cmn"}
ISO3 = {"eng": "en", "por": "pt", "zho": "zh", "dan": "da", "hrv": "hr", "slk": "sk", "srp": "sr", "swe": "sv"}


@dataclass(frozen=True)
class Source:
    name: str
    folder: str
    licence: str
    citation: str
    build: Callable[..., dict[str, str]]  # (fetch, out folder[, language]) → {downloaded file: url}
    per_language: list[str] | None = None  # default languages of a source fetched one language pair at a time


# What --from reads for each dataset that has a local way (said when files cannot be downloaded).
FROM_WHAT = {"massive": "MASSIVE 1.1's tarball or its unpacked folder",
             "tatoeba": "LASER's Tatoeba test set folder, data/tatoeba/v1",
             "alma": "ALMA's human_written_data folder", "wmt23": "a copy of wmt-conference/wmt23-news-systems",
             "wmt23-hub": "a copy of the hub dataset haoranxu/WMT23-Test"}


class Missing(NamedTuple):
    dataset: str
    url: str
    path: Path  # where a file downloaded by hand goes: <root>/downloads/<name>
    why: str  # what the connection said
    lang: str | None = None  # the language pair, for a dataset fetched one pair at a time


class MissingDownloads(DataError):
    """Publisher's files that cannot be downloaded (no network) and are not in <root>/downloads: one error
    naming all of them, and the --from way for each dataset that has one."""

    def __init__(self, missing: list[Missing]):
        self.missing = missing
        files = "; ".join(f"{m.url} (save it as {m.path})" for m in missing)
        local = []
        for dataset in dict.fromkeys(m.dataset for m in missing):
            if dataset in FROM_WHAT:
                langs = [m.lang for m in missing if m.dataset == dataset and m.lang]
                root = missing[0].path.parent.parent
                local.append(f"python -m midalign.data fetch {dataset}" + (f" --langs {' '.join(langs)}" * bool(langs))
                             + f" --data-dir {root} --from <{FROM_WHAT[dataset]}>")
        super().__init__(f"{len(missing)} of the publisher's files cannot be downloaded here ({missing[0].why}) "
                         f"and are not in {missing[0].path.parent}: {files}. "
                         f"Download them elsewhere and save them as named, then run the same command again"
                         + (f"; or prepare the data from local copies: {'; '.join(local)}" if local else ""))


def fetch_together(*steps: Callable[[], object]) -> list:
    """Run every step (an `ensure`); the files missing offline in any of them are one error naming all."""
    results, missing = [], []
    for step in steps:
        try:
            results.append(step())
        except MissingDownloads as e:
            missing += e.missing
    if missing:
        raise MissingDownloads(missing)
    return results


@dataclass
class Fetch:
    """Downloads into root/downloads, reusing what is already there; or reads a local copy of the
    publisher's files (`local`, laid out as the publisher's repository is)."""
    root: Path
    progress: bool = True
    local: Path | None = None
    dataset: str = ""

    def get(self, url: str, name: str | None = None, relative: str | None = None) -> Path:
        """The file at `url`; with `local`, the file at `local/relative` (no download)."""
        if self.local is not None and relative is not None:
            path = self.local / relative
            if not path.is_file():
                raise DataError(f"{path}: not found; --from must be a folder laid out as the publisher's ({relative})")
            return path
        name = name or url.rsplit("/", 1)[-1]
        path = self.root / "downloads" / name
        if not path.is_file():
            try:
                download(url, path, PUBLISHED.get(name), progress=self.progress)
            except OfflineError as e:
                raise MissingDownloads([Missing(self.dataset, url, path, str(e))]) from e
        return path


# ------------------------------------------------------------------------------------------ readers

def _refetch(path: Path, both: bool = False) -> str:
    """What to do about a bad file: a download is fetched again once deleted; a --from file is the user's."""
    if path.parent.name == "downloads":
        return f"delete {'them' if both else 'it'} and run the same command again ({'they are' if both else 'it is'} " \
               f"downloaded again)"
    return f"replace {'them with intact copies' if both else 'it with an intact copy'} of the publisher's files"


def _members(archive: Path, pattern: str) -> dict[str, bytes]:
    """Regular files of a tar/zip archive whose path matches `pattern` (no links, no absolute paths)."""
    regex, out = re.compile(pattern), {}
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    if not info.is_dir() and regex.fullmatch(info.filename):
                        out[info.filename] = z.read(info)
        else:
            with tarfile.open(archive) as t:
                for m in t:
                    if m.isfile() and regex.fullmatch(m.name):
                        out[m.name] = t.extractfile(m).read()
                _check_tar_end(archive, t)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{archive}: not a readable archive ({e}); {_refetch(archive)}") from e
    if not out:
        raise DataError(f"{archive}: no file matches {pattern}; is this the right archive?")
    return out


def _check_tar_end(archive: Path, t: tarfile.TarFile) -> None:
    """tarfile ends its listing quietly at the first header it cannot read, and checks a compressed
    stream's CRC only at its end: read on from where the listing ended, to the end of the stream, and
    require the zero blocks a tar ends with."""
    t.fileobj.seek(t.offset)
    while block := t.fileobj.read(CHUNK):
        if block.count(0) != len(block):
            raise DataError(f"{archive}: damaged archive (no readable tar header at byte {t.offset:,} of the "
                            f"unpacked stream, {len(t.getmembers())} files before it); {_refetch(archive)}")


def multi_sentence(text: str) -> bool:
    """A sentence end followed by more text: `Hi. How are you?`, `你好。你呢？` (the paper's Tatoeba filter)."""
    return re.search(r"[.!?]\s+[^\W\d_]|[。！？]\s*\w", text.strip()) is not None


# ----------------------------------------------------------------------------------------- builders

MASSIVE_MEMBER = r"(?:.*/)?1\.1/data/[A-Za-z]{2,3}-[A-Za-z]{2}\.jsonl"
# sha256 of the publisher's MASSIVE 1.1 files `1.1/data/<locale>.jsonl` for the paper's 20 locales, as the
# Git LFS pointers of a public copy of the release record them (GitHub timworks/massive-raw). The release's
# other 31 locales are checked for structure only.
MASSIVE_SHA256 = {
    "af-ZA.jsonl": "03e280b08c00af4a9b7ba5b05e3c0a1a870eae8a488e3eab4526863abef6e04e",
    "ar-SA.jsonl": "b604b44d3bb94e4f71f64d041229e16ceb42d7b89385df7c82873d2514737186",
    "az-AZ.jsonl": "9a643dbf6e07e90ba8b1554bd95e9946b42037bd52550aac90f4e774ee58ed8c",
    "cy-GB.jsonl": "09d3833b6bfe8958875b29ccf3bdb2f1679ff1ff03b6383f5643c8e4ea3d1539",
    "de-DE.jsonl": "5e09cc550b38d37faf002e0ff42103acd330906e23032689e8f071e1cf3ff621",
    "el-GR.jsonl": "0f6509b8fff6e6cc8e87cffe1e7a90754192bd6a6766033c694ff41cf741353d",
    "en-US.jsonl": "c70f75c6a543a26e249ec383df67733ad9b1066f6c0406c2e04a3f03356e407e",
    "es-ES.jsonl": "310462a79fa181ff83c643a8d356c7b8155fd37a25e80a77ba3ca9b29305c4a5",
    "fr-FR.jsonl": "f9bf3db170ad415b389e4c9594dd0f8f80c38188143e05cc4459a6fa7df7cf49",
    "hi-IN.jsonl": "5ec38fdc3a424ba4ce85de7f8c2ac0a3a8838417f1df60a4a8cc5ea4fd1e700c",
    "is-IS.jsonl": "d1cbedd85aa5110cd2b73f24d10b284824da5285970b8cdc762ab41f2e5cf5d7",
    "ja-JP.jsonl": "c22df382db6aa4a23dd1e7f62a2ac8f01c6158865771ad25201696be7201ab79",
    "jv-ID.jsonl": "d20b87af9add44c733f06f5efb353b4043697a9aacd5b9e53225096b1ffcde16",
    "ru-RU.jsonl": "af7367861ea21c1d69a084b290145815f7eaf82dcdc43b7ab572b993f9b2a69d",
    "sw-KE.jsonl": "ecbba1155655fddc049ef501386cf2c16129f78d23f0d306d78ff04bfaa014a3",
    "th-TH.jsonl": "c42c3f066d7cb6fcdca61a9cee7f95df3b45b024cb8cbe589fdf4feb2cd9c064",
    "tl-PH.jsonl": "f47c548a49b94dcb33cce8246fe794f167c5e2bf1760a3ecd8ef9b5123f8ee0f",
    "tr-TR.jsonl": "7823b94a69fd1f249e06b3535e33dcf113ad0bb9493439bc2c9131552ac0ef29",
    "ur-PK.jsonl": "4117a7d393971c21077632d5938313cca73930e5d8d3cd522d3b0cb7c0553b1c",
    "zh-CN.jsonl": "992bf0bef3d678f08c27e514739bc851163e8f40f530bfb4d5970a2c24408ace",
}


def build_massive(fetch: Fetch, out: Path) -> dict[str, str]:
    """MASSIVE 1.1's `1.1/data/<locale>.jsonl`, from the publisher's tarball (downloaded, or given with
    --from) or from a folder holding the unpacked `1.1/data/`.

    Either must hold the paper's 20 locales, and every record of every file is checked (`load_massive`:
    JSON, fields, partition, annotation spelling). A tarball is the publisher's distribution: it is read to
    its end (a damaged archive is an error) and its 20 locale files must be the publisher's, byte for byte
    (`MASSIVE_SHA256`). A folder may hold an excerpt or an edited copy: the files that differ from the
    publisher's are named on stderr and recorded in the manifest as such."""
    if fetch.local is not None and fetch.local.is_dir():
        where = fetch.local / "1.1" / "data"
        files = {f.name: f.read_bytes() for f in sorted(where.glob("*.jsonl"))}
        origin = {"1.1/data": str(fetch.local)}
    else:
        where = fetch.local or fetch.get(URLS["massive"])
        files = {Path(name).name: data for name, data in _members(where, MASSIVE_MEMBER).items()}
        origin = {where.name: str(fetch.local) if fetch.local else URLS["massive"]}
    missing = sorted(set(MASSIVE_SHA256) - set(files))
    if missing:
        raise DataError(f"{where}: no {', '.join(missing)}: --from takes MASSIVE 1.1's tarball or the folder it "
                        f"unpacks to, which hold all of the paper's 20 locales")
    edited = sorted(n for n, data in files.items()
                    if n in MASSIVE_SHA256 and hashlib.sha256(data).hexdigest() != MASSIVE_SHA256[n])
    if edited and not where.is_dir():
        raise DataError(f"{where}: {', '.join(edited)} differ from the publisher's MASSIVE 1.1 files (sha256): the "
                        f"archive is damaged or is not MASSIVE 1.1: {_refetch(where)}")
    for name, data in files.items():
        (out / name).write_bytes(data)
        load_massive(out / name)
    if edited:
        print(f"[data] massive: {len(edited)} of the paper's 20 locale files in {where} are not the publisher's "
              f"(an excerpt or an edited copy), checked for structure only: {', '.join(edited)}", file=sys.stderr)
        origin["not the publisher's files"] = ", ".join(edited)
    return origin


def tatoeba_pairs(src: list[str], en: list[str]) -> list[tuple[str, str]]:
    """The alignment pairs kept from line-aligned Tatoeba text: both sides non-empty, one sentence each."""
    return [(s.strip(), e.strip()) for s, e in zip(src, en, strict=True)
            if s.strip() and e.strip() and "\t" not in s + e and not multi_sentence(s) and not multi_sentence(e)]


def build_tatoeba(fetch: Fetch, out: Path, lang: str) -> dict[str, str]:
    """OPUS Tatoeba (v2021-07-22, the paper's release) for one language paired with English; with
    --from, a folder in the layout of LASER's Tatoeba test set (`tatoeba.<xxx>-eng.<xxx>` and `.eng`,
    up to 1,000 pairs per language: a smaller sample of the same corpus)."""
    if fetch.local is not None:
        return _build_tatoeba_laser(fetch, out, lang)
    code = OPUS_CODES.get(lang, lang)
    a, b = sorted([code, "en"])
    url = URLS["tatoeba"].format(pair=f"{a}-{b}")
    archive = fetch.get(url, f"tatoeba-{a}-{b}.txt.zip")
    files = _members(archive, rf"Tatoeba\.{a}-{b}\.({a}|{b})")
    write_tatoeba(out, lang, files[f"Tatoeba.{a}-{b}.{code}"].decode("utf-8").split("\n"),
                  files[f"Tatoeba.{a}-{b}.en"].decode("utf-8").split("\n"), f"{archive}: Tatoeba.{a}-{b}.{code}")
    return {archive.name: url}


def write_tatoeba(out: Path, lang: str, src: list[str], en: list[str], where: str) -> None:
    """`<lang>-en.tsv` from line-aligned Tatoeba text, through the paper's filter (`tatoeba_pairs`)."""
    if len(src) != len(en):
        raise DataError(f"{where} and its English side are not line-aligned ({len(src)} vs {len(en)} lines)")
    rows = tatoeba_pairs(src, en)
    if not rows:
        raise DataError(f"{where}: no usable sentence pairs")
    (out / f"{lang}-en.tsv").write_text("".join(f"{lang}\t{s}\t{e}\n" for s, e in rows), encoding="utf-8")


def _build_tatoeba_laser(fetch: Fetch, out: Path, lang: str) -> dict[str, str]:
    if lang not in LASER_CODES:
        raise DataError(f"no LASER Tatoeba code known for '{lang}' (known: {', '.join(sorted(LASER_CODES))})")
    code = LASER_CODES[lang]
    src = fetch.get("", relative=f"tatoeba.{code}-eng.{code}")
    en = fetch.get("", relative=f"tatoeba.{code}-eng.eng")
    write_tatoeba(out, lang, _lines(src), _lines(en), str(src))
    return {src.name: str(fetch.local), en.name: str(fetch.local)}


def build_flores(fetch: Fetch, out: Path) -> dict[str, str]:
    archive = fetch.get(URLS["flores"])
    for name, data in _members(archive, r"(?:.*/)?(dev|devtest)/[a-z]{3}_[A-Za-z]{4}\.(dev|devtest)").items():
        split, file = name.split("/")[-2:]
        (out / split).mkdir(exist_ok=True)
        (out / split / file).write_bytes(data)
    return {archive.name: URLS["flores"]}


def _json_rows(path: Path) -> list[dict]:
    """ALMA's .json files: one JSON array (valid/test), or JSON lines."""
    text = path.read_text(encoding="utf-8").strip()
    try:
        return json.loads(text) if text.startswith("[") else [json.loads(l) for l in text.splitlines() if l.strip()]
    except ValueError as e:
        raise DataError(f"{path}: not JSON lines or a JSON array ({e}); {_refetch(path)}") from e


def _lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def build_alma(fetch: Fetch, out: Path, x: str) -> dict[str, str]:
    """ALMA `human_written_data/<x>en/`: training pairs from the line-aligned `train.<x>-en.<x>` and
    `.en`; dev from `valid.<x>-en.json`. Icelandic has no valid file upstream: its dev set is ALMA's
    `test.is-en.json` (WMT21 is-en news test), held out from training and distinct from WMT23."""
    get = lambda file: (fetch.get(URLS["alma"].format(x=x, file=file), f"alma-{file}", f"{x}en/{file}"),
                        URLS["alma"].format(x=x, file=file))
    (src, src_url), (en, en_url) = get(f"train.{x}-en.{x}"), get(f"train.{x}-en.en")
    src_lines, en_lines = _lines(src), _lines(en)
    if len(src_lines) != len(en_lines):
        raise DataError(f"{src} has {len(src_lines)} lines but {en} has {len(en_lines)}: not line-aligned; "
                        f"{_refetch(src, both=True)}")
    train = [{x: s.strip(), "en": e.strip()} for s, e in zip(src_lines, en_lines) if s.strip() and e.strip()]
    dev, dev_url = get(f"test.{x}-en.json" if x == "is" else f"valid.{x}-en.json")
    valid = [r["translation"] for r in _json_rows(dev) if isinstance(r.get("translation"), dict)
             and str(r["translation"].get(x, "")).strip() and str(r["translation"].get("en", "")).strip()]
    for split, rows, source in (("train", train, src), ("valid", valid, dev)):
        if not rows:
            raise DataError(f"{source}: no {x}-en sentence pairs; expected ALMA's human_written_data/{x}en layout")
        (out / f"{split}.{x}-en.jsonl").write_text(
            "".join(json.dumps({"translation": t}, ensure_ascii=False) + "\n" for t in rows), encoding="utf-8")
    # the MT experiment aligns on its own training pairs (docs/method.md §8)
    (out / "pairs.tsv").write_text("".join(f"{x}\t{t[x]}\t{t['en']}\n" for t in train if "\t" not in t[x] + t["en"]),
                                   encoding="utf-8")
    return {src.name: src_url, en.name: en_url, dev.name: dev_url}


def wmt_xml_pairs(xml: bytes, translator: str) -> tuple[str, str, list[tuple[str, str]]]:
    """(source lang, target lang, [(source, reference)]) from a WMT21+ test XML; testsuite documents
    and segments without this translator's reference (`translator="refA"`) are left out, as sacrebleu does."""
    root = ET.fromstring(xml)
    src_lang = root.find(".//src").get("lang")
    tgt_lang = root.find(".//ref").get("lang")
    out = []
    for doc in root.iter("doc"):
        if "testsuite" in doc.attrib:
            continue
        src = {seg.get("id"): seg.text or "" for seg in doc.findall("./src//seg")}
        ref = next((r for r in doc.findall("./ref") if r.get("translator") == translator), None)
        if ref is None:
            continue
        for seg in ref.iter("seg"):
            if (seg.text or "").strip() and src.get(seg.get("id"), "").strip():
                out.append((src[seg.get("id")].strip(), seg.text.strip()))
    return src_lang, tgt_lang, out


def _write_direction(out: Path, direction: str, rows: list[tuple[str, str]], source: str) -> None:
    if not rows:
        raise DataError(f"{source}: no segments with a reference for {direction}")
    s, t = direction.split("-")
    (out / f"test.{direction}.jsonl").write_text("".join(
        json.dumps({"translation": {s: a, t: b}}, ensure_ascii=False) + "\n" for a, b in rows), encoding="utf-8")


def build_wmt23(fetch: Fetch, out: Path) -> dict[str, str]:
    """WMT23 general test, X↔English, reference refA (refB for en↔he, as sacrebleu); from the release
    archive's `xml/`, or from a local copy's `txt/` (or `xml/`) with --from. cs→en, is→en and en→is are
    not in WMT23 (see wmt23-hub)."""
    directions = [d for d in WMT23_DIRECTIONS if d not in WMT23_MISSING]
    ref = lambda d: "refB" if "he" in d.split("-") else "refA"
    if fetch.local is not None and (fetch.local / "txt").is_dir():
        for d in directions:
            s, t = d.split("-")
            src = fetch.get("", relative=f"txt/sources/generaltest2023.{d}.src.{s}")
            tgt = fetch.get("", relative=f"txt/references/generaltest2023.{d}.ref.{ref(d)}.{t}")
            a, b = _lines(src), _lines(tgt)
            if len(a) != len(b):
                raise DataError(f"{src} has {len(a)} lines but {tgt} has {len(b)}: not line-aligned")
            _write_direction(out, d, [(x.strip(), y.strip()) for x, y in zip(a, b) if x.strip() and y.strip()], str(tgt))
        return {f"txt/{d}": str(fetch.local) for d in directions}
    if fetch.local is not None:
        xml = {d: fetch.get("", relative=f"xml/wmttest2023.{d}.all.xml").read_bytes() for d in directions}
        origin = {str(fetch.local): str(fetch.local)}
    else:
        archive = fetch.get(URLS["wmt23"])
        members = _members(archive, r"(?:.*/)?xml/wmttest2023\.[a-z]{2}-[a-z]{2}\.all\.xml")
        xml = {name.split(".")[-3]: data for name, data in members.items()}
        origin = {archive.name: URLS["wmt23"]}
    for d in directions:
        if d not in xml:
            raise DataError(f"the WMT23 release has no xml/wmttest2023.{d}.all.xml; is this the right archive?")
        _, _, rows = wmt_xml_pairs(xml[d], ref(d))
        _write_direction(out, d, rows, f"wmttest2023.{d}.all.xml ({ref(d)})")
    return origin


def build_wmt23_hub(fetch: Fetch, out: Path) -> dict[str, str]:
    """The copy of the WMT23 tests that the official evaluation read (`haoranxu/WMT23-Test` on the hub):
    one parquet per direction, `<s>-<t>/test-*.parquet`, whose column `<s>-<t>` holds {s, t}. It adds
    is↔en; cs→en is its en-cs set read backwards, as the official script does."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise DataError("the hub copy of WMT23 is parquet: `pip install pyarrow`") from e
    folder = fetch.local or _hub_snapshot(HUB_WMT23, fetch.root / "downloads" / "WMT23-Test")
    for d in WMT23_DIRECTIONS:
        stored = "en-cs" if d == "cs-en" else d
        files = sorted((folder / stored).glob("test-*.parquet"))
        if not files:
            raise DataError(f"{folder / stored}: no test-*.parquet; expected the layout of {HUB_WMT23}")
        s, t = d.split("-")
        try:
            column = [r for f in files for r in pq.read_table(f, columns=[stored]).column(stored).to_pylist()]
        except Exception as e:  # pyarrow's own errors for a corrupt file or a missing column
            raise DataError(f"{files[0]}: not the {HUB_WMT23} layout ({e})") from e
        rows = [(r[s].strip(), r[t].strip()) for r in column if r and (r.get(s) or "").strip() and (r.get(t) or "").strip()]
        _write_direction(out, d, rows, str(folder / stored))
    return {HUB_WMT23: str(folder)}


def _hub_snapshot(repo: str, dest: Path) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, repo_type="dataset", local_dir=dest, allow_patterns=["*/test-*.parquet"],
                                      etag_timeout=30))
    except Exception as e:  # offline, no such repo, …: huggingface_hub raises many kinds
        raise DataError(f"cannot download the dataset {repo} from the hub ({type(e).__name__}: {e}). Without "
                        f"network: copy its files elsewhere and pass the folder with --from") from e


def build_uner(fetch: Fetch, out: Path) -> dict[str, str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise DataError("the Aya collection is published as parquet: `pip install pyarrow` to fetch UNER") from e
    sources = {}
    for split in ("train", "validation", "test"):
        url = URLS["uner"].format(split=split)
        path = fetch.get(url, f"aya-templated_uner_llm-{split}.parquet")
        try:
            table = pq.read_table(path, columns=["inputs", "targets", "language"]).to_pylist()
        except Exception as e:  # pyarrow raises its own hierarchy for corrupt files and missing columns
            raise DataError(f"{path}: not the Aya UNER parquet ({e}); {_refetch(path)}") from e
        by_lang: dict[str, list[str]] = {}
        for row in table:
            lang = ISO3.get(row["language"], row["language"])
            by_lang.setdefault(lang, []).append(json.dumps({**row, "language": lang}, ensure_ascii=False) + "\n")
        for lang, rows in by_lang.items():
            (out / f"{split}.{lang}.jsonl").write_text("".join(rows), encoding="utf-8")
        sources[path.name] = url
    return sources


CITE = {
    "massive": "FitzGerald et al. (2023). MASSIVE: A 1M-Example Multilingual Natural Language Understanding "
               "Dataset with 51 Typologically-Diverse Languages. ACL.",
    "tatoeba": "Tiedemann (2012). Parallel Data, Tools and Interfaces in OPUS. LREC. (Tatoeba, tatoeba.org)",
    "flores": "NLLB Team (2022). No Language Left Behind: Scaling Human-Centered Machine Translation. arXiv:2207.04672.",
    "alma": "Xu et al. (2024). A Paradigm Shift in Machine Translation: Boosting Translation Performance of "
            "Large Language Models. ICLR.",
    "wmt23": "Kocmi et al. (2023). Findings of the 2023 Conference on Machine Translation (WMT23). WMT.",
    "uner": "Mayhew et al. (2024). Universal NER: A Gold-Standard Multilingual Named Entity Recognition "
            "Benchmark. NAACL; Singh et al. (2024). Aya Dataset. ACL.",
}
SOURCES = {s.name: s for s in [
    Source("massive", "massive", "CC BY 4.0", CITE["massive"], build_massive),
    Source("tatoeba", "tatoeba", "CC BY 2.0 FR", CITE["tatoeba"], build_tatoeba, per_language=TATOEBA_LANGS),
    Source("flores", "flores200", "CC BY-SA 4.0", CITE["flores"], build_flores),
    Source("alma", "alma", "MIT (ALMA); WMT data terms for the underlying test sets", CITE["alma"], build_alma,
           per_language=ALMA_LANGS),
    Source("wmt23", "wmt23", "WMT23 test sets: research use, see statmt.org/wmt23", CITE["wmt23"], build_wmt23),
    Source("wmt23-hub", "wmt23-hub", "WMT23 test sets: research use, see statmt.org/wmt23", CITE["wmt23"],
           build_wmt23_hub),
    Source("uner", "uner", "Apache-2.0 (Aya collection); CC BY-SA 4.0 (UNER)", CITE["uner"], build_uner),
]}


def data_root(data_dir: Path | None = None) -> Path:
    return Path(data_dir) if data_dir else cache_dir() / "datasets"


def _prepared(folder: Path, build: Callable[[Path], dict[str, str]], source: Source, local: Path | None) -> Path:
    """`folder` built once (in a temp folder, renamed into place) and verified against its manifest after.
    A folder prepared from elsewhere than an explicit local copy (`local`) is an error, never reused."""
    if Manifest(folder).exists():
        Manifest(folder).verify()
        if local is not None and str(local) not in Manifest(folder).sources().values():
            raise DataError(f"{folder} was prepared from {', '.join(Manifest(folder).sources().values())}, not "
                            f"from {local}: delete {folder} to prepare it from {local}")
        return folder
    print(f"[data] {source.name}: licence {source.licence}. Cite: {source.citation}", file=sys.stderr)
    with atomic_dir(folder) as tmp:
        Manifest(tmp).write(build(tmp))
    return folder


def ensure(name: str, data_dir: Path | None = None, langs: list[str] | None = None, progress: bool = True,
           local: Path | None = None) -> list[Path]:
    """The prepared folder(s) of dataset `name`: one, or one per language for tatoeba and alma.

    langs: for tatoeba and alma, the language pairs with English (default: the paper's); the other
    datasets are prepared whole. local: a folder holding the publisher's files in its own layout
    (read instead of downloading).
    """
    if name not in SOURCES:
        raise DataError(f"unknown dataset '{name}': choose from {', '.join(SOURCES)}")
    source = SOURCES[name]
    root = data_root(data_dir)
    if local is not None and name not in LOCAL_COPIES:
        raise DataError(f"--from reads a local copy of {', '.join(LOCAL_COPIES)} only; for {name}, put the "
                        f"publisher's file in <data-dir>/downloads/ (its name is in the offline error)")
    if local is not None and not (Path(local).is_dir() or name == "massive" and Path(local).is_file()):
        raise DataError(f"--from {local}: not a folder" + (" (or, for massive, the tarball)" * (name == "massive")))
    fetch = Fetch(root, progress, Path(local) if local is not None else None, name)
    if not source.per_language:
        return [_prepared(root / source.folder, lambda tmp: source.build(fetch, tmp), source, fetch.local)]
    folders, missing = [], []
    for lang in langs or source.per_language:  # every language is tried: what is missing offline is said at once
        try:
            folders.append(_prepared(root / source.folder / lang, lambda tmp, lang=lang: source.build(fetch, tmp, lang),
                                     source, fetch.local))
        except MissingDownloads as e:
            missing += [m._replace(lang=lang) for m in e.missing]
    if missing:
        raise MissingDownloads(missing)
    return folders

