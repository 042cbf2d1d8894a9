"""Training schedule (paper §3, App. D.1; docs/method.md §2, §4): alternation, accumulation, learning rate,
and each objective's part of an update's gradient."""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from midalign.data.tasks import Pair

TASK, ALIGN = "task", "align"


def micro_batch_kinds(grad_accum: int, task: bool = True, align: bool = True) -> list[str]:
    """The objectives of the micro-batches summed into one optimizer update, alternating task first.

    With accumulation 4 and both objectives: task, align, task, align.
    """
    if not (task or align):
        raise ValueError("at least one objective (task or alignment) must be on")
    if task and align:
        if grad_accum < 2 or grad_accum % 2:
            raise ValueError(f"--grad-accum must be even (task and alignment alternate), got {grad_accum}")
        return [TASK if i % 2 == 0 else ALIGN for i in range(grad_accum)]
    return [TASK if task else ALIGN] * grad_accum


def inverse_sqrt_lr(step: int, lr: float, warmup: int) -> float:
    """Learning rate for optimizer update `step` (1-based): lr·t/W during warmup, then lr·√(W/t)."""
    warmup = max(warmup, 1)
    if step <= warmup:
        return lr * step / warmup
    return lr * math.sqrt(warmup / step)


@lru_cache(maxsize=4)  # an epoch's micro-batches share it (the run's list of drawn examples took 75 s without)
def epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    """A reproducible shuffle of n items for one epoch (resuming needs no saved data state)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(n, generator=g).tolist())


def task_batch(n_examples: int, batch_size: int, index: int, seed: int) -> list[int]:
    """Example indices of the `index`-th task micro-batch of the run (epochs reshuffled, last partial dropped)."""
    per_epoch = max(n_examples // batch_size, 1)
    epoch, b = divmod(index, per_epoch)
    return list(epoch_order(n_examples, seed, epoch)[b * batch_size:(b + 1) * batch_size])


def alignment_batch(by_lang: dict[str, list[Pair]], batch_size: int, index: int, seed: int) -> list[Pair]:
    """The `index`-th alignment micro-batch: languages drawn uniformly (resampling to a uniform language
    distribution), a random pair from each, and no English sentence twice — a repeated English side
    would make a true translation a negative."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * index + 1)
    langs = list(by_lang)
    batch, seen = [], set()
    for _ in range(batch_size * 20):
        lang = langs[int(torch.randint(len(langs), (1,), generator=g))]
        pair = by_lang[lang][int(torch.randint(len(by_lang[lang]), (1,), generator=g))]
        if pair.en not in seen:
            seen.add(pair.en)
            batch.append(pair)
            if len(batch) == batch_size:
                break
    return batch


class GradientSplit:
    """Each objective's part of one update's summed gradient, before clipping (joint runs: how strongly the
    task and the alignment loss pull; paper §3 sums them into one update).

    Call `add(kind)` after each micro-batch's backward: the growth of the accumulated gradients since the
    previous call is that micro-batch's gradient. `norms()` gives each objective's L2 norm and starts the
    next update. Gradients are this process's own (under torchrun, before the all-reduce)."""

    def __init__(self, params: list[torch.Tensor]):
        self.params = params
        self.seen: torch.Tensor | None = None
        self.parts: dict[str, torch.Tensor] = {}

    def _flat(self) -> torch.Tensor:
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).float()
                          for p in self.params])

    def add(self, kind: str) -> None:
        now = self._flat()
        step = now if self.seen is None else now - self.seen
        self.parts[kind] = self.parts[kind] + step if kind in self.parts else step
        self.seen = now

    def norms(self) -> dict[str, float]:
        out = {kind: part.norm().item() for kind, part in self.parts.items()}
        self.seen, self.parts = None, {}
        return out
