"""Round two's section of docs/slot.md, from its result files alone: the manipulation check first (each
aligning run's alignment loss against its floor; the aligned languages' X→en retrieval at the aligned
layer under the training pooling), then the pre-registered endpoint (experiments/slot_round2.md)."""

from __future__ import annotations

import math
import statistics
from typing import Callable

from midalign.align import infonce_floor


def x_to_en(result: dict, langs, layer: int, pool: str, lang_mean: bool = True):
    """X→en retrieval accuracy (%) at `layer` under `pool` from a stored retrieval result: the mean over
    `langs`, or per language (lang_mean=False)."""
    i = result["layers"].index(layer)
    directions = result["pools"][pool]["per_direction"]
    per = {l: 100 * directions[f"{l}-en"][i] for l in langs}
    return statistics.mean(per.values()) if lang_mean else per


def gate(design: dict, get: Callable[[str], dict | None]) -> dict | None:
    """The pre-registered gate: for each τ, aligned X→en retrieval at the design's layer and pooling, base vs
    alignment-only; a τ passes at a gain ≥ the threshold. The chosen τ: the joint τ if it passed, else the
    first that passed, else None ("alignment not achieved at this scale"). None until every gate run has a
    result."""
    g = design["gate"]
    base = get("ret-base")
    runs = {t: get(f"ret-align-t{t:g}-s0") for t in design["gate_temperatures"]}
    if base is None or any(r is None for r in runs.values()):
        return None
    level = lambda r: x_to_en(r, g["langs"], design["layer"], design["pool"])
    rows = {t: {"base": level(base), "aligned": level(r), "gain": level(r) - level(base)} for t, r in runs.items()}
    for row in rows.values():
        row["passed"] = row["gain"] >= g["min_gain_points"]
    passed = [t for t, row in rows.items() if row["passed"]]
    chosen = design["joint_temperature"] if design["joint_temperature"] in passed else (passed[0] if passed else None)
    return {"per_temperature": rows, "chosen": chosen}


