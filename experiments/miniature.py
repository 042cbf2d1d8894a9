"""The paper in miniature: its main claims re-tested on real data, on CPU, with error bars (issue 16).

    python experiments/miniature.py                      # the whole study (default offline model), resumable
    python experiments/miniature.py --stages mt          # one part of it
    python experiments/miniature.py --report-only        # rebuild docs/miniature.md from the result files
    python experiments/miniature.py --quick --model DIR  # every stage at toy size (the test suite)

Data: ALMA's human-written training pairs and the WMT23 test sets, read through the same fetchers as
`python -m midalign.data` (from the publishers, or from local copies with --alma-dir / --wmt23-dir),
and the offline UDHR multiway text. Each run writes one compact JSON file to --results (committed:
a later machine skips every run whose file exists); models and adapters live in --work (not committed;
a run whose file is missing and needs an adapter that is not there trains it again, with the same seed).

Sections (the paper's claim, the miniature's measurement, whether it holds):
  mt          Table 2 (MT): base, SFT (task only) and joint (task + alignment at the middle layer), X→en,
              chrF/BLEU per direction on WMT23 {de, ru, zh}→en (supervised) and {he, ja, uk}→en (transfer)
  retrieval   Fig. 1a / Table 2: layer-wise UDHR retrieval for base, SFT and joint
  placement   Fig. 4: alignment-only training at an early, the middle and a late layer
  merge       Table 6: SFT adapter merged with the alignment-only adapter (task weight chosen on ALMA dev)
  correlation Fig. 1b: base middle-layer retrieval per language vs the SFT model's per-language chrF
  unseen      §5.2: transfer gain (joint with alignment on a named UDHR language subset − SFT) for
              languages in that subset vs languages absent from it
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import evaluate  # noqa: E402
import merge  # noqa: E402
import retrieve  # noqa: E402
import train  # noqa: E402
from midalign.data import sources  # noqa: E402
from midalign.errors import MidalignError  # noqa: E402
from midalign.io import atomic_write_text  # noqa: E402
from midalign.registry import DEFAULT_MODEL  # noqa: E402

STAGES = ("mt", "retrieval", "placement", "merge", "correlation", "unseen")


@dataclass(frozen=True)
class Study:
    """The study's design; QUICK is the same at toy size."""
    model: str = DEFAULT_MODEL
    train_langs: tuple = ("cs", "de", "is", "ru", "zh")  # ALMA X→en task languages
    supervised: tuple = ("de", "ru", "zh")  # WMT23 test directions X→en
    transfer: tuple = ("he", "ja", "uk")
    pairs_per_lang: int = 400  # ALMA training pairs per language (the first ones)
    dev_per_lang: int = 8  # ALMA dev pairs per language (task dev loss; merge weight choice)
    test_per_direction: int = 40  # WMT23 segments per direction (the first ones), the same for every model
    updates: int = 48
    batch_size: int = 4
    align_batch_size: int = 16
    eval_every: int = 16
    seeds: tuple = (0, 1, 2)
    temperature: float = 0.1
    pool: str = "mean-skip-first"
    max_new_tokens: int = 96
    # UDHR languages: retrieval (with English), the subset aligned in the "unseen" run, the others
    retrieval_langs: tuple = ("en", "cs", "de", "is", "ru", "zh", "ja", "uk", "cy", "sw", "tl", "jv")
    unseen_aligned: tuple = ("af", "fi", "hu", "id", "ko", "tr", "vi", "it")
    unseen_other: tuple = ("cy", "sw", "tl", "jv", "ja", "uk", "hi", "pl")
    udhr_per_lang: int = 4  # shortest held-out UDHR paragraphs per language for the X→en evaluations
    bootstrap: int = 1000
    batch_gen: int = 16


QUICK = Study(pairs_per_lang=6, dev_per_lang=2, test_per_direction=2, updates=2, batch_size=2, align_batch_size=4,
              eval_every=2, seeds=(0, 1), max_new_tokens=4, retrieval_langs=("en", "de", "ru", "cy"),
              unseen_aligned=("fi", "hu"), unseen_other=("cy", "sw"), udhr_per_lang=1, bootstrap=50, batch_gen=8)


class Runner:
    """Runs (or skips) the study's runs; each run's result is one JSON file in `results`."""

    def __init__(self, study: Study, results: Path, work: Path, data_dir: Path | None, alma_dir: Path | None,
                 wmt23_dir: Path | None):
        self.s, self.results, self.work = study, results, work
        self.data_dir, self.alma_dir, self.wmt23_dir = data_dir, alma_dir, wmt23_dir
        self._files: dict | None = None

    # ------------------------------------------------------------------------------------- data
    def files(self) -> dict:
        """Subsampled ALMA train/dev files, their pairs, and the WMT23 test files (first N segments)."""
        if self._files is None:
            s, out = self.s, self.work / "data"
            out.mkdir(parents=True, exist_ok=True)
            alma = sources.ensure("alma", self.data_dir, list(s.train_langs), progress=False, local=self.alma_dir)
            [wmt] = sources.ensure("wmt23", self.data_dir, progress=False, local=self.wmt23_dir)
            files = {"train": [], "dev": [], "pairs": out / "pairs.tsv", "test": []}
            pairs = []  # the MT experiment aligns on its own training pairs
            for folder, x in zip(alma, s.train_langs):
                for split, n in (("train", s.pairs_per_lang), ("valid", s.dev_per_lang)):
                    rows = (folder / f"{split}.{x}-en.jsonl").read_text(encoding="utf-8").splitlines()[:n]
                    path = out / f"{split}.{x}-en.jsonl"
                    atomic_write_text(path, "".join(r + "\n" for r in rows))
                    files["train" if split == "train" else "dev"].append(path)
                    if split == "train":
                        pairs += [(x, t[x], t["en"]) for t in (json.loads(r)["translation"] for r in rows)]
            atomic_write_text(files["pairs"], "".join(f"{x}\t{text}\t{en}\n" for x, text, en in pairs))
            for x in (*s.supervised, *s.transfer):
                rows = (wmt / f"test.{x}-en.jsonl").read_text(encoding="utf-8").splitlines()[:s.test_per_direction]
                path = out / f"test.{x}-en.jsonl"
                atomic_write_text(path, "".join(r + "\n" for r in rows))
                files["test"].append(path)
            self._files = files
        return self._files

    # ------------------------------------------------------------------------------------- runs
    def done(self, run: str) -> dict | None:
        path = self.results / f"{run}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def save(self, run: str, result: dict) -> dict:
        atomic_write_text(self.results / f"{run}.json", json.dumps(result, ensure_ascii=False, indent=1))
        return result

    def adapter(self, name: str, extra: list[str], seed: int = 0) -> Path:
        """Train `name` (the work folder's adapter) unless its best adapter is already there."""
        out = self.work / name
        if not (out / "best" / "adapter_config.json").is_file():
            s, f = self.s, self.files()
            train.main(["--model", s.model, "--task", "mt", "--mt-direction", "to-en", "--train-data", *map(str, f["train"]),
                        "--dev-data", *map(str, f["dev"]), "--batch-size", str(s.batch_size),
                        "--align-batch-size", str(s.align_batch_size), "--grad-accum", "2", "--max-steps",
                        str(s.updates), "--eval-every", str(s.eval_every), "--patience", "1000", "--pool", s.pool,
                        "--temperature", str(s.temperature), "--seed", str(seed), "--out", str(out), *extra])
        return out / "best"

    def sft(self, seed: int) -> Path:
        return self.adapter(f"sft-s{seed}", ["--no-align"], seed)

    def joint(self, seed: int) -> Path:
        return self.adapter(f"joint-s{seed}", ["--align-data", str(self.files()["pairs"])], seed)

    def align_only(self, layer: int) -> Path:
        return self.adapter(f"align-l{layer}", ["--task", "none", "--align-data", str(self.files()["pairs"]),
                                                "--align-layer", str(layer)])

    def mt_eval(self, run: str, adapter: Callable[[], Path] | None, log: str | None = None) -> dict:
        """chrF/BLEU per WMT23 direction, with every hypothesis and reference (for the bootstrap).
        `adapter` is called (trained, if need be) only when the result is missing."""
        if (r := self.done(run)) is not None:
            return r
        out, adapter = self.work / f"eval-{run}", adapter() if adapter else None
        evaluate.main(["--model", self.s.model, "--data", *map(str, self.files()["test"]), "--max-new-tokens",
                       str(self.s.max_new_tokens), "--batch-size", str(self.s.batch_gen), "--out", str(out),
                       *(["--adapter", str(adapter)] if adapter else [])])
        return self.save(run, eval_result(out, self.work / log / "log.jsonl" if log else None))

    def udhr_eval(self, run: str, adapter: Callable[[], Path] | None) -> dict:
        """chrF per language, UDHR held-out paragraphs X→en (the languages of the correlation and unseen parts)."""
        if (r := self.done(run)) is not None:
            return r
        s, out, adapter = self.s, self.work / f"eval-{run}", adapter() if adapter else None
        langs = list(dict.fromkeys([*s.retrieval_langs[1:], *s.unseen_aligned, *s.unseen_other]))
        evaluate.main(["--model", s.model, "--langs", *langs, "--limit", str(s.udhr_per_lang), "--max-new-tokens",
                       str(s.max_new_tokens), "--batch-size", str(s.batch_gen), "--out", str(out),
                       *(["--adapter", str(adapter)] if adapter else [])])
        return self.save(run, eval_result(out))

    def retrieval(self, run: str, adapter: Callable[[], Path] | None) -> dict:
        if (r := self.done(run)) is not None:
            return r
        out, adapter = self.work / f"retrieval-{run}", adapter() if adapter else None
        retrieve.main(["--model", self.s.model, "--langs", *self.s.retrieval_langs, "--pool", self.s.pool,
                       "--out", str(out), *(["--adapter", str(adapter)] if adapter else [])])
        res = json.loads((out / "results.json").read_text())
        pool = res["pools"][self.s.pool]
        return self.save(run, {"layers": res["layers"], "per_layer": pool["per_layer"],
                               "per_language": {l: [(a + b) / 2 for a, b in zip(v["as_source"], v["as_target"])]
                                                for l, v in pool["per_language"].items()}})

    # ----------------------------------------------------------------------------------- stages
    def middle(self) -> int:
        from midalign.checkpoint import resolve_model_dir
        from midalign.config import ModelConfig

        return ModelConfig.from_hf(resolve_model_dir(self.s.model)).num_hidden_layers // 2

    def stage(self, name: str) -> None:
        s, mid = self.s, self.middle()
        first = s.seeds[0]
        if name == "mt":
            self.mt_eval("mt-base", None)
            for seed in s.seeds:
                self.mt_eval(f"mt-sft-s{seed}", lambda: self.sft(seed), f"sft-s{seed}")
                self.mt_eval(f"mt-joint-s{seed}", lambda: self.joint(seed), f"joint-s{seed}")
        elif name == "retrieval":
            self.retrieval("ret-base", None)
            self.retrieval("ret-sft", lambda: self.sft(first))
            self.retrieval("ret-joint", lambda: self.joint(first))
        elif name == "placement":
            for layer in placement_layers(mid):
                self.retrieval(f"ret-align-l{layer}", lambda: self.align_only(layer))
        elif name == "merge":
            self.mt_eval("mt-merged", lambda: self.merged(mid))
        elif name == "correlation":
            self.retrieval("ret-base", None)
            self.udhr_eval("udhr-sft", lambda: self.sft(first))
        elif name == "unseen":
            self.udhr_eval("udhr-sft", lambda: self.sft(first))
            # joint training whose alignment pairs are the UDHR train articles of a named language subset
            self.udhr_eval("udhr-joint-unseen", lambda: self.adapter("joint-unseen", ["--align-langs", *s.unseen_aligned]))

    def merged(self, mid: int) -> Path:
        """The SFT adapter merged with the middle-layer alignment-only adapter, task weight chosen on ALMA dev."""
        s, out = self.s, self.work / "merged"
        if not (out / "search.json").is_file():
            merge.main(["--adapters", str(self.sft(s.seeds[0])), str(self.align_only(mid)), "--search", "0.5", "0.7",
                        "0.9", "--task", "mt", "--dev-data", *map(str, self.files()["dev"]), "--max-new-tokens",
                        str(s.max_new_tokens), "--batch-size", str(s.batch_gen), "--model", s.model, "--out", str(out)])
        self.save("merge-search", json.loads((out / "search.json").read_text()))
        return out


