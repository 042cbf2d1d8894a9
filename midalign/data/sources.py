"""The paper's datasets from their publishers (REFERENCE.md §8), as files midalign's loaders read.

    python -m midalign.data list
    python -m midalign.data fetch massive tatoeba --langs cy jv ja sw tl
    python -m midalign.data fetch wmt23 --data-dir /data/midalign

Each fetcher downloads (midalign.data.fetch: resumable, checked) into `<root>/downloads/`, keeps only
what the experiments read, in midalign's formats, in `<root>/<name>/` (built in a temp folder and
renamed), and records every file's sha256 in `<root>/<name>/manifest.json`, checked on each later use.
`<root>` is --data-dir, else `$MIDALIGN_CACHE/datasets`. Without network, put the publisher's file
(its name is in the error) in `<root>/downloads/` by hand and run the same command.

| name    | publisher's file                                | becomes                                     |
|---------|-------------------------------------------------|---------------------------------------------|
| massive | MASSIVE 1.1 tarball (Amazon)                    | massive/<locale>.jsonl                      |
| tatoeba | OPUS Tatoeba v2021-07-22 moses zip per pair     | tatoeba/<xx>/<xx>-en.tsv (lang, sentence, en) |
| flores  | FLORES-200 tarball (Meta, NLLB)                 | flores200/dev/<code>.dev, devtest/…         |
| alma    | ALMA human-written train/valid JSON (GitHub)    | alma/<xx>/{train,valid}.<xx>-en.jsonl, pairs.tsv |
| wmt23   | WMT23 general test XML (wmt-conference, GitHub) | wmt23/test.<src>-<tgt>.jsonl                |
| uner    | Aya collection templated_uner_llm parquet (HF)  | uner/{train,validation,test}.<xx>.jsonl     |
"""

from __future__ import annotations

import json
import re
import sys
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from midalign.data.fetch import Manifest, OfflineError, download
from midalign.data.udhr import DataError
from midalign.io import atomic_dir

# Publishers' addresses (tests point these at a loopback server).
URLS = {
    "massive": "https://amazon-massive-nlu-dataset.s3.amazonaws.com/amazon-massive-dataset-1.1.tar.gz",
    "tatoeba": "https://object.pouta.csc.fi/OPUS-Tatoeba/v2021-07-22/moses/{pair}.txt.zip",
    "flores": "https://dl.fbaipublicfiles.com/nllb/flores200_dataset.tar.gz",
    "alma": "https://raw.githubusercontent.com/fe1ixxu/ALMA/master/human_written_data/{split}/{x}-en/{split}.{x}-en.json",
    "wmt23": "https://github.com/wmt-conference/wmt23-news-systems/archive/refs/tags/v.0.1.tar.gz",
    "uner": "https://huggingface.co/datasets/CohereForAI/aya_collection/resolve/main/templated_uner_llm/{split}-00000-of-00001.parquet",
}
# Checksums the publisher states (sacrebleu's registry for WMT23); other files are pinned on first download.
PUBLISHED = {"v.0.1.tar.gz": ("md5", "63576405e4ce07130a19ad76ba7eb75b")}
ALMA_LANGS = ["cs", "de", "is", "ru", "zh"]
TATOEBA_LANGS = ["cy", "jv", "ja", "sw", "tl", "da", "sv"]  # the paper's alignment languages (slot, json)
ISO3 = {"eng": "en", "por": "pt", "zho": "zh", "dan": "da", "hrv": "hr", "slk": "sk", "srp": "sr", "swe": "sv"}


@dataclass(frozen=True)
class Source:
    name: str
    folder: str
    licence: str
    citation: str
    build: Callable[..., dict[str, str]]  # (fetch, out folder[, language]) → {downloaded file: url}
    per_language: list[str] | None = None  # default languages of a source fetched one language pair at a time


@dataclass
class Fetch:
    """Downloads into root/downloads, reusing what is already there."""
    root: Path
    progress: bool = True

    def get(self, url: str, name: str | None = None) -> Path:
        name = name or url.rsplit("/", 1)[-1]
        path = self.root / "downloads" / name
        if not path.is_file():
            try:
                download(url, path, PUBLISHED.get(name), progress=self.progress)
            except OfflineError as e:
                raise DataError(f"{e}. Without network: download {url} elsewhere, save it as {path}, and run "
                                f"the same command again (--data-dir chooses the root folder)") from e
        return path


# ------------------------------------------------------------------------------------------ readers

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
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise DataError(f"{archive}: not a readable archive ({e}); delete it and fetch again") from e
    if not out:
        raise DataError(f"{archive}: no file matches {pattern}; is this the right archive?")
    return out


def multi_sentence(text: str) -> bool:
    """A sentence end followed by more text: `Hi. How are you?`, `你好。你呢？` (the paper's Tatoeba filter)."""
    return re.search(r"[.!?]\s+[^\W\d_]|[。！？]\s*\w", text.strip()) is not None


# ----------------------------------------------------------------------------------------- builders

def build_massive(fetch: Fetch, out: Path) -> dict[str, str]:
    archive = fetch.get(URLS["massive"])
    for name, data in _members(archive, r"(?:.*/)?1\.1/data/[A-Za-z]{2,3}-[A-Za-z]{2}\.jsonl").items():
        (out / Path(name).name).write_bytes(data)
    return {archive.name: URLS["massive"]}


