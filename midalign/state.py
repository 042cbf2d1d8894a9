"""Training state for exact resume (docs/method.md §4: keep best; the reliability notes in docs/): LoRA
weights, optimizer, every rank's RNG and the counters, each save written to a temporary folder and
renamed into place, so a crash never leaves a half-written state."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from midalign.distributed import World
from midalign.errors import CheckpointError
from midalign.io import atomic_dir


def save_state(out: Path, model, optimizer, step: int, trainer: dict, world: World = World()) -> None:
    """LoRA weights, optimizer, every rank's RNG and the counters, written atomically to out/state."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    ranks = world.gather_objects(rng)
    if not world.main:
        return
    with atomic_dir(out / "state") as tmp:
        save_file({n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad},
                  str(tmp / "lora.safetensors"))
        for name, obj in (("optimizer.pt", optimizer.state_dict()), ("rng.pt", ranks)):
            with open(tmp / name, "wb") as f:  # a file object: a full disk is an OSError (torch's own writer
                torch.save(obj, f)             # turns it into a RuntimeError about stream positions)
        (tmp / "trainer.json").write_text(json.dumps({**trainer, "step": step, "world_size": world.size}))


def find_state(out: Path) -> Path | None:
    """out/state, or the previous complete copy if a crash hit between the two renames of a save."""
    if (out / "state" / "trainer.json").is_file():
        return out / "state"
    old = sorted(out.glob(".state.old-*"), key=lambda p: p.stat().st_mtime)
    return old[-1] if old and (old[-1] / "trainer.json").is_file() else None


def load_state(state: Path, model, optimizer, world: World = World()) -> dict:
    """Restore `state` into model and optimizer; a truncated, corrupt or foreign file is a CheckpointError
    naming it."""
    def damaged(name: str, why) -> CheckpointError:
        first = str(why).strip().splitlines()[0] if str(why).strip() else type(why).__name__
        return CheckpointError(f"{state / name}: unreadable ({first}); the training state is damaged: start again "
                               f"in a new --out, or restore the folder from a copy")

    try:
        trainer = json.loads((state / "trainer.json").read_text())
    except (OSError, ValueError) as e:
        raise damaged("trainer.json", e) from e
    if trainer.pop("world_size", 1) != world.size:
        raise CheckpointError(f"{state} was written by a run with a different number of processes; "
                              f"resume with the same torchrun --nproc_per_node")
    try:
        lora = load_file(str(state / "lora.safetensors"))
    except (OSError, SafetensorError) as e:
        raise damaged("lora.safetensors", e) from e
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(lora) != set(params) or any(lora[n].shape != p.shape for n, p in params.items()):
        raise CheckpointError(f"{state}: saved LoRA parameters do not match this model/LoRA configuration")
    try:
        optimizer.load_state_dict(torch.load(state / "optimizer.pt", weights_only=True))
    except (OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError, EOFError) as e:
        raise damaged("optimizer.pt", e) from e
    try:
        rng = torch.load(state / "rng.pt", weights_only=True)[world.rank]
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    except (OSError, RuntimeError, ValueError, KeyError, IndexError, TypeError, pickle.UnpicklingError,
            EOFError) as e:
        raise damaged("rng.pt", e) from e
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(lora[n])
    return trainer


def write_checkpoint(what: str, out: Path, save) -> None:
    """Run `save()`; a failed write (disk full, no permission) becomes a one-line error that says what is
    intact and how to go on (`--resume` where a training state exists, else start again)."""
    try:
        save()
    except (OSError, SafetensorError) as e:
        going_on = ("rerun with --resume" if find_state(out) is not None else
                    "start again (no training state was saved yet)")
        raise CheckpointError(f"could not write {what} in {out}: {e}. Nothing was half-written: every earlier "
                              f"checkpoint is intact. Free disk space (or pick another --out) and {going_on}") from e
