"""Round two's section of docs/slot.md, from its result files alone: the manipulation check first (each
aligning run's alignment loss against its floor; the aligned languages' X→en retrieval at the aligned
layer under the training pooling), then the pre-registered endpoint (experiments/slot_round2.md)."""

from __future__ import annotations

import math
import statistics
from typing import Callable

import numpy as np

from midalign.align import infonce_floor
from slot_report import PAPER_EFFECT, Z80, Z95, cost_table, item_counts, t_interval

BUDGET_HOURS = 10  # experiments/slot_round2.md §7
# round one's groups (experiments/slot.py SlotStudy): the secondary contrasts' languages
SECONDARY_GROUPS = {"supervised": ("ar", "en", "es", "ru", "zh"),
                    "other": ("af", "az", "de", "el", "fr", "hi", "is", "th", "tr", "ur")}


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


def reach(curve: list[dict], n: int, temperature: float, k: int = 10) -> dict:
    """The training alignment loss (mean of the first and of the last k updates) against chance (ln n) and
    the floor at τ (midalign.align.infonce_floor), with the share of the reachable range covered."""
    losses = [r["align_loss"] for r in curve if "align_loss" in r]
    first, last = statistics.mean(losses[:k]), statistics.mean(losses[-k:])
    chance, floor = math.log(n), infonce_floor(n, temperature)
    return {"first": first, "last": last, "chance": chance, "floor": floor,
            "share": (chance - last) / (chance - floor), "updates": len(losses)}


def agreement(old: dict, new: dict) -> dict:
    """A retrained run's test predictions against a committed run's, on the items both decoded (by id):
    how many predictions are identical, and each run's mean F1 over languages on those items."""
    from midalign.metrics import slot_f1

    same = total = 0
    f1 = {"committed": [], "retrained": []}
    for lang, rows in old["items"].items():
        mine = {row[0]: row for row in new["items"].get(lang, [])}
        common = [(row, mine[row[0]]) for row in rows if row[0] in mine]
        if not common:
            continue
        same += sum(a[3] == b[3] for a, b in common)
        total += len(common)
        for key, pick in (("committed", 0), ("retrained", 1)):
            f1[key].append(100 * slot_f1(*zip(*[pair[pick][1:4] for pair in common]), lang)["f1"])
    return {"identical": same, "items": total, **{k: statistics.mean(v) for k, v in f1.items() if v}}


def section(design: dict, get: Callable[[str], dict | None], round_one: Callable[[str], dict | None] | None = None,
            deviations: list[str] = ()) -> list[str]:
    """Round two's section; `round_one` reads round one's result files (the retrained SFT runs are compared
    with its committed predictions), `deviations` are the lines of the round's deviations file."""
    lines = gate_and_endpoint(design, get)
    retrained = [(s, a) for s in design["seeds"] if round_one and (old := round_one(f"sft-s{s}"))
                 and (new := get(f"sft-s{s}")) and (a := agreement(old, new))["items"]]
    if retrained:
        lines += ["", "### Retrained SFT against round one's", "",
                  "Round one's adapters were not kept (weights are never committed); its SFT runs were retrained "
                  "with the same seeds and settings. Their test predictions on round one's items:", "",
                  "| seed | identical predictions | mean F1, round one's committed | mean F1, retrained |",
                  "|---|---|---|---|",
                  *(f"| {s} | {a['identical']:,} of {a['items']:,} ({100 * a['identical'] / a['items']:.0f}%) | "
                    f"{a['committed']:.1f} | {a['retrained']:.1f} |" for s, a in retrained)]
    lines += cost(design, get)
    if deviations:
        lines += ["", "### Deviations and implementation notes", "", *deviations]
    return lines


def planned_runs(design: dict, tau: float | None) -> list[str]:
    """Every result file the pre-registration plans, in its order (§7): the gate; if it chose `tau`, per seed SFT
    and joint at `tau` with their retrieval; then round one's joint τ 1.5 arm."""
    gate_runs = ["ret-base", *(f"ret-align-t{t:g}-s0" for t in design["gate_temperatures"])]
    if tau is None:
        return gate_runs
    joint = lambda t: [f"{prefix}joint-t{t:g}-s{s}" for s in design["seeds"] for prefix in ("", "ret-")]
    main = [f"{prefix}{arm}-s{s}" for s in design["seeds"] for arm in ("sft", f"joint-t{tau:g}") for prefix in ("", "ret-")]
    return gate_runs + main + (joint(1.5) if tau != 1.5 else [])