def placement_layers(mid: int) -> list[int]:
    return [max(1, mid // 2), mid, mid + mid // 2]


def eval_result(out: Path, log: Path | None = None) -> dict:
    scores = json.loads((out / "scores.json").read_text())
    preds = [json.loads(l) for l in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    result = {"per_unit": {u: {"chrf": v["chrf"], "bleu": v["bleu"]} for u, v in scores["per_language"].items()},
              "segments": {u: [[p["prediction"], p["reference"]] for p in preds if p["unit"] == u]
                           for u in scores["per_language"]},
              "generation": scores["generation"]}
    if log is not None and log.is_file():
        result["dev_curve"] = [{k: r[k] for k in ("step", "dev_loss", "dev_task_loss", "dev_align_loss") if k in r}
                               for r in map(json.loads, log.read_text().splitlines()) if r.get("eval")]
    return result


# ---------------------------------------------------------------------------------------- statistics

def corpus_chrf(pairs: list[list[str]]) -> float:
    from sacrebleu.metrics import CHRF

    return CHRF().corpus_score([h for h, _ in pairs], [[r for _, r in pairs]]).score


def group_chrf(result: dict, units: list[str]) -> float:
    """Mean over the group's directions of corpus chrF."""
    return statistics.mean(result["per_unit"][u]["chrf"] for u in units)


def paired_bootstrap(systems_a: list[dict], systems_b: list[dict], units: list[str], n: int, seed: int = 0) -> dict:
    """Paired bootstrap over test segments (resampled per direction, the same indices for every system):
    the difference of the group's mean corpus chrF, seed-averaged a minus seed-averaged b.
    Returns the observed difference, its 95% interval and the share of resamples ≤ 0 (one-sided p)."""
    rng = random.Random(seed)
    sizes = {u: len(systems_a[0]["segments"][u]) for u in units}
    score = lambda systems, idx: statistics.mean(
        statistics.mean(corpus_chrf([sys_["segments"][u][i] for i in idx[u]]) for u in units) for sys_ in systems)
    full = {u: list(range(sizes[u])) for u in units}
    observed = score(systems_a, full) - score(systems_b, full)
    deltas = []
    for _ in range(n):
        idx = {u: [rng.randrange(sizes[u]) for _ in range(sizes[u])] for u in units}
        deltas.append(score(systems_a, idx) - score(systems_b, idx))
    deltas.sort()
    lo, hi = deltas[int(0.025 * n)], deltas[min(n - 1, int(0.975 * n))]
    return {"delta": observed, "ci95": [lo, hi], "p_le_0": sum(d <= 0 for d in deltas) / n,
            "half_width": (hi - lo) / 2}


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def pearson(x: list[float], y: list[float]) -> tuple[float, float]:
    from scipy.stats import pearsonr

    r = pearsonr(x, y)
    return float(r.statistic), float(r.pvalue)


# ---------------------------------------------------------------------------------------------- report

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


def render(study: Study, results: Path, report: Path, seconds: float | None, quick: bool = False) -> None:
    """docs/miniature.md (and its plots beside it) from the result files alone."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    get = lambda run: json.loads((results / f"{run}.json").read_text()) if (results / f"{run}.json").is_file() else None
    figs, lines = report.parent, []
    figs.mkdir(parents=True, exist_ok=True)
    stem = report.stem
    sup, tra = [f"{x}-en" for x in study.supervised], [f"{x}-en" for x in study.transfer]
    cmd = "python experiments/miniature.py" + (f" --quick --model {study.model}" if quick else "")
    lines += ["# The paper in miniature", "",
              f"Regenerate: `{cmd}` (runs what is missing, then writes this page from "
              f"`{results.relative_to(ROOT) if results.is_relative_to(ROOT) else results}/`).",
              f"Model `{study.model}`; design: {json.dumps({k: v for k, v in asdict(study).items() if k != 'model'})}.",
              *( [f"Compute for the runs this invocation made: {seconds / 60:.0f} min."] if seconds else []), ""]

    # --- MT
    base, sft, joint = get("mt-base"), [get(f"mt-sft-s{k}") for k in study.seeds], [get(f"mt-joint-s{k}") for k in study.seeds]
    lines += ["## 1. MT in miniature (Table 2, MT rows)", "",
              "Paper: alignment training improves X→English transfer to languages not in the task data over "
              "task-only training (SFT), at little cost on the supervised ones.", ""]
    if base and all(sft) and all(joint):
        rows = [("base", [base]), ("SFT", sft), ("joint", joint)]
        lines += ["| model | " + " | ".join(sup + tra) + " | chrF supervised | chrF transfer | BLEU supervised | BLEU transfer |",
                  "|---" * (len(sup + tra) + 5) + "|"]
        for name, runs in rows:
            cells = [mean_sd([r["per_unit"][u]["chrf"] for r in runs]) for u in sup + tra]
            groups = [mean_sd([group_chrf(r, units) for r in runs]) for units in (sup, tra)]
            bleu = [mean_sd([statistics.mean(r["per_unit"][u]["bleu"] for u in units) for r in runs]) for units in (sup, tra)]
            lines.append(f"| {name} ({len(runs)} run{'s' if len(runs) > 1 else ''}) | " + " | ".join(cells + groups + bleu) + " |")
        lines += ["", "chrF per direction, mean ± sd over seeds (seed = data order, LoRA init and dropout).", ""]
        for label, units in (("supervised", sup), ("transfer", tra)):
            b = paired_bootstrap(joint, sft, units, study.bootstrap)
            holds = "holds" if b["ci95"][0] > 0 else ("is contradicted" if b["ci95"][1] < 0 else "is not detected")
            lines.append(f"- joint − SFT, {label}: Δ chrF {b['delta']:+.2f}, 95% interval [{b['ci95'][0]:+.2f}, "
                         f"{b['ci95'][1]:+.2f}] (paired bootstrap over segments, {study.bootstrap} resamples; "
                         f"one-sided p = {b['p_le_0']:.3f}); smallest difference this design resolves ≈ "
                         f"{b['half_width']:.2f} chrF. The paper's claim {holds} here.")
        curves = [(f"{name} s{k}", r.get("dev_curve", [])) for name, runs in (("SFT", sft), ("joint", joint))
                  for k, r in zip(study.seeds, runs)]
        if any(c for _, c in curves):
            plot_lines(figs / f"{stem}_dev_curve.png", "update", "dev task loss", [
                (label, [p["step"] for p in c], [p.get("dev_task_loss", p["dev_loss"]) for p in c]) for label, c in curves])
            lines += ["", f"![dev task loss by update]({stem}_dev_curve.png)", ""]
    else:
        lines += ["Not run yet.", ""]

    # --- retrieval
    lines += ["## 2. Retrieval (Fig. 1a; Table 2's retrieval column)", "",
              "Paper: retrieval accuracy peaks in the middle layers; alignment training raises it (Llama 3 8B, "
              "FLORES-200, 20 languages: average 39.1 → 73.2).", ""]
    rets = {n: get(f"ret-{n}") for n in ("base", "sft", "joint")}
    if all(rets.values()):
        plot_lines(figs / f"{stem}_retrieval.png", "layer", "retrieval accuracy (%)",
                   [(n, r["layers"], [100 * a for a in r["per_layer"]]) for n, r in rets.items()])
        avg = lambda r: 100 * statistics.mean(a for l, a in zip(r["layers"], r["per_layer"]) if l > 0 and l % 2 == 0)
        peak = lambda r: max(zip(r["per_layer"], r["layers"]))[1]
        lines += ["| model | paper average (even layers) | peak layer |", "|---|---|---|"]
        lines += [f"| {n} | {avg(r):.1f} | {peak(r)} |" for n, r in rets.items()]
        lines += ["", f"![retrieval by layer]({stem}_retrieval.png)", "",
                  f"UDHR held-out paragraphs, {len(study.retrieval_langs)} languages ({', '.join(study.retrieval_langs)}), "
                  f"pooling `{study.pool}`, SFT and joint of seed {study.seeds[0]}. Alignment "
                  f"{'raises' if avg(rets['joint']) > avg(rets['sft']) else 'does not raise'} the average over SFT "
                  f"({avg(rets['sft']):.1f} → {avg(rets['joint']):.1f}).", ""]
    else:
        lines += ["Not run yet.", ""]

    # --- placement
    mid = None
    if rets["base"]:
        mid = max(rets["base"]["layers"]) // 2
    lines += ["## 3. Placement (Fig. 4)", "", "Paper: aligning a middle layer lifts retrieval most around that layer "
              "and transfers best; early or late placement does less.", ""]
    place = {l: get(f"ret-align-l{l}") for l in placement_layers(mid)} if mid else {}
    if place and all(place.values()) and rets["base"]:
        plot_lines(figs / f"{stem}_placement.png", "layer", "retrieval accuracy (%)",
                   [(f"aligned at layer {l}", r["layers"], [100 * a for a in r["per_layer"]])
                    for l, r in {"base": rets["base"], **place}.items()])
        gain = {l: 100 * (r["per_layer"][l] - rets["base"]["per_layer"][l]) for l, r in place.items()}
        avg_gain = {l: 100 * statistics.mean(a - b for a, b in zip(r["per_layer"], rets["base"]["per_layer"]))
                    for l, r in place.items()}
        lines += ["| aligned layer | gain at that layer | mean gain over all layers |", "|---|---|---|"]
        lines += [f"| {l} | {gain[l]:+.1f} | {avg_gain[l]:+.1f} |" for l in place]
        best = max(avg_gain, key=avg_gain.get)
        lines += ["", f"![placement]({stem}_placement.png)", "",
                  f"The largest mean gain comes from aligning layer {best} "
                  f"({'the middle: the claim holds' if best == mid else 'not the middle one: the claim does not hold here'}).", ""]
    else:
        lines += ["Not run yet.", ""]

    # --- merge
    lines += ["## 4. Merging (Table 6)", "", "Paper: a task adapter merged with a separately trained alignment adapter "
              "(task weight 0.9, chosen among 0.5/0.7/0.9 on dev) recovers part of joint training's transfer gain.", ""]
    search, merged = get("merge-search"), get("mt-merged")
    if search and merged and all(sft) and all(joint):
        dev_scores = ", ".join(f"{w}: {v['score']:.1f}" for w, v in search["weights"].items())
        lines += [f"Task weight chosen on ALMA dev: **{search['best_weight']}** (dev scores: {dev_scores}).", "",
                  "| model | chrF supervised | chrF transfer |", "|---|---|---|",
                  f"| SFT (seed {study.seeds[0]}) | {group_chrf(sft[0], sup):.1f} | {group_chrf(sft[0], tra):.1f} |",
                  f"| merged | {group_chrf(merged, sup):.1f} | {group_chrf(merged, tra):.1f} |",
                  f"| joint (seed {study.seeds[0]}) | {group_chrf(joint[0], sup):.1f} | {group_chrf(joint[0], tra):.1f} |", ""]
        b = paired_bootstrap([merged], [sft[0]], tra, study.bootstrap)
        lines += [f"Merged − SFT on transfer: Δ chrF {b['delta']:+.2f}, 95% interval [{b['ci95'][0]:+.2f}, "
                  f"{b['ci95'][1]:+.2f}].", ""]
    else:
        lines += ["Not run yet.", ""]

    # --- correlation
    lines += ["## 5. Correlation (Fig. 1b)", "", "Paper: per-language middle-layer retrieval of the base model "
              "correlates with the fine-tuned model's per-language transfer score.", ""]
    udhr_sft = get("udhr-sft")
    if rets["base"] and udhr_sft:
        layer = rets["base"]["layers"].index(max(rets["base"]["layers"]) // 2)
        langs = [l for l in rets["base"]["per_language"] if f"{l}-en" in udhr_sft["per_unit"]]
        x = [100 * rets["base"]["per_language"][l][layer] for l in langs]
        y = [udhr_sft["per_unit"][f"{l}-en"]["chrf"] for l in langs]
        r, p = pearson(x, y) if len(langs) > 2 else (math.nan, math.nan)
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        ax.scatter(x, y)
        for xi, yi, l in zip(x, y, langs):
            ax.annotate(l, (xi, yi), fontsize=7)
        ax.set_xlabel(f"base retrieval at layer {rets['base']['layers'][layer]} (%)")
        ax.set_ylabel("SFT chrF, UDHR X→en")
        save_figure(fig, figs / f"{stem}_correlation.png")
        lines += [f"Pearson r = {r:.2f} (p = {p:.3f}, {len(langs)} languages).", "",
                  f"![correlation]({stem}_correlation.png)", ""]
    else:
        lines += ["Not run yet.", ""]

    # --- unseen
    lines += ["## 6. Languages absent from the alignment data (§5.2)", "", "Paper: the transfer gain from alignment "
              "also reaches languages that are not in the alignment data.", ""]
    joint_unseen = get("udhr-joint-unseen")
    if udhr_sft and joint_unseen:
        gains = {l: joint_unseen["per_unit"][f"{l}-en"]["chrf"] - udhr_sft["per_unit"][f"{l}-en"]["chrf"]
                 for l in (*study.unseen_aligned, *study.unseen_other) if f"{l}-en" in udhr_sft["per_unit"]}
        a = [gains[l] for l in study.unseen_aligned if l in gains]
        o = [gains[l] for l in study.unseen_other if l in gains]
        lines += ["| languages | chrF gain over SFT (mean ± sd over languages) |", "|---|---|",
                  f"| in the alignment data ({', '.join(study.unseen_aligned)}) | {mean_sd(a)} |",
                  f"| absent from it ({', '.join(study.unseen_other)}) | {mean_sd(o)} |", "",
                  "Per language: " + ", ".join(f"{l} {g:+.1f}" for l, g in gains.items()) + ".", ""]
    else:
        lines += ["Not run yet.", ""]
    atomic_write_text(report, "\n".join(lines).rstrip() + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--quick", action="store_true", help="every stage at toy size (needs --model, e.g. a tiny model)")
    p.add_argument("--model", help=f"model (default {DEFAULT_MODEL})")
    p.add_argument("--results", type=Path, default=ROOT / "experiments" / "results", help="result files (committed)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "miniature", help="models, adapters, raw outputs")
    p.add_argument("--report", type=Path, default=ROOT / "docs" / "miniature.md")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from the result files")
    p.add_argument("--data-dir", type=Path, help="root of prepared datasets (default: $MIDALIGN_CACHE/datasets)")
    p.add_argument("--alma-dir", type=Path, help="a local copy of ALMA's human_written_data/ (else downloaded)")
    p.add_argument("--wmt23-dir", type=Path, help="a local copy of wmt23-news-systems (txt/ or xml/; else downloaded)")
    args = p.parse_args(argv)
    study = QUICK if args.quick else Study()
    if args.model:
        study = replace(study, model=args.model)
    start = time.perf_counter()
    if not args.report_only:
        runner = Runner(study, args.results, args.work, args.data_dir, args.alma_dir, args.wmt23_dir)
        for stage in args.stages:
            print(f"[miniature] {stage}", file=sys.stderr)
            runner.stage(stage)
    render(study, args.results, args.report, None if args.report_only else time.perf_counter() - start, args.quick)
    print(f"wrote {args.report}")


if __name__ == "__main__":
    try:
        main()
    except MidalignError as e:
        sys.exit(f"error: {e}")
