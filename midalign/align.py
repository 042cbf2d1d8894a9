"""The alignment objective at a middle layer (paper §3; docs/method.md §1).

Sentence representation = masked mean of the output of decoder layer i (HF `hidden_states[i]`, no
final norm) over real tokens. The first token of Llama/Qwen models carries an "attention sink"
activation hundreds of times larger than the rest in middle layers; `skip_first=True` leaves it out
(`--pool mean-skip-first`). The loss is InfoNCE over cosine similarities / τ between the batch's
translations:

    L = -1/n Σ_k log softmax_j(cos(h_s_k, h_t_j) / τ)[k]

one-directional as in the official code (non-English side s is the anchor, classified among the
batch's English sentences t), or symmetric (the mean of both directions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from midalign.batching import left_pad

POOLING = ("mean", "mean-skip-first")


@dataclass(frozen=True)
class AlignConfig:
    """The alignment objective's settings (paper §3, App. D.1), passed whole as LoRAConfig is for LoRA."""
    layer: int  # decoder layer whose output is pooled, 1-based (HF hidden_states[layer])
    temperature: float  # τ: 0.1 for Llama 3, 1.5 for Qwen 2.5
    pool: str = "mean"  # or "mean-skip-first": without the attention-sink first token
    symmetric: bool = False  # average both directions of the loss (the official code: non-English anchor only)
    batch_size: int = 32  # translation pairs per contrastive micro-batch
    max_length: int = 128  # tokens kept per sentence


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


def infonce_floor(n: int, temperature: float) -> float:
    """The lowest `contrastive_loss` reachable with n pairs at τ: each positive at cosine 1 and the n anchors
    on a regular simplex (every negative at cosine −1/(n−1), the lowest n unit vectors can all share):

        L_min = ln(1 + (n − 1) · exp(−(1 + 1/(n − 1)) / τ))

    Chance, every cosine equal, is ln n; (ln n − L) / (ln n − L_min) is the share of the reachable range a
    loss L has covered. At n = 16: 2.124 at τ 1.5, 0.0004 at τ 0.1."""
    if n < 2:
        raise ValueError(f"the contrastive loss needs at least 2 pairs, got {n}")
    return math.log1p((n - 1) * math.exp(-(1 + 1 / (n - 1)) / temperature))


def pooled_states(model, token_ids: list[list[int]], layer: int, pool: str = "mean", pad_id: int = 0,
                  max_tokens: int = 1024) -> Tensor:
    """(N, d) pooled outputs of decoder layer `layer` for N tokenised sentences, with gradients.

    Sentences are run in length-sorted chunks of about `max_tokens` padded tokens: each sentence's
    representation does not depend on its batch-mates, so this equals one padded batch while wasting
    little compute on padding. Each pass stops after `layer` (no upper layers, no LM head).
    """

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
        hidden = model(ids, mask, output_hidden_states=[layer], stop_after_layer=layer).hidden_states[layer]
        for i, row in zip(chunk, mean_pool(hidden, mask, skip_first=pool == "mean-skip-first")):
            pooled[i] = row
    return torch.stack(pooled)


def alignment_loss(model, src_ids: list[list[int]], en_ids: list[list[int]], layer: int, temperature: float,
                   pool: str = "mean", symmetric: bool = False, pad_id: int = 0,
                   gather: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Contrastive loss at decoder layer `layer` for n translation pairs (tokenised raw sentences).

    The non-English side is the anchor (official code); `symmetric` averages both directions.
    gather: under data parallelism, concatenates the pooled sentences of all ranks so that the
    negatives are the whole global batch (midalign.distributed.World.gather).
    """
    pooled = pooled_states(model, list(src_ids) + list(en_ids), layer, pool, pad_id)  # (2n, d)
    n = len(src_ids)
    src, en = pooled[:n], pooled[n:]
    if gather is not None:
        src, en = gather(src), gather(en)
    return contrastive_loss(src, en, temperature, symmetric)


def encode_pairs(tok, pairs, max_length: int) -> tuple[list[list[int]], list[list[int]]]:
    """(non-English, English) token ids of translation pairs: raw sentences with the tokenizer's default
    special tokens (no chat template), cut to max_length."""
    cut = lambda texts: [ids[:max_length] for ids in tok.encode_batch(texts)]
    return cut([p.text for p in pairs]), cut([p.en for p in pairs])


def pairs_loss(model, tok, pairs, config: AlignConfig, gather: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """`alignment_loss` of translation pairs given as text (midalign.data.tasks.Pair): each side the raw
    sentence with the tokenizer's default special tokens, no chat template, cut to `config.max_length`."""
    return alignment_loss(model, *encode_pairs(tok, pairs, config.max_length), config.layer, config.temperature, config.pool, config.symmetric, tok.pad_id,
                          gather)
