"""Downloads from a dataset's publisher: resumable, verified, atomic, and never a hang offline.

`download()` streams a URL into `<file>.part`, continues an interrupted `.part` with an HTTP Range
request, checks the length the server announced and a published checksum when there is one, then
renames the file into place. `Manifest` records the sha256 of every file a fetcher produced and
checks it again on each later load, so a corrupted or edited cache is noticed instead of trained on.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

from midalign.errors import DataError
from midalign.io import atomic_write_text

TIMEOUT_S = 30  # per connection attempt and per read: a dead network fails in seconds, never hangs
CHUNK = 1 << 20


class OfflineError(DataError):
    """The publisher's address cannot be reached."""


def file_hash(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, checksum: tuple[str, str] | None = None, progress: bool = True) -> str:
    """Fetch `url` to `dest` (resuming `dest.part`); returns the file's sha256.

    checksum: (algorithm, hex digest) published for the file, e.g. ("md5", "6357…"); a mismatch
    deletes the download and raises.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-", "User-Agent": "midalign"} if have
                                     else {"User-Agent": "midalign"})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part is already complete
            response = None
        else:
            raise DataError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, socket.timeout, OSError, http.client.HTTPException) as e:
        raise OfflineError(f"cannot reach {url} ({getattr(e, 'reason', e)})") from e
    if response is not None:
        with response:
            resumed = response.status == 206
            length = response.headers.get("Content-Length")
            expected = (have if resumed else 0) + int(length) if length is not None else None
            from tqdm import tqdm

            with open(part, "ab" if resumed else "wb") as f, \
                    tqdm(total=expected, initial=have if resumed else 0, unit="B", unit_scale=True,
                         desc=dest.name, disable=not progress, leave=False) as bar:
                try:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        f.write(block)
                        bar.update(len(block))
                except (socket.timeout, OSError, http.client.HTTPException) as e:
                    raise DataError(f"{url}: download interrupted after {f.tell():,} bytes ({e}); "
                                    f"run the same command again to resume from {part}") from e
        size = part.stat().st_size
        if expected is not None and size != expected:
            raise DataError(f"{url}: truncated download ({size:,} of {expected:,} bytes); "
                            f"run the same command again to resume from {part}")
    if checksum is not None:
        algorithm, digest = checksum
        got = file_hash(part, algorithm)
        if got != digest:
            part.unlink()
            raise DataError(f"{url}: {algorithm} {got} does not match the published {digest}; the download "
                            f"was deleted — retry, and report it if it persists")
    sha256 = file_hash(part)
    os.replace(part, dest)
    return sha256


class Manifest:
    """`manifest.json` in a dataset folder: source URLs and the sha256 of every file produced."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / "manifest.json"

    def exists(self) -> bool:
        return self.path.is_file()

    def write(self, sources: dict[str, str]) -> None:
        files = {str(p.relative_to(self.folder)): file_hash(p) for p in sorted(self.folder.rglob("*"))
                 if p.is_file() and p != self.path}
        atomic_write_text(self.path, json.dumps({"sources": sources, "files": files}, indent=1))

    def sources(self) -> dict[str, str]:
        """{file produced from: where it came from} as recorded at preparation."""
        try:
            return json.loads(self.path.read_text())["sources"]
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"{self.path}: unreadable manifest ({e}); delete {self.folder} to fetch again") from e

    def verify(self) -> None:
        """Raise if a recorded file is missing or its content changed since it was fetched."""
        try:
            recorded = json.loads(self.path.read_text())["files"]
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"{self.path}: unreadable manifest ({e}); delete {self.folder} to fetch again") from e
        for name, digest in recorded.items():
            path = self.folder / name
            if not path.is_file() or file_hash(path) != digest:
                raise DataError(f"{path}: missing or changed since it was downloaded (sha256 in {self.path}); "
                                f"delete {self.folder} to fetch it again")
