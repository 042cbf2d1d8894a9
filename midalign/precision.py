"""Numeric precision of a run (docs/method.md §4: bf16 on GPU, fp32 on CPU). bf16 means bf16 base weights
and bf16 autocast, with fp32 LoRA factors and optimizer state; pooling, cosine similarities, the
contrastive softmax and the task cross-entropy are computed in fp32 either way. The same path runs on
CPU (`--dtype bf16`), so that the CUDA setting is exercised by the CPU test suite."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """--dtype NAME, else bf16 on CUDA (the paper's setting) and fp32 on CPU (bf16 matmuls are slow there)."""
    if name is not None:
        return DTYPES[name]
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (x86 AVX512-BF16 or AMX-BF16, Arm BF16): where it has
    not, bf16 matmuls are emulated and several times slower than fp32. Measure before relying on it."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = {w for line in f if line.lower().startswith(("flags", "features")) for w in line.split()}
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def autocast(device: torch.device, dtype: torch.dtype) -> Callable[[], ContextManager]:
    """A factory of the forward passes' autocast context: bf16 autocast for bf16 runs, nothing for fp32."""
    if dtype == torch.bfloat16:
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext
