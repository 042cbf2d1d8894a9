"""Layer-wise translation retrieval, the paper's diagnostic of language-neutral layers (§2, Fig. 1, Table 2).

Each sentence is embedded per layer by mean pooling (the same pooling as the alignment loss), and each
source sentence must find its translation among all target sentences. Retrieval uses LASER's
(xsim) ratio margin with k = 4 (docs/method.md §6):

    avg_xy[i] = mean of the k largest cos(x_i, ·),  avg_yx[j] = mean of the k largest cos(·, y_j)
    margin(i, j) = cos(x_i, y_j) / ((avg_xy[i] + avg_yx[j]) / 2)

and for each i the candidate with the largest margin among its k nearest neighbours is chosen
(ties at the k-th similarity are all kept as candidates; among equal margins the lowest index wins).
Correct when it is j = i.
"""

from __future__ import annotations

import math
import time
from itertools import permutations
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from midalign.align import POOLS, choose
from midalign.batching import left_pad, length_sorted_batches
from midalign.checks import among, check, count, each_among, indices
from midalign.errors import SettingsError
from midalign.model import CausalLM

MARGINS = ("ratio", "cosine")


def margin_retrieval(x: Tensor, y: Tensor, k: int = 4, margin: str = "ratio") -> Tensor:
    """For each row of x (n, d), the index of its retrieved row of y (m, d); inputs are not modified."""
    s = F.normalize(x.float(), dim=-1) @ F.normalize(y.float(), dim=-1).T  # (n, m) cosine
    if margin == "cosine":
        return s.argmax(dim=1)
    if margin != "ratio":
        raise ValueError(f"unknown margin '{margin}' ({', '.join(MARGINS)})")
    k = min(k, s.shape[0], s.shape[1])
    top_xy = s.topk(k, dim=1).values  # (n, k)
    avg_xy = top_xy.mean(1)
    avg_yx = s.topk(k, dim=0).values.mean(0)  # (m,)
    scores = s / ((avg_xy[:, None] + avg_yx[None, :]) / 2)
    candidate = s >= top_xy[:, -1:]  # the k nearest (and any tied with the k-th)
    scores = scores.masked_fill(~candidate, float("-inf"))
    return scores.argmax(dim=1)  # first maximal index on ties


def retrieval_accuracy(x: Tensor, y: Tensor, k: int = 4, margin: str = "ratio") -> float:
    """Share of rows i of x whose retrieved row of y is i (x and y are translations row by row)."""
    pred = margin_retrieval(x, y, k, margin)
    return (pred == torch.arange(x.shape[0], device=pred.device)).float().mean().item()


@torch.inference_mode()
def embed_layers(model: CausalLM, token_ids: Sequence[Sequence[int]], layers: Sequence[int],
                 pools: Sequence[str] = ("mean",), batch_size: int = 16, pad_id: int = 0,
                 progress=None) -> dict[str, Tensor]:
    """Pooled embeddings {pool: (len(layers), N, d)} of N tokenised sentences.

    One forward pass per length-sorted batch, stopping after max(layers): no upper layers, no LM head,
    and every pooling computed from the same hidden states.
    """

    for pool in pools:
        choose("pooling", pool, POOLS)
    device = model.lm_head.weight.device
    last = max(layers)
    out = {p: torch.empty(len(layers), len(token_ids), model.config.hidden_size) for p in pools}
    for batch in length_sorted_batches([len(t) for t in token_ids], batch_size):
        ids, mask = left_pad([token_ids[i] for i in batch], pad_id, device)
        hidden = model(ids, mask, output_hidden_states=layers, stop_after_layer=last, logits_to_keep=None).hidden_states
        for pool in pools:
            for li, layer in enumerate(layers):
                out[pool][li, batch] = POOLS[pool](hidden[layer], mask).cpu()
        if progress is not None:
            progress.update(len(batch))
    return out