def build_tatoeba(fetch: Fetch, out: Path, lang: str) -> dict[str, str]:
    a, b = sorted([lang, "en"])
    url = URLS["tatoeba"].format(pair=f"{a}-{b}")
    archive = fetch.get(url, f"tatoeba-{a}-{b}.txt.zip")
    files = _members(archive, rf"Tatoeba\.{a}-{b}\.({a}|{b})")
    src = files[f"Tatoeba.{a}-{b}.{lang}"].decode("utf-8").split("\n")
    en = files[f"Tatoeba.{a}-{b}.en"].decode("utf-8").split("\n")
    if len(src) != len(en):
        raise DataError(f"{archive}: Tatoeba.{a}-{b}.{lang} and .en are not line-aligned ({len(src)} vs {len(en)})")
    rows = [f"{lang}\t{s.strip()}\t{e.strip()}\n" for s, e in zip(src, en)
            if s.strip() and e.strip() and "\t" not in s + e and not multi_sentence(s) and not multi_sentence(e)]
    (out / f"{lang}-en.tsv").write_text("".join(rows), encoding="utf-8")
    return {archive.name: url}


def build_flores(fetch: Fetch, out: Path) -> dict[str, str]:
    archive = fetch.get(URLS["flores"])
    for name, data in _members(archive, r"(?:.*/)?(dev|devtest)/[a-z]{3}_[A-Za-z]{4}\.(dev|devtest)").items():
        split, file = name.split("/")[-2:]
        (out / split).mkdir(exist_ok=True)
        (out / split / file).write_bytes(data)
    return {archive.name: URLS["flores"]}


def _json_rows(path: Path) -> list[dict]:
    """ALMA's .json files: JSON lines, or one JSON array."""
    text = path.read_text(encoding="utf-8").strip()
    try:
        return json.loads(text) if text.startswith("[") else [json.loads(l) for l in text.splitlines() if l.strip()]
    except ValueError as e:
        raise DataError(f"{path}: not JSON lines or a JSON array ({e}); delete it and fetch again") from e


def build_alma(fetch: Fetch, out: Path, x: str) -> dict[str, str]:
    sources = {}
    for split in ("train", "valid"):
        url = URLS["alma"].format(split=split, x=x)
        path = fetch.get(url, f"alma-{split}.{x}-en.json")
        rows = [r["translation"] for r in _json_rows(path) if isinstance(r.get("translation"), dict)
                and str(r["translation"].get(x, "")).strip() and str(r["translation"].get("en", "")).strip()]
        (out / f"{split}.{x}-en.jsonl").write_text(
            "".join(json.dumps({"translation": t}, ensure_ascii=False) + "\n" for t in rows), encoding="utf-8")
        if split == "train":  # the MT experiment aligns on its own training pairs (REFERENCE.md §8)
            (out / "pairs.tsv").write_text("".join(f"{x}\t{t[x].strip()}\t{t['en'].strip()}\n" for t in rows
                                                   if "\t" not in t[x] + t["en"]), encoding="utf-8")
        sources[path.name] = url
    return sources


def wmt_xml_pairs(xml: bytes, translator: str) -> tuple[str, str, list[tuple[str, str]]]:
    """(source lang, target lang, [(source, reference)]) from a WMT21+ test XML; testsuite documents
    and segments without this translator's reference are left out (as sacrebleu does)."""
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


def build_wmt23(fetch: Fetch, out: Path) -> dict[str, str]:
    archive = fetch.get(URLS["wmt23"])
    for name, data in _members(archive, r"(?:.*/)?xml/wmttest2023\.[a-z]{2}-[a-z]{2}\.all\.xml").items():
        pair = name.split(".")[-3]
        if "en" not in pair.split("-"):  # the paper evaluates X↔English only
            continue
        src, tgt, rows = wmt_xml_pairs(data, "B" if "he" in pair.split("-") else "A")  # sacrebleu: refB for he
        (out / f"test.{src}-{tgt}.jsonl").write_text("".join(
            json.dumps({"translation": {src: s, tgt: t}}, ensure_ascii=False) + "\n" for s, t in rows), encoding="utf-8")
    return {archive.name: URLS["wmt23"]}


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
            raise DataError(f"{path}: not the Aya UNER parquet ({e}); delete it and fetch again") from e
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
    Source("uner", "uner", "Apache-2.0 (Aya collection); CC BY-SA 4.0 (UNER)", CITE["uner"], build_uner),
]}


def data_root(data_dir: Path | None = None) -> Path:
    from midalign.registry import cache_dir

    return Path(data_dir) if data_dir else cache_dir() / "datasets"


def _prepared(folder: Path, build: Callable[[Path], dict[str, str]], source: Source) -> Path:
    """`folder` built once (in a temp folder, renamed into place) and verified against its manifest after."""
    if Manifest(folder).exists():
        Manifest(folder).verify()
        return folder
    print(f"[data] {source.name}: licence {source.licence}. Cite: {source.citation}", file=sys.stderr)
    with atomic_dir(folder) as tmp:
        Manifest(tmp).write(build(tmp))
    return folder


def ensure(name: str, data_dir: Path | None = None, langs: list[str] | None = None, progress: bool = True) -> list[Path]:
    """The prepared folder(s) of dataset `name`: one, or one per language for tatoeba and alma.

    langs: for tatoeba and alma, the language pairs with English (default: the paper's); the other
    datasets are prepared whole.
    """
    if name not in SOURCES:
        raise DataError(f"unknown dataset '{name}': choose from {', '.join(SOURCES)}")
    source = SOURCES[name]
    root = data_root(data_dir)
    fetch = Fetch(root, progress)
    if source.per_language:
        return [_prepared(root / source.folder / lang, lambda tmp, lang=lang: source.build(fetch, tmp, lang), source)
                for lang in langs or source.per_language]
    return [_prepared(root / source.folder, lambda tmp: source.build(fetch, tmp), source)]

