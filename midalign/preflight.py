"""Can the alignment objective work on this model, at this layer, with this pooling and τ? Forward passes
alone answer it before any training (docs/method.md §9).

For translation pairs drawn in micro-batches of n, at every layer and for every pooling in
`midalign.align.POOLS`:
- the mean cosine of translations and of non-translations (the batch's other pairs), and their
  separation as an AUC: the chance that a translation's cosine exceeds a non-translation's (0.5: none);
- the first token's share of the mean-pooled vector, ⟨h₁/T, m⟩ / ‖m‖² (the attention sink: near 1 when
  the first token alone sets the mean's direction);
- per τ: the loss at chance (ln n), the loss now (InfoNCE on the batches) and its floor
  (`midalign.align.infonce_floor`): the range the loss can still move.
A pooling is *inert* at a layer when non-translations already sit at cosine ≥ 0.95 (every sentence points
one way: the loss starts at chance with nothing to separate), *separating* when its AUC is ≥ 0.6, and
*weak* otherwise.
"""

from __future__ import annotations

import math
import random
import statistics

import torch
import torch.nn.functional as F
from tqdm import tqdm

from midalign.align import POOLS, contrastive_loss, encode_pairs, infonce_floor
from midalign.batching import left_pad
from midalign.errors import DataError

TEMPERATURES = (0.1, 1.0, 1.5, 2.0)  # the paper's search grid (App. D.1)
INERT_COSINE, SEPARATING_AUC = 0.95, 0.6


def auc(positive: list[float], negative: list[float]) -> float:
    """P(a positive score > a negative one), ties counting half (the Mann–Whitney U statistic / (|P|·|N|))."""
    ranked = sorted([(v, 1) for v in positive] + [(v, 0) for v in negative])
    rank_sum, i = 0.0, 0
    while i < len(ranked):  # average ranks over ties
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        rank_sum += sum(label for _, label in ranked[i:j]) * (i + j + 1) / 2
        i = j
    n_pos, n_neg = len(positive), len(negative)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def verdict(row: dict) -> str:
    """inert / separating / weak, from one layer's row of one pooling."""
    if row["cos_others"] >= INERT_COSINE:
        return "inert"
    return "separating" if row["auc"] >= SEPARATING_AUC else "weak"


@torch.inference_mode()
def preflight(model, tok, pairs: list, batch_size: int = 16, batches: int = 8, seed: int = 0,
              max_length: int = 128, progress: bool = True) -> dict:
    """The diagnostic on `batches` random micro-batches of `batch_size` pairs (no English sentence twice in
    a batch); {"layers", "pools": {pool: [row per layer]}, "sink": [per layer], "batch_size", ...}."""
    batches_of = sample_batches(pairs, batch_size, batches, seed)
    layers = list(range(model.config.num_hidden_layers + 1))
    device = model.lm_head.weight.device
    pooled = {p: [[] for _ in layers] for p in POOLS}  # pool → layer → [(src (n, d), en (n, d))]
    sink = [[] for _ in layers]
    for batch in tqdm(batches_of, desc="preflight", unit="batch", disable=not progress):
        src, en = encode_pairs(tok, batch, max_length)
        ids, mask = left_pad(src + en, tok.pad_id, device)
        hidden = model(ids, mask, output_hidden_states=layers, stop_after_layer=layers[-1], logits_to_keep=None).hidden_states
        n = len(batch)
        for layer in layers:
            h = hidden[layer]
            for p, f in POOLS.items():
                v = f(h, mask).cpu()
                pooled[p][layer].append((v[:n], v[n:]))
            sink[layer] += first_token_share(h, mask).tolist()
    result = {"n_pairs": sum(map(len, batches_of)), "batch_size": batch_size, "batches": len(batches_of),
              "layers": layers, "temperatures": list(TEMPERATURES),
              "sink": [statistics.mean(s) for s in sink], "pools": {}}
    for p in POOLS:
        result["pools"][p] = [layer_row(pooled[p][layer], batch_size) for layer in layers]
    return result


def sample_batches(pairs: list, batch_size: int, batches: int, seed: int) -> list[list]:
    """`batches` disjoint random micro-batches of `batch_size` pairs with distinct English sentences."""
    order = pairs[:]
    random.Random(seed).shuffle(order)
    out, current, seen = [], [], set()
    for p in order:
        if p.en in seen:
            continue
        current.append(p)
        seen.add(p.en)
        if len(current) == batch_size:
            out.append(current)
            current, seen = [], set()
            if len(out) == batches:
                return out
    if not out:
        raise DataError(f"the preflight needs {batch_size} pairs with different English sentences for one "
                        f"micro-batch; the pairs hold {len({p.en for p in pairs})}: lower --batch-size")
    return out


