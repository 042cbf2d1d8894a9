"""What every script shares: numeric arguments checked where they are parsed, and how a script ends on a
user error or an interrupt (one line, never a traceback)."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable

from midalign.errors import MidalignError


def run(main: Callable[[], None], errors: tuple[type[BaseException], ...] = ()) -> None:
    """Call a script's `main()`: a user error (MidalignError, or one of `errors`) ends with `error: …` and
    exit status 1; Ctrl-C with one line and status 130 (checkpoints already written stay, and `--resume`
    continues a training from the last one)."""
    try:
        main()
    except (MidalignError, *errors) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C); files written so far are complete", file=sys.stderr)
        sys.exit(130)


def add_device_arguments(group, dtype_help: str = "weights' precision (default: bf16 on cuda, fp32 on cpu); "
                                                         "LoRA factors stay fp32") -> None:
    """--device and --dtype, as every script that loads a model takes them."""
    from midalign.precision import DTYPES

    group.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    group.add_argument("--dtype", choices=sorted(DTYPES), help=dtype_help)


def add_model_arguments(group, default_model: str) -> None:
    """--model, --adapter, --device and --dtype, as the scripts that run a (possibly adapted) model take them."""
    from pathlib import Path

    group.add_argument("--model", default=default_model, help="offline alias, local HF folder or hub id")
    group.add_argument("--adapter", type=Path, help="LoRA adapter folder (PEFT format), merged into the weights")
    add_device_arguments(group)


def add_template_argument(group) -> None:
    """--no-default-template, as every script that renders chat prompts takes it."""
    group.add_argument("--no-default-template", action="store_true",
                       help="Llama 3: the template the released official adapters were trained with (no "
                            "<|begin_of_text|> in the text, a newline after each <|eot_id|>; the tokenizer adds BOS)")


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (a batch size, a count, an interval)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a learning rate, a temperature)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be greater than 0")
    return value
