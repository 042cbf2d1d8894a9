"""The alignment objective at a middle layer (paper §3; docs/method.md §1), with its pooling and loss as
records a fork extends by one entry each (docs/method.md §9).

A sentence's representation is a pooling (`POOLS`) of the output of decoder layer i (HF
`hidden_states[i]`, no final norm) over its real tokens: `mean` (the paper's), `mean-skip-first` (the
mean without the first token, whose "attention sink" activation is hundreds of times larger than the
rest in middle layers of Llama/Qwen models), `bos` (the first token: the official code's other option)
and `last` (the last real token). The loss (`LOSSES`) compares the pooled pairs: InfoNCE over cosine
similarities / τ between the batch's translations,

    L = -1/n Σ_k log softmax_j(cos(h_s_k, h_t_j) / τ)[k]

one-directional as in the official code (non-English side s is the anchor, classified among the
batch's English sentences t; gradients reach both sides), or `infonce-symmetric` (the mean of both
directions). Several layers can be aligned at once: the loss is averaged over them, from one pass that
stops at the highest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from midalign.batching import left_pad
from midalign.errors import SettingsError


def mean_pool(hidden: Tensor, mask: Tensor, skip_first: bool = False) -> Tensor:
    """(B, T, d) hidden states, (B, T) mask of real tokens → (B, d) mean over real tokens, in fp32.

    skip_first drops each sequence's first real token (left or right padding alike), except in a sequence
    of one token, which keeps it (it would pool to a zero vector, which has no direction to align).
    """
    mask = mask.to(torch.float32)
    if skip_first:
        first = (mask.cumsum(-1) == 1) & (mask > 0) & (mask.sum(-1, keepdim=True) > 1)  # first real token, if 2+
        mask = mask * (~first)
    denom = mask.sum(-1, keepdim=True).clamp(min=1.0)
    return (hidden.float() * mask[..., None]).sum(1) / denom


def mean_skip_first(hidden: Tensor, mask: Tensor) -> Tensor:
    """The mean over real tokens without the first (the attention sink); see `mean_pool`."""
    return mean_pool(hidden, mask, skip_first=True)


def first_token(hidden: Tensor, mask: Tensor) -> Tensor:
    """(B, d) state of each sequence's first real token, in fp32: the official code's `bos` pooling, which
    takes position 0 of right-padded batches (midalign pads left, so position 0 may be padding)."""
    index = mask.to(torch.int64).argmax(-1)  # the first 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index].float()


def last_token(hidden: Tensor, mask: Tensor) -> Tensor:
    """(B, d) state of each sequence's last real token, in fp32 (left or right padding alike)."""
    index = mask.shape[-1] - 1 - mask.to(torch.int64).flip(-1).argmax(-1)  # the last 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index].float()


# name → (hidden (B, T, d), mask (B, T)) → (B, d) fp32. A new pooling is one entry: training, the dev loss,
# retrieval and every script's --pool choices read this table.
POOLS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mean": mean_pool, "mean-skip-first": mean_skip_first, "bos": first_token, "last": last_token}


def contrastive_loss(anchor: Tensor, positive: Tensor, temperature: float, symmetric: bool = False) -> Tensor:
    """InfoNCE on cosine/τ: row k of `anchor` (n, d) must pick row k of `positive` (n, d) among all n.
    Always in fp32, also inside a bf16 autocast region (cosines of near-parallel vectors need it)."""
    with torch.autocast(anchor.device.type, enabled=False):
        logits = F.normalize(anchor.float(), dim=-1) @ F.normalize(positive.float(), dim=-1).T / temperature  # (n, n)
        target = torch.arange(logits.shape[0], device=logits.device)
        loss = F.cross_entropy(logits, target)
        if symmetric:
            loss = (loss + F.cross_entropy(logits.T, target)) / 2
    return loss


# name → (pooled non-English (n, d), pooled English (n, d), AlignConfig) → scalar. A new loss is one entry.
LOSSES: dict[str, Callable[[Tensor, Tensor, "AlignConfig"], Tensor]] = {
    "infonce": lambda src, en, config: contrastive_loss(src, en, config.temperature),
    "infonce-symmetric": lambda src, en, config: contrastive_loss(src, en, config.temperature, symmetric=True),
}


def choose(kind: str, name: str, table: dict) -> None:
    """An error naming the choices when `name` is not in `table` (a misspelt pooling or loss never falls
    back to another)."""
    if name not in table:
        raise SettingsError(f"unknown {kind} '{name}': choose from {', '.join(table)}")