def accuracy_table(embeddings: dict[str, Tensor], k: int = 4, margin: str = "ratio") -> Tensor:
    """acc[l, s, t] for every layer l and ordered language pair s≠t (diagonal NaN); embeddings: lang → (L, N, d)."""
    langs = list(embeddings)
    L = next(iter(embeddings.values())).shape[0]
    acc = torch.full((L, len(langs), len(langs)), float("nan"))
    for l in range(L):
        for (si, s), (ti, t) in permutations(enumerate(langs), 2):
            acc[l, si, ti] = retrieval_accuracy(embeddings[s][l], embeddings[t][l], k, margin)
    return acc


def paper_layers(layers: Sequence[int]) -> list[int]:
    """Positions in `layers` of the paper's aggregate: even-numbered layers, the embeddings (0) excluded."""
    return [i for i, layer in enumerate(layers) if layer > 0 and layer % 2 == 0]


def paper_average(acc: Tensor, layers: Sequence[int]) -> float:
    """The paper's aggregate: mean over all directions and over even-numbered layers, embeddings excluded."""
    keep = paper_layers(layers)
    if not keep:
        raise ValueError("no even-numbered layer > 0 among the evaluated layers")
    return torch.nanmean(acc[keep]).item()


def summarise(acc: Tensor, layers: Sequence[int], langs: Sequence[str]) -> dict:
    """Accuracy per layer (mean over directions), the paper's aggregate, the peak layer, and per language
    (as source and as target) and per direction, from `accuracy_table`'s acc[l, s, t]."""
    per_layer = [torch.nanmean(acc[i]).item() for i in range(len(layers))]
    return {
        "per_layer": per_layer,
        "paper_average": paper_average(acc, layers) if paper_layers(layers) else None,
        "peak_layer": layers[max(range(len(layers)), key=lambda i: -math.inf if math.isnan(per_layer[i]) else per_layer[i])],
        "per_language": {lang: {"as_source": [torch.nanmean(acc[i, li]).item() for i in range(len(layers))],
                                "as_target": [torch.nanmean(acc[i, :, li]).item() for i in range(len(layers))]}
                         for li, lang in enumerate(langs)},
        "per_direction": {f"{s}-{t}": [acc[i, si, ti].item() for i in range(len(layers))]
                          for si, s in enumerate(langs) for ti, t in enumerate(langs) if s != t},
    }


def layer_retrieval(model: CausalLM, tok, sentences: dict[str, list[str]], layers: Sequence[int],
                    pools: Sequence[str] = ("mean",), k: int = 4, margin: str = "ratio", batch_size: int = 16,
                    progress: bool = True) -> dict:
    """Retrieval accuracy of every layer and pooling for parallel `sentences` (lang → row-aligned sentences),
    each embedded once: the raw sentence with the tokenizer's default special tokens, as the alignment
    loss sees it."""
    check("layer_retrieval", layers=(layers, indices(model.config.num_hidden_layers)), pools=(pools, each_among(POOLS)), k=(k, count(1)), margin=(margin, among(MARGINS)),
          batch_size=(batch_size, count(1)))
    langs = list(sentences)
    sizes = {lang: len(sentences[lang]) for lang in langs}
    if len(langs) < 2 or len(set(sizes.values())) != 1 or not min(sizes.values()):
        raise SettingsError(f"layer_retrieval: sentences must be two or more languages of the same number (≥ 1) of "
                            f"row-aligned sentences; got {sizes}")
    ids = tok.encode_batch([s for lang in langs for s in sentences[lang]])
    start = time.perf_counter()
    with tqdm(total=len(ids), desc="embed", unit="sent", disable=not progress) as bar:
        emb = embed_layers(model, ids, layers, pools, batch_size, tok.pad_id, progress=bar)
    n = len(sentences[langs[0]])
    return {"langs": langs, "layers": list(layers), "n_sentences": n, "n_tokens": sum(map(len, ids)),
            "forward_s": round(time.perf_counter() - start, 1),
            "pools": {pool: summarise(accuracy_table({lang: emb[pool][:, i * n:(i + 1) * n]
                                                      for i, lang in enumerate(langs)}, k, margin), layers, langs)
                      for pool in pools}}
