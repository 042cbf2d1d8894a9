"""A training run's folder (--out): one writer at a time, never silently replaced, and resumed only with
the settings it was started with (hours of CPU or GPU time depend on each of these)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from midalign.errors import CheckpointError
from midalign.state import find_state

RUN_FILES = ("config.json", "log.jsonl", "state", "best", "last")  # what train.py writes into --out
# Settings that may differ on --resume: how long, how often to evaluate and save, where it runs. Every
# other saved setting shapes the run (data, model, objective, optimisation) and must match.
SAFE_TO_CHANGE = {"max_steps", "eval_every", "patience", "resume", "overwrite", "dry_run", "device", "command", "out",
                  "grad_checkpoint", "total_steps", "world_size", "preset", "preset_resolved", "experiment", "data_dir",
                  # data files are compared by content (`data_files`), not by how their paths are spelled
                  "train_data", "dev_data", "align_data", "align_dev_data"}
DATA_ROLES = ("train_data", "dev_data", "align_data", "align_dev_data")


def file_digest(path: Path) -> dict:
    """Size and sha256 of a file, or of every file under a folder (by relative path)."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h, size = hashlib.sha256(), 0
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                h.update(block)
                size += len(block)
    return {"size": size, "sha256": h.hexdigest()}


def data_files(settings) -> dict:
    """Per data role, the size and hash of each of its files in order (what --resume compares)."""
    return {role: [file_digest(p) for p in getattr(settings, role)] if getattr(settings, role) else None
            for role in DATA_ROLES}


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Before any work: a folder holding a run needs --resume (continue) or --overwrite (start over; only
    train.py's own files are removed, and only when nothing else is in the folder)."""
    if resume or not out.is_dir():
        return
    existing = [n for n in RUN_FILES if (out / n).exists()]
    if existing and not overwrite:
        go_on = "pass --resume to continue it, " if find_state(out) is not None else \
            "it saved no training state to resume (it stopped early): "
        raise CheckpointError(f"--out {out} holds a training run ({', '.join(existing)}): {go_on}--overwrite to "
                              f"start over, or choose another --out")
    if overwrite and existing:
        foreign = sorted(p.name for p in out.iterdir() if p.name not in RUN_FILES and not p.name.startswith("."))
        if foreign:
            raise CheckpointError(f"--out {out} holds files train.py did not make ({', '.join(foreign[:5])}); "
                                  f"--overwrite replaces a run folder only; choose another --out")
        for name in existing:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def check_resume_settings(out: Path, settings: dict) -> int | None:
    """On --resume: every setting that shapes the run equals the saved one (config.json), else an error
    naming each that differs. Returns the saved warm-up length (a longer --max-steps keeps the schedule)."""
    path = out / "config.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"--resume: {path} is missing or unreadable ({e}); it records the run's settings; "
                              f"start without --resume in a new --out") from e
    norm = lambda v: json.loads(json.dumps(v, default=str))  # paths and tuples as the saved file holds them
    differ = [f"--{k.replace('_', '-')} {norm(saved[k])!r} → {norm(v)!r}" for k, v in settings.items()
              if k in saved and k not in SAFE_TO_CHANGE | {"data_files"} and norm(saved[k]) != norm(v)]
    for role, files in (settings.get("data_files") or {}).items():  # by content: any path to the same bytes
        before = (saved.get("data_files") or {}).get(role)
        if "data_files" in saved and norm(before) != norm(files):
            differ.append(f"--{role.replace('_', '-')}: the files' contents differ from the run's (size/sha256 in "
                          f"config.json's data_files)")
    if differ:
        raise CheckpointError(f"--resume with other settings than the run in {out} was started with: "
                              f"{'; '.join(differ)}. Resume with the saved ones (config.json), or start a new --out "
                              f"(only --max-steps, --eval-every, --patience and --device may change)")
    return saved.get("warmup_steps")


class RunLock:
    """`--out/.lock` holding the writer's pid: a second process writing to the same run folder stops,
    naming the holder; a lock left by a process that died is taken over."""

    def __init__(self, out: Path):
        self.path, self.held, self.made = Path(out) / ".lock", False, False

    def acquire(self) -> None:
        try:
            self.made = not self.path.parent.exists()  # removed again on release if nothing else was written
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"cannot write to --out {self.path.parent}: {e}; choose a writable folder") from e
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = _read_pid(self.path)
                if holder is not None and _alive(holder):
                    raise CheckpointError(f"{self.path.parent} is being written by another process (pid {holder}); "
                                          f"wait for it to finish or choose another --out") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            except OSError as e:
                raise CheckpointError(f"cannot write to --out {self.path.parent}: {e}; choose a writable folder") from e
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
            if self.made and not any(self.path.parent.iterdir()):  # a run that stopped before writing anything
                self.path.parent.rmdir()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
