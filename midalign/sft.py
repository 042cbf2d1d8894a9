"""The task objective (paper §3, REFERENCE.md §3): causal LM cross-entropy on the answer only.

Prompt tokens are masked; the answer is followed by the model's end-of-turn token, which counts.
The vocabulary projection runs only at the positions that predict answer tokens — the loss is the
same as projecting every position, at a fraction of the cost for long prompts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from midalign.data.tasks import Example
from midalign.tokenizer import ChatTokenizer

IGNORE = -100


def encode_examples(examples: list[Example], tok: ChatTokenizer, max_length: int | None = None) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids + end-of-turn) per example; over-long examples lose prompt tokens from the left."""
    out = []
    for ex in examples:
        messages = ex.messages() if ex.system else ex.messages()[1:]
        prompt, answer = tok.supervised_ids(messages, ex.answer)
        if max_length and len(prompt) + len(answer) > max_length:
            prompt = prompt[max(0, len(prompt) + len(answer) - max_length):]
        out.append((prompt, answer))
    return out


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded (input_ids, attention_mask, labels), labels = -100 on prompt and padding."""
    T = max(len(p) + len(a) for p, a in batch)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), T), dtype=torch.long)
    labels = torch.full((len(batch), T), IGNORE, dtype=torch.long)
    for i, (p, a) in enumerate(batch):
        n = len(p) + len(a)
        ids[i, :n] = torch.tensor(p + a)
        mask[i, :n] = 1
        labels[i, len(p):n] = torch.tensor(a)
    return ids, mask, labels


def answer_tokens(labels: Tensor) -> int:
    """Positions with a loss in `labels` (B, T): answer tokens that have a predecessor."""
    return int((labels[:, 1:] != IGNORE).sum())


def task_loss(model, ids: Tensor, mask: Tensor, labels: Tensor, num_tokens: int | None = None) -> Tensor:
    """Mean cross-entropy over answer tokens; logits computed only where a label follows.

    num_tokens: divide the summed loss by this count instead (a data-parallel rank passes the global
    batch's count, so that the ranks' losses add up to the global mean).
    """
    out = model(ids, mask, logits_to_keep=None)  # (B, T, d) final hidden states, no head yet
    targets = labels[:, 1:]
    keep = targets != IGNORE  # position t predicts token t + 1
    hidden = out.last_hidden_state[:, :-1][keep]  # (n_answer_tokens, d)
    logits = model.lm_head(hidden).float()
    if num_tokens is None:
        return F.cross_entropy(logits, targets[keep])
    return F.cross_entropy(logits, targets[keep], reduction="sum") / num_tokens
