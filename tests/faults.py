"""Run train.py with one injected fault (used by test_reliability.py in a subprocess).

    python tests/faults.py POINT train.py-arguments…

POINT:
  kill-mid-step    SIGKILL during update 5 (after the checkpoint of update 4)
  ctrl-c-mid-step  SIGINT (Ctrl-C) during update 5
  kill-in-save     SIGKILL inside the second training-state write (after its optimizer file)
  kill-in-rename   SIGKILL between moving the old state aside and renaming the new one into place
  nan-task         the task loss of update 3 is NaN
"""

import math
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import train  # noqa: E402
from midalign import training  # noqa: E402
from midalign.cli import run  # noqa: E402


def die(sig: int = signal.SIGKILL) -> None:
    os.kill(os.getpid(), sig)


def inject(point: str) -> None:
    if point in ("kill-mid-step", "ctrl-c-mid-step"):
        real_lr, sig = training.inverse_sqrt_lr, signal.SIGKILL if point == "kill-mid-step" else signal.SIGINT
        training.inverse_sqrt_lr = lambda step, *a: die(sig) if step == 5 else real_lr(step, *a)
    elif point == "kill-in-save":
        real_save, saves = torch.save, []

        def save(obj, f, *a, **k):
            real_save(obj, f, *a, **k)
            if Path(getattr(f, "name", f)).name == "optimizer.pt":  # a path, or the file object state.py passes
                saves.append(f)
                if len(saves) == 2:
                    die()
        training.torch.save = save
    elif point == "kill-in-rename":
        real_replace = os.replace

        def replace(src, dst):
            real_replace(src, dst)
            if Path(dst).name.startswith(".state.old-"):
                die()
        os.replace = replace
    elif point == "nan-task":
        real_loss, calls = training.task_loss, []

        def task_loss(model, *a, **k):
            loss = real_loss(model, *a, **k)
            if model.training:
                calls.append(1)
                if len(calls) == 3:  # one task micro-batch per update in the tests' settings
                    return loss * math.nan
            return loss
        training.task_loss = task_loss
    else:
        sys.exit(f"unknown fault {point}")


if __name__ == "__main__":
    inject(sys.argv[1])
    run(lambda: train.main(sys.argv[2:]), errors=(training.TrainingDiverged,))
