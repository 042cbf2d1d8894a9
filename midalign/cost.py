"""What a training run will cost in time, said before it is spent: an estimate from the run's floating-point
work and this machine's measured matrix-product rate at the start, then the measured seconds per update
after the first few updates (docs/performance.md)."""

from __future__ import annotations

import time

import torch

GPU_SIZED_HOURS = 24  # a CPU estimate beyond this says the settings are sized for a GPU
COST_SAMPLE = 512  # task examples tokenized (spread over those the run draws) for the estimate made at start
MEASURE_AFTER = 4  # updates: the first is a warm-up; updates 2..MEASURE_AFTER give the measured rate


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int = 1024, reps: int = 3) -> float:
    """FLOP/s of an n×n×n product in `dtype` on `device` (the best of `reps`, after one warm-up)."""
    a = b = torch.full((n, n), 0.5, device=device, dtype=dtype)  # no random numbers: the run's RNG stays untouched
    best = float("inf")
    for i in range(reps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def pass_flops(config, tokens: float, layers: int | None = None, head_tokens: float = 0) -> float:
    """Forward + backward-to-inputs FLOPs of a LoRA micro-batch (the base weights frozen: 4 × parameters ×
    tokens for the projection matrices of the layers run, and the LM head on `head_tokens`)."""
    d, L = config.hidden_size, config.num_hidden_layers
    kv = config.num_key_value_heads * config.head_dim
    per_layer = d * (config.num_attention_heads * config.head_dim) * 2 + 2 * d * kv + 3 * d * config.intermediate_size
    return 4 * per_layer * (layers or L) * tokens + 4 * config.vocab_size * d * head_tokens


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def estimate_line(flops_per_update: float, updates: int, rate: float, device: torch.device, dtype: torch.dtype,
                  preset: str) -> str:
    """The up-front estimate: the run's work at the measured product rate (a floor: measured training steps
    run at about half of it, bench/RESULTS.md), and a plain warning when a CPU would need days."""
    floor = flops_per_update * updates / rate
    line = (f"[cost] ≈ {flops_per_update / 1e12:.2f} TFLOP per update × {updates} updates; this machine's "
            f"{str(dtype).removeprefix('torch.')} matrix products run at {rate / 1e12:.2f} TFLOP/s: at least "
            f"{hours(floor)}, about {hours(2 * floor)} at the ≈50% of that rate training reaches")
    if device.type == "cpu" and 2 * floor > GPU_SIZED_HOURS * 3600:
        line += (f". These settings (preset {preset}) are sized for a GPU: on this CPU that is "
                 f"{2 * floor / 86400:.0f} days; lower --max-steps or use --preset demo to try the method here")
    return line


def measured_line(seconds: float, updates_timed: int, done: int, total: int) -> str:
    """After the first few updates: their measured rate and what it means for the updates left."""
    per = seconds / updates_timed
    left = per * (total - done)
    end = time.strftime("%H:%M", time.localtime(time.time() + left))
    return (f"[cost] measured {per:.1f} s per update (updates {done - updates_timed + 1}–{done}): "
            f"{total - done} updates left ≈ {hours(left)} (ends ≈ {end})")
