"""Data-parallel training under `torchrun` (issue: reliability and scale).

    torchrun --nproc_per_node 4 train.py --preset paper ...

`torchrun` starts one process per device and sets RANK / WORLD_SIZE / LOCAL_RANK; nothing else
launches processes. Every rank holds the same model and LoRA weights, takes a disjoint slice of each
global micro-batch (`items[rank::world]`), and the LoRA gradients are summed with one explicit
all-reduce per optimizer update. Losses are scaled so that the sum over ranks is the single-process
loss of the global batch:

- task: each rank divides its summed token cross-entropy by the *global* number of answer tokens;
- alignment: in-batch negatives per rank, as the paper's multi-GPU runs (each rank's InfoNCE over its
  own pairs, averaged over ranks); or, with `gather=True` (`--align-gather`), the pooled sentences of
  all ranks are gathered so every pair sees the whole global batch as negatives — then the result
  equals one process with the same global batch.

The explicit all-reduce (instead of wrapping the model in DistributedDataParallel) is what makes the
alignment step simple: its pass stops at layer i, so LoRA weights above i get no gradient there, and
the set of parameters holding a gradient is the same on every rank by construction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """The rank that writes files and prints."""
        return self.rank == 0

    def device(self) -> torch.device:
        """This process's device: its own GPU under torchrun with CUDA, else cuda when available, else cpu."""
        if self.size > 1 and torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def trim(self, items: list) -> list:
        """A global micro-batch cut to a multiple of the world size, so that every rank gets as many
        items (a short alignment batch — too few distinct English sentences — or a task set smaller
        than the batch); unchanged in one process."""
        if len(items) < self.size:
            raise ValueError(f"a micro-batch of {len(items)} cannot be split over {self.size} processes")
        return items[:len(items) - len(items) % self.size]

    def shard(self, items: list) -> list:
        """This rank's slice of a (trimmed) global micro-batch."""
        return self.trim(items)[self.rank::self.size]

    def sum(self, value: float) -> float:
        """Sum of a Python float over ranks (the identity in one process)."""
        if self.size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return t.item()

    def all_reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum the gradients of `params` over ranks in one flat buffer (parameters without a gradient skipped)."""
        if self.size == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def gather(self, x: Tensor) -> Tensor:
        """Concatenate `x` (same shape on every rank) over ranks along dim 0, with gradients flowing back."""
        return x if self.size == 1 else _Gather.apply(x)

    def main_first(self, fn):
        """fn() on rank 0, then on the other ranks — for work with a shared side effect such as a
        download: the other ranks find it done instead of writing the same files at the same time."""
        out = fn() if self.main else None
        if self.size > 1:
            dist.barrier()
        return out if self.main else fn()

    def gather_objects(self, obj) -> list:
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out


class _Gather(torch.autograd.Function):
    """all_gather forward; backward = this rank's slice of the gradient summed over ranks.

    Written with all_gather + all_reduce only, which every backend (gloo included) provides.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


def init_world() -> World:
    """The torchrun world (gloo on CPU, nccl on CUDA), or a one-process world without torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def close_world(world: World, finished: bool = True) -> None:
    """Tear the process group down. After a finished run every rank first waits for the others: gloo
    aborts a process (`terminate called without an active exception`) that destroys its group while a peer
    still holds the connection. After an error there is no barrier (a failed peer would never reach it)."""
    if world.size > 1 and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
