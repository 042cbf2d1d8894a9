"""docs/miniature.md from the miniature study's result files alone: one section per claim of the paper
(its number, the miniature's, whether it holds), the statistics behind each verdict, and the plots."""

from __future__ import annotations

import json
import math
import random
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from midalign.io import atomic_write_text
from midalign.retrieval import paper_layers
from midalign.stats import pearson

# The paper's numbers quoted here (Liu & Niehues, ACL 2025, arXiv 2502.14830); its MT and merging tables
# were not available to this work offline, so those sections quote the claim, not a number.
PAPER_RETRIEVAL = "Llama 3 8B, FLORES-200, 20 languages: average 39.1 (base) → 73.2 (aligned at layer 16)"
PAPER_CORRELATION = "r = 0.56 (Llama 3) and 0.70 (Qwen 2.5), slot-filling F1 (Fig. 1b)"
Z95, Z80 = 1.96, 0.84  # two-sided 95% interval; 80% power


def placement_layers(mid: int) -> list[int]:
    """The early, middle and late layers of the placement test (Fig. 4)."""
    return [max(1, mid // 2), mid, mid + mid // 2]


# ---------------------------------------------------------------------------------------------- statistics

def chrf_stats(pairs: list[list[str]]):
    """(n_segments, k) chrF sufficient statistics of [hypothesis, reference] pairs: corpus chrF of any
    resample is the score of the summed rows (as sacrebleu's own paired bootstrap computes it)."""
    import numpy as np
    from sacrebleu.metrics import CHRF

    return np.array(CHRF()._extract_corpus_statistics([h for h, _ in pairs], [[r for _, r in pairs]]))


def chrf_from_stats(stats) -> float:
    from sacrebleu.metrics import CHRF

    return CHRF()._compute_score_from_stats(stats.sum(0).tolist()).score


def group_chrf(result: dict, units: list[str]) -> float:
    """Mean over the group's directions of corpus chrF."""
    return statistics.mean(result["per_unit"][u]["chrf"] for u in units)


def paired_bootstrap(systems_a: list[dict], systems_b: list[dict], units: list[str], n: int, seed: int = 0) -> dict:
    """Bootstrap over training seeds and test segments together: the systems are paired by seed (a_k with
    b_k; resampled with replacement, a seed's pair together) and the segments resampled per direction (the
    same indices for every system). The statistic: the group's mean corpus chrF, seed-averaged a minus
    seed-averaged b. With one system a side, only the segments vary.

    Returns the observed difference, its 95% interval, the share of resamples ≤ 0 (one-sided p) and the
    smallest difference the design detects with 80% power at α = 0.05 ((1.96 + 0.84) standard errors)."""
    rng = random.Random(seed)
    stats = [[{u: chrf_stats(s["segments"][u]) for u in units} for s in systems] for systems in (systems_a, systems_b)]
    sizes = {u: len(stats[0][0][u]) for u in units}

    if len(systems_a) != len(systems_b):
        raise ValueError("the bootstrap pairs the systems by seed: give as many a side as b side")
    k = len(systems_a)

    def delta(idx: dict, seeds: list[int]) -> float:
        a, b = (statistics.mean(statistics.mean(chrf_from_stats(side[s][u][idx[u]]) for u in units) for s in seeds)
                for side in stats)
        return a - b

    observed = delta({u: list(range(n_u)) for u, n_u in sizes.items()}, list(range(k)))
    deltas = sorted(delta({u: [rng.randrange(n_u) for _ in range(n_u)] for u, n_u in sizes.items()},
                          [rng.randrange(k) for _ in range(k)]) for _ in range(n))
    lo, hi = deltas[int(0.025 * n)], deltas[min(n - 1, int(0.975 * n))]
    return {"delta": observed, "ci95": [lo, hi], "p_le_0": sum(d <= 0 for d in deltas) / n,
            "detectable": (Z95 + Z80) * statistics.stdev(deltas)}


def verdict(ci95: list[float]) -> str:
    return "holds" if ci95[0] > 0 else ("is contradicted" if ci95[1] < 0 else "is not detected")


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def paper_average(result: dict) -> float:
    """The paper's retrieval aggregate: mean over even layers, embeddings excluded (%)."""
    return 100 * statistics.mean(result["per_layer"][i] for i in paper_layers(result["layers"]))


# ------------------------------------------------------------------------------------------------ plots

def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lines(path: Path, xlabel: str, ylabel: str, series: list[tuple[str, list, list]]) -> None:
    """One line per (label, xs, ys); a label ending in "base" is drawn as the dashed baseline, named "base"."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, xs, ys in series:
        base = label.endswith("base")
        ax.plot(xs, ys, "k--" if base else "-", marker=None if base else "o", ms=3, label="base" if base else label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def plot_scatter(path: Path, xs: list[float], ys: list[float], labels: list[str], xlabel: str, ylabel: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.scatter(xs, ys)
    for x, y, label in zip(xs, ys, labels):
        ax.annotate(label, (x, y), fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    save_figure(fig, path)


# ----------------------------------------------------------------------------------------------- report

class Report:
    """Builds each section from the result files; a section whose files are missing says "Not run yet".

    Each section returns its lines and, once run, a summary row (claim, paper, miniature, verdict)."""

    def __init__(self, study, get: Callable[[str], dict | None], figs: Path, stem: str):
        self.s, self.get, self.figs, self.stem = study, get, figs, stem
        self.sup = [f"{x}-en" for x in study.supervised]
        self.tra = [f"{x}-en" for x in study.transfer]
        self.base = get("mt-base")
        self.sft = [get(f"mt-sft-s{k}") for k in study.seeds]
        self.joint = [get(f"mt-joint-s{k}") for k in study.seeds]
        self.rets = {n: get(f"ret-{n}") for n in ("base", "sft", "joint")}
        self.udhr_sft = get("udhr-sft")

    def figure(self, name: str) -> tuple[Path, str]:
        return self.figs / f"{self.stem}_{name}.png", f"{self.stem}_{name}.png"

    def mt(self) -> tuple[list[str], tuple | None]:
        s, sup, tra = self.s, self.sup, self.tra
        if not (self.base and all(self.sft) and all(self.joint)):
            return ["Not run yet."], None
        lines = ["| model | " + " | ".join(sup + tra) + " | chrF supervised | chrF transfer | BLEU supervised | "
                 "BLEU transfer |", "|---" * (len(sup + tra) + 5) + "|"]
        for name, runs in (("base", [self.base]), ("SFT", self.sft), ("joint", self.joint)):
            cells = [mean_sd([r["per_unit"][u]["chrf"] for r in runs]) for u in sup + tra]
            cells += [mean_sd([group_chrf(r, units) for r in runs]) for units in (sup, tra)]
            cells += [mean_sd([statistics.mean(r["per_unit"][u]["bleu"] for u in units) for r in runs])
                      for units in (sup, tra)]
            lines.append(f"| {name} ({len(runs)} run{'s' if len(runs) > 1 else ''}) | " + " | ".join(cells) + " |")
        lines += ["", f"chrF per WMT23 direction (the first {s.test_per_direction} segments), mean ± sd over seeds "
                      "(seed = data order, LoRA init and dropout); groups are the mean of their directions.", ""]
        found = {}
        for label, units in (("supervised", sup), ("transfer", tra)):
            b = paired_bootstrap(self.joint, self.sft, units, s.bootstrap)
            per_seed = [group_chrf(j, units) - group_chrf(f, units) for j, f in zip(self.joint, self.sft)]
            found[label] = b
            lines.append(f"- joint − SFT, {label}: Δ chrF {b['delta']:+.2f}, 95% interval [{b['ci95'][0]:+.2f}, "
                         f"{b['ci95'][1]:+.2f}] (bootstrap over seeds and segments together, "
                         f"{s.bootstrap} resamples; one-sided p = {b['p_le_0']:.3f}); per seed "
                         f"{', '.join(f'{d:+.2f}' for d in per_seed)}. Smallest difference this design detects "
                         f"(80% power): ≈ {b['detectable']:.2f} chrF.")
        lines += ["", self.curves()]
        b = found["transfer"]
        return lines, ("Alignment improves MT transfer over SFT (Table 2)", "gains on transfer directions",
                       f"Δ chrF transfer {b['delta']:+.2f} [{b['ci95'][0]:+.2f}, {b['ci95'][1]:+.2f}]",
                       verdict(b["ci95"]))

    def curves(self) -> str:
        """Training and dev task-loss curves of every SFT and joint run (where does training flatten?)."""
        runs = [(f"{name} s{k}", r) for name, rs in (("SFT", self.sft), ("joint", self.joint))
                for k, r in zip(self.s.seeds, rs)]
        train, train_md = self.figure("train_curve")
        dev, dev_md = self.figure("dev_curve")
        plot_lines(train, "update", "training task loss",
                   [(label, [p["step"] for p in r["train_curve"]], [p["task_loss"] for p in r["train_curve"]])
                    for label, r in runs])
        plot_lines(dev, "update", "dev task loss",
                   [(label, [p["step"] for p in r["dev_curve"]], [p.get("dev_task_loss", p["dev_loss"])
                                                                  for p in r["dev_curve"]]) for label, r in runs])
        dev_at = {}
        for _, r in runs:
            for point in r["dev_curve"]:
                dev_at.setdefault(point["step"], []).append(point.get("dev_task_loss", point["dev_loss"]))
        trend = " → ".join(f"{statistics.mean(v):.3f} (update {k})" for k, v in sorted(dev_at.items()))
        return (f"Task loss by update (training, left; ALMA dev, right; the adapter evaluated is the one with the "
                f"lowest dev loss). Dev task loss, mean over the {len(runs)} runs: {trend}.\n\n"
                f"![training task loss]({train_md}) ![dev task loss]({dev_md})")

    def retrieval(self) -> tuple[list[str], tuple | None]:
        rets, s = self.rets, self.s
        if not all(rets.values()):
            return ["Not run yet."], None
        path, md = self.figure("retrieval")
        plot_lines(path, "layer", "retrieval accuracy (%)",
                   [(n, r["layers"], [100 * a for a in r["per_layer"]]) for n, r in rets.items()])
        peak = {n: max(zip(r["per_layer"], r["layers"]))[1] for n, r in rets.items()}
        avg = {n: paper_average(r) for n, r in rets.items()}
        mid = max(rets["base"]["layers"]) // 2
        lines = ["| model | paper average (even layers) | peak layer |", "|---|---|---|",
                 *(f"| {n} | {avg[n]:.1f} | {peak[n]} |" for n in rets), "", f"![retrieval by layer]({md})", "",
                 f"UDHR held-out paragraphs, {len(s.retrieval_langs)} languages ({', '.join(s.retrieval_langs)}; "
                 f"cy, sw, tl, jv are in neither the task nor the alignment data), pooling `{s.pool}`, SFT and joint "
                 f"of seed {s.seeds[0]}, alignment at layer {mid}. One seed: no interval."]
        holds = avg["joint"] > avg["sft"] and abs(peak["base"] - mid) <= max(rets["base"]["layers"]) // 4
        return lines, ("Middle layers align best; alignment raises retrieval (Fig. 1a, Table 2)", PAPER_RETRIEVAL,
                       f"base peak at layer {peak['base']}; average {avg['base']:.1f} / {avg['sft']:.1f} / "
                       f"{avg['joint']:.1f} (base / SFT / joint)", "holds" if holds else "does not hold")

    def placement_section(self) -> tuple[list[str], tuple | None]:
        base = self.rets["base"]
        mid = max(base["layers"]) // 2 if base else None
        found = {l: self.get(f"ret-align-l{l}") for l in placement_layers(mid)} if base else {}
        place = {l: r for l, r in found.items() if r}
        if not place:
            return ["Not run yet."], None
        missing = [l for l in found if l not in place]
        path, md = self.figure("placement")
        plot_lines(path, "layer", "retrieval accuracy (%)",
                   [("base", base["layers"], [100 * a for a in base["per_layer"]])] +
                   [(f"aligned at layer {l}", r["layers"], [100 * a for a in r["per_layer"]]) for l, r in place.items()])
        gain = {l: 100 * (r["per_layer"][l] - base["per_layer"][l]) for l, r in place.items()}
        mean_gain = {l: paper_average(r) - paper_average(base) for l, r in place.items()}
        best = max(mean_gain, key=mean_gain.get)
        lines = ["| aligned layer | gain at that layer | gain of the paper average |", "|---|---|---|",
                 *(f"| {l} | {gain[l]:+.1f} | {mean_gain[l]:+.1f} |" for l in place), "",
                 f"![placement]({md})", "",
                 f"Alignment-only adapters (`--align-only`: {self.s.updates} updates of {self.s.grad_accum} "
                 f"micro-batches of {self.s.align_batch_size} MT training pairs), one seed each. The largest "
                 f"gain of the average comes from aligning layer {best}."]
        if missing:
            lines += ["", f"Not run yet: alignment at layer{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(map(str, missing))}; no verdict until it is."]
        return lines, ("Aligning the middle layer lifts retrieval most (Fig. 4)", "middle > early, late",
                       "average gain " + ", ".join(f"layer {l} {g:+.1f}" for l, g in mean_gain.items()),
                       "incomplete" if missing else "holds" if best == mid else "does not hold")

    def merge(self) -> tuple[list[str], tuple | None]:
        search, merged, sft, joint = self.get("merge-search"), self.get("mt-merged"), self.sft[0], self.joint[0]
        if not (search and merged and sft and joint):
            return ["Not run yet."], None
        sup, tra, seed = self.sup, self.tra, self.s.seeds[0]
        dev = ", ".join(f"{w}: {v['score']:.1f}" for w, v in search["weights"].items())
        b = paired_bootstrap([merged], [sft], tra, self.s.bootstrap)
        lines = [f"Task weight chosen on ALMA dev (BLEU): **{search['best_weight']}** (dev scores: {dev}).", "",
                 "| model | chrF supervised | chrF transfer |", "|---|---|---|",
                 *(f"| {name} | {group_chrf(r, sup):.1f} | {group_chrf(r, tra):.1f} |"
                   for name, r in ((f"SFT (seed {seed})", sft), ("merged", merged), (f"joint (seed {seed})", joint))),
                 "", f"Merged − SFT on transfer: Δ chrF {b['delta']:+.2f}, 95% interval [{b['ci95'][0]:+.2f}, "
                     f"{b['ci95'][1]:+.2f}] (paired bootstrap over segments; detectable ≈ {b['detectable']:.2f})."]
        return lines, ("A merged alignment adapter improves transfer (Table 6)", "task weight 0.9; gains over SFT",
                       f"weight {search['best_weight']}; Δ chrF transfer {b['delta']:+.2f} "
                       f"[{b['ci95'][0]:+.2f}, {b['ci95'][1]:+.2f}]", verdict(b["ci95"]))

    def correlation(self) -> tuple[list[str], tuple | None]:
        base, sft = self.rets["base"], self.udhr_sft
        if not (base and sft):
            return ["Not run yet."], None
        layer = max(base["layers"]) // 2
        langs = [l for l in base["per_language"] if f"{l}-en" in sft["per_unit"]]
        x = [100 * base["per_language"][l][base["layers"].index(layer)] for l in langs]
        y = [sft["per_unit"][f"{l}-en"]["chrf"] for l in langs]
        r, p = pearson(x, y) if len(langs) > 2 else (math.nan, math.nan)
        path, md = self.figure("correlation")
        plot_scatter(path, x, y, langs, f"base retrieval at layer {layer} (%)", "SFT chrF, UDHR X→en")
        transfer = [i for i, l in enumerate(langs) if l not in self.s.train_langs]
        rt, pt = pearson([x[i] for i in transfer], [y[i] for i in transfer]) if len(transfer) > 2 else (math.nan, math.nan)
        lines = [f"Pearson r = {r:.2f} (p = {p:.3f}) over {len(langs)} languages ({', '.join(langs)}); over the "
                 f"{len(transfer)} outside the MT task's languages (transfer, as in the paper's figure): r = {rt:.2f} "
                 f"(p = {pt:.3f}). SFT of seed {self.s.seeds[0]}, chrF on the {self.s.udhr_per_lang} shortest held-out "
                 f"UDHR paragraphs per language.", "",
                 f"![correlation]({md})"]
        return lines, ("Base middle-layer retrieval predicts transfer (Fig. 1b)", PAPER_CORRELATION,
                       f"r = {rt:.2f}, p = {pt:.3f} (transfer languages); {r:.2f}, p = {p:.3f} (all)",
                       "holds" if rt > 0 and pt < 0.05 else "is not detected")

    def unseen(self) -> tuple[list[str], tuple | None]:
        s, sft, joint = self.s, self.udhr_sft, self.get("udhr-joint-unseen")
        if not (sft and joint):
            return ["Not run yet."], None
        gains = {l: joint["per_unit"][f"{l}-en"]["chrf"] - sft["per_unit"][f"{l}-en"]["chrf"]
                 for l in (*s.unseen_aligned, *s.unseen_other) if f"{l}-en" in sft["per_unit"]}
        aligned = [gains[l] for l in s.unseen_aligned if l in gains]
        other = [gains[l] for l in s.unseen_other if l in gains]
        lines = ["| languages | chrF gain over SFT (mean ± sd over languages) |", "|---|---|",
                 f"| in the alignment data ({', '.join(s.unseen_aligned)}) | {mean_sd(aligned)} |",
                 f"| absent from it ({', '.join(s.unseen_other)}) | {mean_sd(other)} |", "",
                 "Per language: " + ", ".join(f"{l} {g:+.1f}" for l, g in gains.items()) + ".", "",
                 f"Joint training on the ALMA task with alignment pairs from the UDHR training articles of the named "
                 f"subset only, against SFT (seed {s.seeds[0]}); chrF on the {s.udhr_per_lang} shortest held-out "
                 f"paragraphs per language."]
        mean_other = statistics.mean(other)
        return lines, ("Gains reach languages absent from the alignment data (§5.1)", "gains on unseen languages",
                       f"gain {mean_sd(aligned)} (aligned) vs {mean_sd(other)} (absent)",
                       "holds" if mean_other > 0 and len(other) > 1 and
                       mean_other - Z95 * statistics.stdev(other) / math.sqrt(len(other)) > 0 else "is not detected")


SECTIONS = (("1. MT in miniature (Table 2, MT rows)", "mt",
             "Paper (Table 2): alignment training improves MT transfer mostly *out of* English (Llama 3, en→{he, ja, "
             "uk}: BLEU/COMET 15.5/79.6 → 17.0/80.7); *into* English, the direction this miniature tests, the gain "
             "is modest (Llama 3 +0.5 BLEU / +0.2 COMET; Qwen 2.5 +0.0 COMET). A null result here is therefore "
             "what the paper leads one to expect, and says little about the method: the slot-filling study "
             "(docs/slot.md) tests the paper's largest effect."),
            ("2. Retrieval (Fig. 1a; Table 2's retrieval column)", "retrieval",
             f"Paper: retrieval accuracy peaks in the middle layers; alignment training raises it ({PAPER_RETRIEVAL})."),
            ("3. Placement (Fig. 4)", "placement_section",
             "Paper: aligning a middle layer lifts retrieval most around that layer and transfers best; early or late "
             "placement does less."),
            ("4. Merging (Table 6)", "merge",
             "Paper: a task adapter merged with a separately trained alignment adapter (task weight 0.9, chosen among "
             "0.5/0.7/0.9 on dev) improves transfer without joint re-training."),
            ("5. Correlation (Fig. 1b)", "correlation",
             f"Paper: per-language middle-layer retrieval of the base model correlates with the fine-tuned model's "
             f"per-language transfer score ({PAPER_CORRELATION})."),
            ("6. Languages absent from the alignment data (§5.1)", "unseen",
             "Paper: the transfer gain from alignment also reaches languages that are not in the alignment data."))


def differences(study) -> list[str]:
    """What the miniature changes from the paper's setup (a reader must weigh every verdict against this)."""
    return ["## What differs from the paper's setup", "",
            f"- Model: `{study.model}` (0.5B, fp32, CPU) instead of Llama 3 8B / Qwen 2.5 7B (bf16, GPU); "
            f"τ = {study.temperature} (the paper's Qwen preset uses 1.5).",
            f"- Data: the first {study.pairs_per_lang} ALMA pairs per language and X→en only (the paper trains on all "
            f"≈58.7k pairs in both directions); {study.updates} updates of {study.grad_accum} micro-batches, "
            f"alternating task ({study.batch_size} examples) and alignment ({study.align_batch_size} pairs) in joint "
            "training, task only in SFT, alignment only in the alignment-only adapters (the paper: up to 5 epochs of "
            "micro-batches of 32, accumulation 4, early stopping on dev).",
            f"- Test: the first {study.test_per_direction} WMT23 segments per direction, scored with chrF and BLEU "
            "(the paper: all segments, COMET-22 and BLEU); greedy decoding, "
            f"{study.max_new_tokens} new tokens at most.",
            "- Retrieval, correlation and the unseen-language test use UDHR paragraphs (the paper: FLORES-200 "
            "sentences, and slot-filling F1 for the correlation).",
            f"- Seeds: {len(study.seeds)} for SFT and joint; one seed for retrieval, placement, merging and the "
            "unseen-language run.", ""]


def render(study, results: Path, report: Path, read: Callable[[Path], dict | None], command: str) -> None:
    """Writes `report` (and its plots beside it) from the result files in `results`."""
    import matplotlib
    matplotlib.use("Agg")

    get = lambda run: read(results / f"{run}.json")
    report.parent.mkdir(parents=True, exist_ok=True)
    rep = Report(study, get, report.parent, report.stem)
    sections, summary = [], []
    for title, method, claim in SECTIONS:
        body, row = getattr(rep, method)()
        sections += [f"## {title}", "", claim, "", *body, ""]
        if row:
            summary.append(row)
    made = [r for r in map(get, sorted(p.stem for p in results.glob("*.json"))) if r and r.get("seconds")]
    where = results.relative_to(report.parent.parent) if results.is_relative_to(report.parent.parent) else results
    lines = ["# The paper in miniature", "",
             "**The paper's headline experiment — slot filling on MASSIVE, where its largest effect is (Table 10) — "
             "is its own study: [slot.md](slot.md) (pilot, then base / SFT / joint with seeds).** This page is the "
             "earlier MT miniature and the retrieval, placement, merging and correlation tests around it.", "",
             f"Regenerate: `{command}` (runs what is missing, then writes this page from `{where}/`; "
             "`--report-only` only rewrites the page).", "",
             f"Model `{study.model}`; design `{study.fingerprint()}`: "
             f"`{json.dumps({k: v for k, v in asdict(study).items() if k != 'model'})}`.", ""]
    if made:
        machines = ", ".join(sorted({r.get("machine", "?") for r in made}))
        lines += [f"Compute: {sum(r['seconds'] for r in made) / 60:.0f} min for the {len(made)} timed result files "
                  f"(each run's wall time, the trainings it needed included; {machines}).", ""]
    if summary:
        lines += ["| claim | paper | miniature | verdict |", "|---|---|---|---|",
                  *(f"| {' | '.join(row)} |" for row in summary), ""]
    atomic_write_text(report, "\n".join(lines + sections + differences(study)).rstrip() + "\n")
