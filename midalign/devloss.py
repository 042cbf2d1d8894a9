"""The early-stopping dev loss (paper App. D.1; docs/method.md §2): mean task loss over the dev examples
plus mean alignment loss over fixed dev batches, summed as in the official code."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch

from midalign.align import AlignConfig, pairs_loss
from midalign.data.assemble import group_pairs
from midalign.data.tasks import Pair
from midalign.schedule import alignment_batch
from midalign.sft import collate, task_loss

DEV_BATCH_SEED = 12345  # the same dev alignment batches at every evaluation


@torch.no_grad()
def dev_losses(model, tok, dev_task: list[tuple[list[int], list[int]]], dev_pairs: list[Pair], align: AlignConfig, *,
               batch_size: int, align_batches: int, autocast: Callable = nullcontext) -> dict[str, float]:
    """{dev_task_loss, dev_align_loss, dev_loss}; a part without dev data is left out (and counts 0)."""
    model.eval()
    result = {}
    if dev_task:
        losses = []
        for i in range(0, len(dev_task), batch_size):
            chunk = dev_task[i:i + batch_size]
            with autocast():
                batch = (t.to(model.lm_head.weight.device) for t in collate(chunk, tok.pad_id))
                losses.append((task_loss(model, *batch).item(), len(chunk)))
        result["dev_task_loss"] = sum(l * n for l, n in losses) / sum(n for _, n in losses)
    if dev_pairs:
        losses = []
        by_lang = group_pairs(dev_pairs)
        for i in range(min(max(len(dev_pairs) // align.batch_size, 1), align_batches)):
            batch = alignment_batch(by_lang, align.batch_size, i, seed=DEV_BATCH_SEED)
            with autocast():
                losses.append(pairs_loss(model, tok, batch, align).item())
        result["dev_align_loss"] = sum(losses) / len(losses)
    result["dev_loss"] = result.get("dev_task_loss", 0.0) + result.get("dev_align_loss", 0.0)
    model.train()
    return result