def first_token_share(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) projection share of each sequence's first real token in its mean-pooled vector: ⟨h₁/T, m⟩ / ‖m‖²."""
    m = POOLS["mean"](hidden, mask)  # (B, d)
    first = POOLS["bos"](hidden, mask) / mask.sum(-1, keepdim=True).float()
    return (first * m).sum(-1) / m.pow(2).sum(-1).clamp(min=1e-12)


def layer_row(batches: list[tuple[torch.Tensor, torch.Tensor]], n: int) -> dict:
    """Cosines, AUC and the loss per τ of one pooling at one layer, over the micro-batches."""
    same, other, losses = [], [], {t: [] for t in TEMPERATURES}
    for src, en in batches:
        cos = F.normalize(src, dim=-1) @ F.normalize(en, dim=-1).T
        same += cos.diag().tolist()
        other += cos[~torch.eye(len(cos), dtype=torch.bool)].tolist()
        for t in TEMPERATURES:
            losses[t].append(contrastive_loss(src, en, t).item())
    row = {"cos_translations": statistics.mean(same), "cos_others": statistics.mean(other), "auc": auc(same, other),
           "loss": {}}
    for t in TEMPERATURES:
        chance, floor = math.log(n), infonce_floor(n, t)
        row["loss"][str(t)] = {"chance": chance, "now": statistics.mean(losses[t]), "floor": floor}
    row["verdict"] = verdict(row)
    return row


def summary(result: dict, layer: int) -> list[str]:
    """One line per pooling at `layer`: its verdict and the numbers behind it."""
    lines = []
    i = result["layers"].index(layer)
    for p, rows in result["pools"].items():
        r = rows[i]
        why = {"inert": f"non-translations at cosine {r['cos_others']:.2f} (every sentence points one way)",
               "separating": f"AUC {r['auc']:.2f}, translations at cosine {r['cos_translations']:.2f} vs "
                             f"{r['cos_others']:.2f}",
               "weak": f"AUC {r['auc']:.2f}: translations barely closer than non-translations"}[r["verdict"]]
        lines.append(f"{p}: {r['verdict']} at layer {layer}: {why}")
    return lines


def markdown(result: dict, layer: int, model: str, seconds: float, command: str) -> str:
    """The report: verdicts at `layer`, the per-layer table of every pooling, the loss range per τ there."""
    n = result["batch_size"]
    i = result["layers"].index(layer)
    out = [f"# Alignment preflight: `{model}`", "",
           f"{result['n_pairs']} translation pairs in {result['batches']} micro-batches of {n}; every layer, every "
           f"pooling; {seconds:.0f} s. Written by `{command}` (midalign/preflight.py).", "",
           "## Verdict at the aligned layer", "", *(f"- {line}" for line in summary(result, layer)), "",
           f"## The loss's range at layer {layer} (batch {n}: chance ln {n} = {math.log(n):.3f})", "",
           "| pooling | " + " | ".join(f"τ {t}: now / floor" for t in result["temperatures"]) + " |",
           "|---" * (1 + len(result["temperatures"])) + "|"]
    for p, rows in result["pools"].items():
        cells = [f"{rows[i]['loss'][str(t)]['now']:.3f} / {rows[i]['loss'][str(t)]['floor']:.3f}"
                 for t in result["temperatures"]]
        out.append(f"| {p} | " + " | ".join(cells) + " |")
    out += ["", "## Every layer", "",
            "Cosine of translations / of non-translations, AUC of their separation, verdict; the first token's "
            "share of the mean-pooled vector per layer.", "",
            "| layer | first-token share | " + " | ".join(result["pools"]) + " |",
            "|---" * (2 + len(result["pools"])) + "|"]
    for li, layer_index in enumerate(result["layers"]):
        cells = [f"{r['cos_translations']:.2f} / {r['cos_others']:.2f}, {r['auc']:.2f} {r['verdict']}"
                 for r in (rows[li] for rows in result["pools"].values())]
        out.append(f"| {layer_index} | {result['sink'][li]:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def plot(result: dict, path, title: str) -> None:
    """AUC and non-translation cosine per layer, one line per pooling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for p, rows in result["pools"].items():
        a.plot(result["layers"], [r["auc"] for r in rows], marker=".", label=p)
        b.plot(result["layers"], [r["cos_others"] for r in rows], marker=".", label=p)
    a.axhline(0.5, color="grey", lw=0.5)
    b.axhline(INERT_COSINE, color="grey", lw=0.5, ls="--")
    a.set(xlabel="layer", ylabel="AUC (translation vs other)", title="separation")
    b.set(xlabel="layer", ylabel="cosine of non-translations", title="collapse (dashed: inert)")
    a.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
