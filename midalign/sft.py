"""The task objective (paper §3, docs/method.md §3): causal LM cross-entropy on the answer only.

Prompt tokens are masked; the answer is followed by the model's end-of-turn token, which counts.
The vocabulary projection runs only at the positions that predict answer tokens — the loss is the
same as projecting every position, at a fraction of the cost for long prompts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from midalign.data.tasks import Example
from midalign.tokenizer import ChatTokenizer

IGNORE = -100


class EncodedExamples(Sequence):
    """Task examples as (prompt ids, answer ids + end-of-turn), tokenized on first use and kept.

    A run prepares only the examples its micro-batches draw (`prepare`): 16 updates over the 57,570
    MASSIVE training examples tokenize the few dozen they use, not all of them. Over-long examples
    lose prompt tokens from the left.
    """

    CHUNK = 2048  # examples rendered and tokenized together

    def __init__(self, examples: list[Example], tok: ChatTokenizer, max_length: int | None = None):
        self.examples, self.tok, self.max_length = examples, tok, max_length
        self._ids: dict[int, tuple[list[int], list[int]]] = {}

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.prepare(range(len(self))[i])
        return self.prepare([i])[0]

    def __iter__(self):
        return iter(self.prepare(range(len(self))))

    def prepare(self, indices, progress: bool = False) -> list[tuple[list[int], list[int]]]:
        """The encoded examples at `indices`, tokenizing in batches those not encoded yet."""
        indices = list(indices)
        todo = sorted(set(indices) - self._ids.keys())
        for start in tqdm(range(0, len(todo), self.CHUNK), desc="tokenize", unit="chunk", leave=False,
                          disable=not progress or len(todo) <= self.CHUNK):
            chunk = todo[start:start + self.CHUNK]
            encoded = self.tok.supervised_ids_batch([self.examples[i].messages() for i in chunk],
                                                    [self.examples[i].answer for i in chunk])
            for i, (prompt, answer) in zip(chunk, encoded):
                if self.max_length and len(prompt) + len(answer) > self.max_length:
                    prompt = prompt[max(0, len(prompt) + len(answer) - self.max_length):]
                self._ids[i] = (prompt, answer)
        return [self._ids[i] for i in indices]

    def prepared(self) -> list[tuple[list[int], list[int]]]:
        """The examples encoded so far."""
        return list(self._ids.values())


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
