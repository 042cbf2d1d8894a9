"""Atomic writes: a file or folder appears complete or not at all (temp path, then rename)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from midalign.errors import MidalignError


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` via a temporary sibling file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class OutputError(MidalignError, ValueError):
    """An output path that would destroy something the command did not make, or overwrite an input."""


PROVENANCE = "provenance.json"  # what produced an output folder; its presence marks the folder as a command's own


def write_provenance(folder: str | os.PathLike, **record) -> None:
    """`folder/provenance.json`: the command line, the time and `record` (inputs, weights, settings)."""
    import datetime
    import json
    import sys

    atomic_write_text(Path(folder) / PROVENANCE, json.dumps(
        {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
         "written": datetime.datetime.now().isoformat(timespec="seconds"), **record}, indent=1, default=str))


def check_output_folder(out: str | os.PathLike, inputs: list[str | os.PathLike], own: Callable[[str], bool],
                        overwrite: bool) -> None:
    """Refuse, before any work, an --out that is an input (or holds or lies in one), a file, or a folder
    holding anything but this command's own earlier output (`own(name)`: a file it writes, and the folder's
    provenance.json, which marks it as an output at all) unless `overwrite`."""
    out, here = Path(out).resolve(), Path.cwd().resolve()
    if out == here or out in here.parents:
        raise OutputError(f"--out {out} is the current folder (or holds it): an output is written whole as a "
                          f"folder of its own; name one, e.g. --out {here / 'out'}")
    for path in map(lambda p: Path(p).resolve(), inputs):
        if out == path or path in out.parents or out in path.parents:
            raise OutputError(f"--out {out} is (or holds, or lies inside) the input {path}: inputs are never "
                              f"outputs; choose another folder")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()):
        names = sorted(p.name for p in out.iterdir())
        foreign = [n for n in names if not own(n)]
        if foreign:
            raise OutputError(f"--out {out} holds files this command did not make ({', '.join(foreign[:5])}); "
                              f"choose an empty or new folder")
        if PROVENANCE not in names:  # the same file names, but not written as this command's output
            raise OutputError(f"--out {out} holds {', '.join(names[:5])} but no {PROVENANCE}: not this command's "
                              f"earlier output (a trained adapter, another tool's files); choose a new folder")
        if not overwrite:
            raise OutputError(f"--out {out} holds an earlier output ({', '.join(names[:5])}); pass --overwrite "
                              f"to replace it, or choose a new folder")


def check_free_space(out: str | os.PathLike, need: int, what: str) -> None:
    """Before the expensive part: the disk holding --out (an existing folder) has `need` bytes free."""
    free = shutil.disk_usage(out).free
    if free < need:
        raise OutputError(f"--out {out}: {free / 2**20:.1f} MiB free on its disk, {what} need about "
                          f"{need / 2**20:.1f} MiB; free disk space or choose another --out")


def check_writable_folder(out: str | os.PathLike, need: int = 1 << 20, what: str = "the results") -> None:
    """Before the expensive part: --out is (or can be made) a folder this process can write, on a disk with
    `need` bytes free; folders made for the test are removed again, so a command that fails later leaves
    nothing behind."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; choose a folder")
    made = [p for p in [out, *out.parents] if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
        check_free_space(out, need, what)
    except OSError as e:
        raise OutputError(f"--out {out}: cannot write there ({e.strerror or e}); choose a writable folder") from e
    finally:
        for p in made:  # innermost first
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()


@contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `final`, on error it is removed.

    An existing `final` is moved aside before the rename and deleted after, so at every moment one
    complete version exists on disk.
    """
    final = Path(os.path.abspath(final))  # `.` or `x/..` name their folder, not an empty name
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for path in [tmp, *tmp.rglob("*")]:  # the temp folder is 0700 and safetensors writes 0600: readable as usual
        path.chmod(0o755 if path.is_dir() else 0o644)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(final, old)
    os.replace(tmp, final)
    # This copy's old version, and any left by a process killed mid-save (other pids), are now stale.
    for stale in [*final.parent.glob(f".{final.name}.old-*"), *final.parent.glob(f".{final.name}.tmp-*")]:
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def output_dir(out: str | os.PathLike) -> Iterator[Path]:
    """`atomic_dir` for a command's --out: a failed write (a disk that filled up since the check, no
    permission) is a one-line OutputError that says nothing was half-written."""
    from safetensors import SafetensorError

    try:
        with atomic_dir(out) as tmp:
            yield tmp
    except (OSError, SafetensorError) as e:
        raise OutputError(f"could not write --out {out}: {e}. Nothing was half-written (an earlier output there is "
                          f"intact); free disk space or choose another --out, and run again") from e