def cost(design: dict, get: Callable[[str], dict | None]) -> list[str]:
    """Round two's cost, run by run as recorded, and the pre-registered runs that have no result file."""
    planned = planned_runs(design, (gate(design, get) or {}).get("chosen"))
    runs = [(name, r) for name in planned if (r := get(name))]
    if not runs:
        return []
    missing = [name for name in planned if get(name) is None]
    return ["", "### Cost", "", "Minutes of training (to the last update, from the run's log) and of decoding or "
            f"retrieval of each result file of this round, as recorded in it; the pre-registered budget is "
            f"{BUDGET_HOURS} CPU-hours (experiments/slot_round2.md §7).", "", *cost_table(runs), "",
            ("Pre-registered runs without a result file (§7: what the budget does not reach is reported as not run): "
              + ", ".join(missing) + "."
             if missing else "Every pre-registered run has its result file.")]


def gate_and_endpoint(design: dict, get: Callable[[str], dict | None]) -> list[str]:
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
    if chosen is None:
        return lines + ["Not run: the gate did not pass."]
    return lines + endpoint_section(design, get, chosen)


def resampled_f1(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Micro F1 (%) of each resample: counts (..., N, 3) of (correct, predicted, gold) spans per item,
    weights (B, N) how often each item is drawn → (B, ...)."""
    sums = np.einsum("bn,...nk->b...k", weights, counts)
    tp, n_pred, n_gold = sums[..., 0], sums[..., 1], sums[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        p, r = np.where(n_pred > 0, tp / n_pred, 0.0), np.where(n_gold > 0, tp / n_gold, 0.0)
        return np.where(p + r > 0, 100 * 2 * p * r / (p + r), 0.0)


def crossed_bootstrap(joint: dict[int, dict], sft: dict[int, dict], langs, n: int, seed: int) -> dict:
    """The pre-registered analysis of joint − SFT (mean over `langs` of micro F1, mean over seeds), paired by
    seed and test item: `n` resamples drawing the seeds with replacement (a seed's two arms together) and,
    per language, the items with replacement (the same draw for both arms and every seed); beside its 95%
    percentile interval, a t-interval over the per-seed differences and a hierarchical interval (seed
    variance beyond the item variance, plus the item variance: √((σ²_seed + mean vₛ)/S) · 1.96)."""
    rng = np.random.default_rng(seed)
    seeds = sorted(set(joint) & set(sft))
    per_lang = np.zeros((n, len(seeds)))  # the group's F1 difference per resample and seed, summed over langs
    observed = np.zeros(len(seeds))
    for lang in langs:
        counts = np.array([[joint[s][lang], sft[s][lang]] for s in seeds], dtype=float)  # (S, 2, N, 3)
        items = counts.shape[2]
        draws = rng.integers(0, items, size=(n, items))
        weights = np.zeros((n, items))
        np.add.at(weights, (np.arange(n)[:, None], draws), 1.0)
        f = resampled_f1(counts, weights)  # (n, S, 2)
        per_lang += f[..., 0] - f[..., 1]
        whole = resampled_f1(counts, np.ones((1, items)))[0]
        observed += whole[:, 0] - whole[:, 1]
    per_seed, observed = per_lang / len(langs), observed / len(langs)  # (n, S), (S,)
    picks = rng.integers(0, len(seeds), size=(n, len(seeds)))
    crossed = np.take_along_axis(per_seed, picks, axis=1).mean(1)
    delta = float(observed.mean())
    item_var = per_seed.var(axis=0, ddof=1)  # vₛ: each seed's difference over item resamples
    seed_var = max(0.0, float(np.var(observed, ddof=1)) - float(item_var.mean())) if len(seeds) > 1 else 0.0
    se_h = math.sqrt((seed_var + float(item_var.mean())) / len(seeds))
    return {"delta": delta, "per_seed": observed.tolist(), "seeds": len(seeds), "se": float(crossed.std(ddof=1)),
            "ci95": [float(np.quantile(crossed, 0.025)), float(np.quantile(crossed, 0.975))],
            "t": t_interval(observed.tolist()), "hierarchical": [delta - Z95 * se_h, delta + Z95 * se_h]}


def power(effect: float, se: float) -> float:
    """The chance that a two-sided 95% interval with standard error `se` lies above 0 when the true difference is
    `effect` > 0 (normal approximation; the chance of an interval wholly below 0 is left out)."""
    return 0.5 * (1 + math.erf((effect / se - Z95) / math.sqrt(2)))


def percent(p: float) -> str:
    """A probability as a whole percentage, never rounded up to a certainty."""
    return "> 99%" if p > 0.99 else f"{p:.0%}"


def verdict(interval, sesoi: float) -> str:
    """The pre-registered wording (experiments/slot_round2.md §5) for a 95% interval [lo, hi]."""
    low, high = interval
    if low > 0:
        return "alignment improves transfer to the aligned languages" + (
            "" if high >= sesoi else ", by less than the paper's relative effect")
    if high < 0:
        return "alignment lowers transfer to the aligned languages"
    if high < sesoi:
        return (f"no gain of the paper's relative size: {sesoi:+.1f} F1 is excluded; a smaller gain, or none, "
                "is not")
    return "inconclusive"


def endpoint_section(design: dict, get: Callable[[str], dict | None], tau: float) -> list[str]:
    """The joint runs' manipulation check, then the primary endpoint and the secondary contrasts."""
    seeds, langs = design["seeds"], design["primary"]["langs"]
    sft = {s: r for s in seeds if (r := get(f"sft-s{s}"))}
    joint = {s: r for s in seeds if (r := get(f"joint-t{tau:g}-s{s}"))}
    if not (sft and joint):
        return ["Not run yet (`--stages main`): " + ", ".join(f"{a}-s{s}" for s in seeds for a in
                                                             ("sft", f"joint-t{tau:g}")
                                                             if get(f"{a}-s{s}") is None) + " missing."]
    layer, pool = design["layer"], design["pool"]
    lines = [f"**Joint runs' manipulation check** (pre-registered: the gate's measure, joint − SFT of the same "
             f"seed, mean over seeds ≥ {design['joint_check']['min_gain_points']:+.1f} points), and each joint run's "
             "alignment loss and gradient norms (before clipping; mean of the first → last 10 updates):", "",
             "| seed | joint X→en | SFT X→en | gain | alignment loss | share of range | task gradient norm | "
             "alignment gradient norm |", "|---|---|---|---|---|---|---|---|"]
    gains = []
    for s in sorted(set(sft) & set(joint)):
        rj, rs = get(f"ret-joint-t{tau:g}-s{s}"), get(f"ret-sft-s{s}")
        levels = [x_to_en(r, langs, layer, pool) if r else math.nan for r in (rj, rs)]
        gains.append(levels[0] - levels[1])
        curve = joint[s]["train_curve"]
        loss = reach(curve, design["align_batch_size"], tau)
        norm = lambda k: (f"{statistics.mean(r[k] for r in curve[:10]):.2f} → {statistics.mean(r[k] for r in curve[-10:]):.2f}"
                          if all(k in r for r in curve) else "not recorded")
        lines.append(f"| {s} | {levels[0]:.1f} | {levels[1]:.1f} | {gains[-1]:+.1f} | {loss['first']:.3f} → "
                     f"{loss['last']:.3f} | {loss['share']:.0%} | {norm('task_grad_norm')} | {norm('align_grad_norm')} |")
    took_hold = statistics.mean(gains) >= design["joint_check"]["min_gain_points"]
    lines += ["", f"Joint check: mean gain {statistics.mean(gains):+.1f} points: " +
              ("**passed**." if took_hold else "**not passed** — the alignment did not take hold in the joint runs.")]
    counts = {"sft": {s: item_counts(r) for s, r in sft.items()}, "joint": {s: item_counts(r) for s, r in joint.items()}}
    b = crossed_bootstrap(counts["joint"], counts["sft"], langs, design["bootstrap"], design["bootstrap_seed"])
    sesoi = design["sesoi"]
    complete = set(seeds) <= set(sft) & set(joint)
    primary = verdict(b["ci95"], sesoi) if took_hold else (
        "the alignment did not take hold in the joint runs: not a test of the method")
    if not complete:  # the pre-registered endpoint is the mean over every seed: no verdict from a part of them
        primary = (f"interim, seed {', '.join(map(str, sorted(set(sft) & set(joint))))} of "
                   f"{', '.join(map(str, seeds))}: no verdict until every pre-registered seed is in")
    fmt = lambda i: f"[{i[0]:+.1f}, {i[1]:+.1f}]" if i else "—"
    lines += ["", f"**Primary endpoint** (aligned {' '.join(langs)}; joint τ {tau:g} − SFT; mean over languages of "
                  f"micro-F1, mean over {b['seeds']} seed{'s' * (b['seeds'] != 1)}; "
                  f"{sum(len(counts['sft'][seeds[0]][l]) for l in langs):,} "
                  f"test items; {design['bootstrap']:,} crossed resamples):", "",
              "| Δ F1 | per seed | 95% crossed bootstrap | t-interval over seeds | hierarchical | smallest effect of "
              "interest | verdict (pre-registered wording) |", "|---|---|---|---|---|---|---|",
              f"| {b['delta']:+.2f} | " + ", ".join(f"{d:+.2f}" for d in b["per_seed"]) + f" | {fmt(b['ci95'])} | "
              f"{fmt(b['t'])} | {fmt(b['hierarchical'])} | {sesoi:+.1f} | **{primary}** |"]
    paper = PAPER_EFFECT["aligned"]
    lines += ["", f"Power, from the crossed bootstrap's standard error ({b['se']:.2f} F1; normal approximation): " + (
        f"the design detects {(Z95 + Z80) * b['se']:.1f} F1 with 80% power at α = 0.05; its power is "
        f"{percent(power(sesoi, b['se']))} against the paper's relative effect ({sesoi:+.1f}) and "
        f"{percent(power(paper, b['se']))} against the paper's absolute {paper:+.1f} (Qwen 2.5 7B, Table 10)."
        if b["se"] > 0 else "untestable: the two arms agree on every resample.")]
    if took_hold and complete:
        others = {name: verdict(i, sesoi) for name, i in (("t-interval", b["t"]), ("hierarchical", b["hierarchical"]))
                  if i and verdict(i, sesoi) != primary}
        lines += [""] + [f"Under the {k} the verdict would read: {v}." for k, v in others.items()]
        falling = all(c[-1]["dev_task_loss"] < c[-2]["dev_task_loss"] for r in (*sft.values(), *joint.values())
                      if len(c := r["dev_curve"]) > 1)
        lines += ["", "As pre-registered (§5), the verdict holds for this miniature only: a 0.5B code-specialised model "
                      f"dequantised from GGUF, {design['updates']} updates, "
                      + ("dev task loss still falling at the last evaluation of every run" if falling else
                         "dev task loss no longer falling at the last evaluation of some runs")
                      + ". The paper's effect on these languages (Qwen 2.5 7B, Table 10: 41.6 → 46.5, +4.9 F1) is a "
                      "single run without an interval."]
    return lines + secondary(design, get, counts, tau)


def secondary(design: dict, get: Callable[[str], dict | None], counts: dict, tau: float) -> list[str]:
    """The pre-registered secondary contrasts, same analysis, no verdict: the supervised and other groups
    (round one's items), and round one's joint arm (τ 1.5, retrained) on the aligned items."""
    groups = {name: tuple(sorted(set(l for c in counts["sft"].values() for l in c) - set(design["primary"]["langs"])
                                 & set(members))) for name, members in SECONDARY_GROUPS.items()}
    rows = [(f"joint τ {tau:g} − SFT, {name}", counts["joint"], g) for name, g in groups.items() if g]
    t15 = {s: item_counts(r) for s in design["seeds"] if tau != 1.5 and (r := get(f"joint-t1.5-s{s}"))}
    if t15:
        rows.append(("joint τ 1.5 − SFT, aligned", t15, tuple(design["primary"]["langs"])))
    lines = ["", "Secondary (pre-registered, reported without a verdict):", "",
             "| contrast | Δ F1 | 95% crossed bootstrap | t-interval over seeds |", "|---|---|---|---|"]
    for name, arm, langs in rows:
        b = crossed_bootstrap(arm, counts["sft"], langs, design["bootstrap"], design["bootstrap_seed"])
        lines.append(f"| {name} | {b['delta']:+.2f} | [{b['ci95'][0]:+.1f}, {b['ci95'][1]:+.1f}] | " +
                     (f"[{b['t'][0]:+.1f}, {b['t'][1]:+.1f}]" if b["t"] else "—") + " |")
    return lines