@dataclass(frozen=True)
class AlignConfig:
    """The alignment objective's settings (paper §3, App. D.1), passed whole to the loss and the dev loss."""
    layer: int | tuple[int, ...]  # decoder layer(s) whose output is pooled, 1-based (HF hidden_states[layer])
    temperature: float  # τ: 0.1 for Llama 3, 1.5 for Qwen 2.5
    pool: str = "mean"  # a name in POOLS
    loss: str = "infonce"  # a name in LOSSES
    batch_size: int = 32  # translation pairs per contrastive micro-batch
    max_length: int = 128  # tokens kept per sentence

    def __post_init__(self):
        choose("pooling", self.pool, POOLS)
        choose("alignment loss", self.loss, LOSSES)
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature > 0):
            raise SettingsError(f"temperature {self.temperature}: τ must be a positive number (0.1 and 1.5 in the paper)")
        if not self.layers or any(isinstance(l, bool) or not isinstance(l, int) or l < 1 for l in self.layers):
            raise SettingsError(f"alignment layer {self.layer}: decoder layers are counted from 1")

    @property
    def layers(self) -> tuple[int, ...]:
        return (self.layer,) if isinstance(self.layer, int) else tuple(self.layer)


def infonce_floor(n: int, temperature: float) -> float:
    """The lowest `contrastive_loss` reachable with n pairs at τ: each positive at cosine 1 and the n anchors
    on a regular simplex (every negative at cosine −1/(n−1), the lowest n unit vectors can all share):

        L_min = ln(1 + (n − 1) · exp(−(1 + 1/(n − 1)) / τ))

    Chance, every cosine equal, is ln n; (ln n − L) / (ln n − L_min) is the share of the reachable range a
    loss L has covered. At n = 16: 2.124 at τ 1.5, 0.0004 at τ 0.1."""
    if n < 2:
        raise ValueError(f"the contrastive loss needs at least 2 pairs, got {n}")
    return math.log1p((n - 1) * math.exp(-(1 + 1 / (n - 1)) / temperature))


def pooled_states(model, token_ids: list[list[int]], layers: tuple[int, ...], pool: str = "mean", pad_id: int = 0,
                  max_tokens: int = 256) -> Tensor:
    """(len(layers), N, d) pooled outputs of the decoder `layers` for N tokenised sentences, with gradients.

    Sentences are run in length-sorted chunks of about `max_tokens` padded tokens: each sentence's
    representation does not depend on its batch-mates, so this equals one padded batch while wasting
    little compute on padding (a micro-batch of 32 Tatoeba sentences, 303 real tokens, is 800 tokens as one
    padded batch; in chunks of 256 the pass takes 0.7× the time: bench/RESULTS.md). Each pass stops after
    the highest layer (no upper layers, no LM head).
    """
    choose("pooling", pool, POOLS)
    device = model.lm_head.weight.device
    order = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))
    chunks, current = [], []
    for i in order:  # longest first; a chunk closes when its padded size would pass max_tokens
        if current and (len(current) + 1) * len(token_ids[current[0]]) > max_tokens:
            chunks.append(current)
            current = []
        current.append(i)
    chunks.append(current)
    pooled = [None] * len(token_ids)
    for chunk in chunks:
        ids, mask = left_pad([token_ids[i] for i in chunk], pad_id, device)
        hidden = model(ids, mask, output_hidden_states=list(layers), stop_after_layer=max(layers)).hidden_states
        rows = torch.stack([POOLS[pool](hidden[layer], mask) for layer in layers], dim=1)  # (chunk, L, d)
        for i, row in zip(chunk, rows):
            pooled[i] = row
    return torch.stack(pooled, dim=1)


def alignment_loss(model, src_ids: list[list[int]], en_ids: list[list[int]], config: AlignConfig, pad_id: int = 0,
                   gather: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """The configured loss at the configured layer(s) (their mean) for n translation pairs (tokenised raw
    sentences); the non-English side first (the official code's anchor).

    gather: under data parallelism, concatenates the pooled sentences of all ranks so that the
    negatives are the whole global batch (midalign.distributed.World.gather).
    """
    pooled = pooled_states(model, list(src_ids) + list(en_ids), config.layers, config.pool, pad_id)  # (L, 2n, d)
    n, losses = len(src_ids), []
    for per_layer in pooled:
        src, en = per_layer[:n], per_layer[n:]
        if gather is not None:
            src, en = gather(src), gather(en)
        losses.append(LOSSES[config.loss](src, en, config))
    return torch.stack(losses).mean()


def encode_pairs(tok, pairs, max_length: int) -> tuple[list[list[int]], list[list[int]]]:
    """(non-English, English) token ids of translation pairs: raw sentences with the tokenizer's default
    special tokens (no chat template), cut to max_length."""
    cut = lambda texts: [ids[:max_length] for ids in tok.encode_batch(texts)]
    return cut([p.text for p in pairs]), cut([p.en for p in pairs])


def pairs_loss(model, tok, pairs, config: AlignConfig, gather: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """`alignment_loss` of translation pairs given as text (midalign.data.tasks.Pair): each side the raw
    sentence with the tokenizer's default special tokens, no chat template, cut to `config.max_length`."""
    return alignment_loss(model, *encode_pairs(tok, pairs, config.max_length), config, tok.pad_id, gather)