def t_interval(deltas: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """mean ± t(level, S−1)·sd/√S over the per-seed differences (None for fewer than 2 seeds)."""
    from scipy.stats import t

    if len(deltas) < 2:
        return None
    half = t.ppf((1 + level) / 2, len(deltas) - 1) * statistics.stdev(deltas) / math.sqrt(len(deltas))
    return statistics.mean(deltas) - half, statistics.mean(deltas) + half


def reach(curve: list[dict], n: int, temperature: float, k: int = 10) -> dict:
    """The training alignment loss (mean of the first and of the last k updates) against chance (ln n) and
    the floor at τ (midalign.align.infonce_floor), with the share of the reachable range covered."""
    losses = [r["align_loss"] for r in curve if "align_loss" in r]
    first, last = statistics.mean(losses[:k]), statistics.mean(losses[-k:])
    chance, floor = math.log(n), infonce_floor(n, temperature)
    return {"first": first, "last": last, "chance": chance, "floor": floor,
            "share": (chance - last) / (chance - floor), "updates": len(losses)}


def section(design: dict, get: Callable[[str], dict | None]) -> list[str]:
    g = design["gate"]
    base = get("ret-base")
    commit = base.get("preregistration") if base else None
    layer, pool, langs = design["layer"], design["pool"], g["langs"]
    lines = ["## Round two (pre-registered): does the alignment take hold?", "",
             "Pre-registered in [experiments/slot_round2.md](../experiments/slot_round2.md) with its design "
             "[experiments/slot_round2.json](../experiments/slot_round2.json)"
             + (f" (commit `{commit[:10]}`, named in every result file of this round)" if commit else "")
             + ": an alignment-only gate first, then SFT against joint on 1,000 test utterances per aligned "
             "language, with the verdict wording fixed in advance. Results: `experiments/results/slot-round2/`.", "",
             "### Manipulation gate", ""]
    runs = [(t, get(f"ret-align-t{t:g}-s0")) for t in design["gate_temperatures"]]
    if base is None and not any(r for _, r in runs):
        return lines + ["Not run yet (`python experiments/slot_round2.py --stages gate`)."]
    n = design["align_batch_size"]
    lines += [f"Alignment-only training (§6.3: alignment micro-batches only, 2 × {n} pairs per update, "
              f"{design['updates']} updates, seed 0, layer {layer}, `{pool}`, last update), then retrieval (ratio "
              f"margin, k = 4) of {base['n_sentences'] if base else '—'} MASSIVE `dev` utterances per locale, never "
              f"used for alignment. Gate measure: X→en retrieval at layer {layer} under `{pool}`, mean over "
              f"{' '.join(langs)}; a τ passes at ≥ {g['min_gain_points']:+.1f} points over the base model. The "
              f"alignment loss is the training loss (first → last 10 updates) against chance (ln {n}) and its floor "
              "at that τ (positives at cosine 1, negatives on a regular simplex).", "",
              "| model | τ | alignment loss, first → last 10 | chance / floor | share of the reachable range | "
              + " | ".join(langs) + " | X→en mean | gain over base | gate |", "|---" * (8 + len(langs)) + "|"]
    if base is not None:
        per = x_to_en(base, langs, layer, pool, lang_mean=False)
        lines.append("| base | — | — | — | — | " + " | ".join(f"{v:.1f}" for v in per.values())
                     + f" | {statistics.mean(per.values()):.1f} | — | — |")
    for t, r in runs:
        if r is None:
            lines.append(f"| alignment-only | {t:g} | not run yet |" + " |" * (6 + len(langs)))
            continue
        loss = reach(r["train_curve"], n, t)
        per = x_to_en(r, langs, layer, pool, lang_mean=False)
        gain = statistics.mean(per.values()) - x_to_en(base, langs, layer, pool) if base else math.nan
        lines.append(f"| alignment-only | {t:g} | {loss['first']:.3f} → {loss['last']:.3f} | {loss['chance']:.3f} / "
                     f"{loss['floor']:.4f} | {loss['share']:.0%} | " + " | ".join(f"{v:.1f}" for v in per.values())
                     + f" | {statistics.mean(per.values()):.1f} | {gain:+.1f} | "
                     + ("**passed**" if gain >= g["min_gain_points"] else "not passed") + " |")
    result = gate(design, get)
    if result is None:
        return lines
    lines += ["", "X→en retrieval of the aligned languages (mean, %) at every other layer, under "
                  f"`{pool}` and, for comparison, `mean`:", "",
              "| model | pooling | " + " | ".join(str(l) for l in base["layers"][::2]) + " |",
              "|---" * (2 + len(base["layers"][::2])) + "|"]
    for name, r in [("base", base), *((f"alignment-only τ {t:g}", r) for t, r in runs)]:
        for p in (pool, "mean"):
            lines.append(f"| {name} | {p} | " + " | ".join(f"{x_to_en(r, langs, l, p):.1f}" for l in r["layers"][::2])
                         + " |")
    chosen = result["chosen"]
    if chosen is None:
        lines += ["", "**Gate: not passed at any τ — alignment not achieved at this scale.** As pre-registered, no F1 "
                      "of this round is read as a test of the method."]
    else:
        passed = [f"{t:g}" for t, row in result["per_temperature"].items() if row["passed"]]
        lines += ["", f"**Gate: passed at τ {', '.join(passed)}.** As pre-registered, the joint arm aligns at "
                      f"τ {chosen:g}."]
    lines += ["", "### Pre-registered endpoint", ""]
    arms = [get(f"{arm}-s{s}") for s in design["seeds"] for arm in ("sft", f"joint-t{chosen:g}")] if chosen else []
    if not any(arms):
        lines.append("Not run yet (`--stages main`)." if chosen else "Not run: the gate did not pass.")
    return lines
