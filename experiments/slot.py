"""The paper's headline experiment in miniature: slot filling on MASSIVE 1.1 (paper §4, Table 2, Table 10).

    python experiments/slot.py --massive-from amazon-massive-dataset-1.1.tar.gz --tatoeba-from LASER/data/tatoeba/v1
    python experiments/slot.py --stages pilot           # the pilot only: zero-shot, and SFT at each pilot lr
    python experiments/slot.py --stages retrieval merge # Fig. 1b and Table 2's retrieval; Table 6's merge
    python experiments/slot.py --report-only            # rebuild docs/slot.md from the result files
    python experiments/slot.py --quick --model DIR      # every stage at toy size (the test suite)

The paper's setting: task training on MASSIVE `train` of ar en es ru zh; alignment with Tatoeba pairs of
cy ja jv sw tl with English at the middle layer; F1 with the official scorer on all 20 locales. Stages:
- `main`: base zero-shot, SFT (task only) and joint (task + alignment), two seeds each. Joint and SFT
  draw the same task micro-batches in the same order (the alignment micro-batches are added, not
  swapped for task ones).
- `retrieval`: layer-wise translation retrieval of base, SFT and joint on MASSIVE `dev` utterances,
  multiway parallel across the 20 locales (Table 2's retrieval column; Fig. 1b's correlation).
- `merge`: an alignment-only adapter merged into the SFT adapter, the task weight chosen on dev (§6.3,
  Table 6).
- `more-seeds`: the design's further seeds of SFT and joint, last, as the budget allows.
Test utterances are a random sample of each locale's `test` partition (fixed seed), largest for the
aligned languages, where the paper's effect is.

Each run writes one JSON file to --results (committed), holding every test item's id, utterance, gold
annotation and prediction, so each F1 can be recomputed with the official scorer from the file alone;
the study's design is stamped in each file, and a file from another design is refused. Adapters and
raw outputs live in --work (not committed); an interrupted training resumes where it stopped.
Precision: bf16 autocast where the CPU has bf16 instructions (measured 1.7× faster per update on such
a CPU), else fp32; each result file records which.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from midalign.data import sources  # noqa: E402
from midalign.data.assemble import hold_out  # noqa: E402
from midalign.data.experiments import MASSIVE_LOCALES  # noqa: E402
from midalign.adapters import read_adapter  # noqa: E402
from midalign.align import AlignConfig, contrastive_loss, encode_pairs, pooled_states  # noqa: E402
from midalign.data.tasks import TASKS, load_massive, load_pairs  # noqa: E402
from midalign.errors import DataError  # noqa: E402
from midalign.cli import run  # noqa: E402
from midalign.evaluation import load_for_inference, predict  # noqa: E402
from midalign.io import atomic_write_text  # noqa: E402
from midalign.merging import save_search, search_weight  # noqa: E402
from midalign.metrics import slot_f1  # noqa: E402
from midalign.precision import autocast, native_bf16  # noqa: E402
from midalign.registry import DEFAULT_MODEL  # noqa: E402
from midalign.retrieval import layer_retrieval  # noqa: E402
from midalign.training import TrainSettings  # noqa: E402
from slot_report import render  # noqa: E402
from study import check_report_only, curves, fit_apart, read_result, study_parser  # noqa: E402

STAGES = ("pilot", "main", "retrieval", "merge", "more-seeds")
MAIN_SEEDS = 2  # seeds of stage `main`; the design's others come last (`more-seeds`), as the budget allows
POOLS = ("mean", "mean-skip-first")  # the paper's pooling, and the one that skips the first token


@dataclass(frozen=True)
class SlotStudy:
    """The design. `fingerprint()` names it: result files are only reused under the same one."""
    model: str = DEFAULT_MODEL
    supervised: tuple = ("ar", "en", "es", "ru", "zh")  # MASSIVE train languages (Table 9)
    aligned: tuple = ("cy", "ja", "jv", "sw", "tl")  # Tatoeba alignment languages, paired with English
    other: tuple = ("af", "az", "de", "el", "fr", "hi", "is", "th", "tr", "ur")  # transfer, not aligned
    # random test utterances per locale: supervised, aligned, other. The pilot's dev F1 has a standard error
    # of ≈5 at 20 utterances per language: 200 per aligned language bring the one-model error to ≈1.6.
    test_per_lang: tuple = (30, 200, 20)
    dev_per_lang: int = 20  # random dev utterances per supervised locale (dev loss; the pilot's F1)
    sample_seed: int = 0
    updates: int = 200
    batch_size: int = 8
    grad_accum: int = 2  # task micro-batches per update (joint: as many alignment ones in between)
    lr: float = 5e-4
    warmup_ratio: float = 0.05
    eval_every: int = 50
    align_batch_size: int = 16
    align_layer: int = 0  # 0: the middle layer, L/2 (paper §3)
    temperature: float = 1.5  # App. D.1: τ for Qwen 2.5
    # not the paper's `mean`: the pooling pilot (docs/slot.md) finds the first token's attention sink puts
    # every pair's cosine at ≈0.99 at the middle layer of the default model, so the loss sits at ln(batch)
    pool: str = "mean-skip-first"
    seeds: tuple = (0, 1, 2)
    max_new_tokens: int = 64  # the longest gold answer of the test sample is well below (the paper: 128)
    batch_gen: int = 16
    pilot_lrs: tuple = (5e-4,)  # the paper's (App. D.1); a second rate (1e-3) was dropped for the main arms' budget
    pilot_updates: int = 120
    pilot_eval_every: int = 30
    bootstrap: int = 2000
    # retrieval (Fig. 1b, Table 2): utterances per locale, the same ids in all, from this MASSIVE partition
    retrieval_per_lang: int = 200
    retrieval_partition: str = "dev"
    merge_weights: tuple = (0.5, 0.7, 0.9)  # task weights tried on dev (Table 6 chose 0.9 among these)
    pooling_batches: int = 8  # alignment micro-batches of the pooling pilot

    def fingerprint(self, run: str = "") -> str:
        """The design a run depends on: a pilot run (`pilot-…`) on the pilot's settings alone, so that the
        main design can be fixed from the pilot without invalidating it; every other run on the rest, less
        the fields that only some runs use (RUN_FIELDS), so that adding a stage invalidates nothing."""
        import hashlib

        fields = asdict(self)
        own = {f for prefix, names in RUN_FIELDS.items() if run.startswith(prefix) for f in names}
        if run.startswith("pilot"):
            design = {k: fields[k] for k in (*PILOT_FIELDS, *sorted(own))}
        else:  # a run's seed is in its name: the list of seeds only says which runs exist
            left_out = {"bootstrap", "pilot_lrs", "pilot_updates", "pilot_eval_every", "seeds",
                        *(f for names in RUN_FIELDS.values() for f in names)} - own
            design = {k: v for k, v in fields.items() if k not in left_out}
        return hashlib.sha256(json.dumps(design, sort_keys=True).encode()).hexdigest()[:10]


# What a pilot run depends on (its learning rate is in its name; the bootstrap only shapes the report).
PILOT_FIELDS = ("model", "supervised", "dev_per_lang", "sample_seed", "batch_size", "grad_accum", "warmup_ratio",
                "pilot_updates", "pilot_eval_every", "max_new_tokens", "batch_gen")
# Fields that only the runs named with a prefix depend on: the alignment settings only runs that align.
ALIGN_FIELDS = ("align_batch_size", "align_layer", "temperature", "pool")
RUN_FIELDS = {"ret-": ("retrieval_per_lang", "retrieval_partition"), "merge": ("merge_weights", *ALIGN_FIELDS),
              "joint-": ALIGN_FIELDS, "align-": ALIGN_FIELDS, "ret-joint-": ALIGN_FIELDS,
              "pilot-pooling": ("aligned", "align_batch_size", "align_layer", "temperature", "pooling_batches")}
QUICK = SlotStudy(test_per_lang=(1, 2, 1), dev_per_lang=1, updates=2, batch_size=2, grad_accum=1, eval_every=2,
                  align_batch_size=4, seeds=(0, 1), max_new_tokens=4, batch_gen=8, pilot_lrs=(5e-4,), pilot_updates=2,
                  pilot_eval_every=1, bootstrap=50, other=("de", "fr"), retrieval_per_lang=6,
                  retrieval_partition="train", merge_weights=(0.5, 0.9), pooling_batches=2)  # excerpts' `dev`: one id


def study_dtype() -> str:
    """bf16 autocast where the CPU has bf16 instructions (measured faster there), else fp32."""
    return "bf16" if torch.cuda.is_available() or native_bf16() else "fp32"


class Runner:
    def __init__(self, study: SlotStudy, results: Path, work: Path, data_dir: Path | None,
                 massive_from: Path | None, tatoeba_from: Path | None):
        self.s, self.results, self.root = study, results, work
        self.work = work / study.fingerprint()  # the sampled data files
        self.data_dir, self.massive_from, self.tatoeba_from = data_dir, massive_from, tatoeba_from
        self.dtype = study_dtype()
        self._files: dict | None = None

    # ------------------------------------------------------------------------------------- data
    def files(self) -> dict:
        """The MASSIVE locale files, the sampled dev and test files, and the alignment train/dev pairs."""
        if self._files is not None:
            return self._files
        s, out = self.s, self.work / "data"
        out.mkdir(parents=True, exist_ok=True)
        [massive] = sources.ensure("massive", self.data_dir, progress=False, local=self.massive_from)
        locale = lambda l: massive / f"{MASSIVE_LOCALES[l]}.jsonl"
        n_test = {**{l: s.test_per_lang[0] for l in s.supervised}, **{l: s.test_per_lang[1] for l in s.aligned},
                  **{l: s.test_per_lang[2] for l in s.other}}
        test = [row for l, n in n_test.items() for row in sample(locale(l), "test", n, f"{s.sample_seed}-test-{l}")]
        dev = [row for l in s.supervised for row in sample(locale(l), "dev", s.dev_per_lang, f"{s.sample_seed}-dev-{l}")]
        tatoeba = sources.ensure("tatoeba", self.data_dir, list(s.aligned), progress=False, local=self.tatoeba_from)
        pairs = [p for folder, l in zip(tatoeba, s.aligned) for p in load_pairs(folder / f"{l}-en.tsv")]
        align_train, align_dev = hold_out(pairs, s.sample_seed)
        files = {"train": [locale(l) for l in s.supervised], "dev": out / "dev.jsonl", "test": out / "test.jsonl",
                 "align": out / "align-train.tsv", "align_dev": out / "align-dev.tsv",
                 "locales": {l: locale(l) for l in self.langs()}}
        for key, rows in (("dev", dev), ("test", test)):
            atomic_write_text(files[key], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        for key, rows in (("align", align_train), ("align_dev", align_dev)):
            atomic_write_text(files[key], "".join(f"{p.lang}\t{p.text}\t{p.en}\n" for p in rows))
        self._files = files
        return files

    def langs(self) -> list[str]:
        return [*self.s.supervised, *self.s.aligned, *self.s.other]

    def parallel(self) -> dict[str, list[str]]:
        """`retrieval_per_lang` utterances per locale with the same ids in every locale (MASSIVE is multiway
        parallel), drawn at random from `retrieval_partition` less every utterance the study tests or selects on."""
        s, f = self.s, self.files()
        used = {json.loads(line)["id"] for key in ("dev", "test") for line in f[key].read_text(encoding="utf-8").splitlines()}
        utts = {l: {r["id"]: r["utt"] for r in map(json.loads, f["locales"][l].read_text(encoding="utf-8").splitlines())
                    if r["partition"] == s.retrieval_partition} for l in self.langs()}
        common = sorted(set.intersection(*map(set, utts.values())) - used, key=int)
        if len(common) < s.retrieval_per_lang:
            raise DataError(f"retrieval needs {s.retrieval_per_lang} MASSIVE `{s.retrieval_partition}` ids present in "
                            f"all {len(utts)} locales and unused by the test and dev samples; there are {len(common)}: "
                            "lower retrieval_per_lang or choose another retrieval_partition")
        keep = sorted(random.Random(f"{s.sample_seed}-retrieval").sample(common, s.retrieval_per_lang), key=int)
        return {l: [utts[l][i] for i in keep] for l in self.langs()}

    # ------------------------------------------------------------------------------------- runs
    def design(self, run: str) -> str:
        """The fingerprint of the design that `run` depends on (stamped in its result file)."""
        return self.s.fingerprint(run)

    def run_dir(self, name: str) -> Path:
        """A training's folder, under the fingerprint of the design it depends on."""
        return self.root / self.design(name) / name

    def save(self, run: str, result: dict, seconds: float) -> dict:
        result = {**result, "design": self.design(run), "seconds": round(seconds, 1), "dtype": self.dtype,
                  "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} CPU cores, "
                             f"native bf16 {native_bf16()}, torch {torch.__version__}"}
        atomic_write_text(self.results / f"{run}.json", json.dumps(result, ensure_ascii=False, indent=1))
        return result

    def adapter(self, name: str, seed: int, extra: dict, updates: int, eval_every: int, lr: float,
                checkpoint: str = "best") -> Path:
        """Train `name` unless it finished (an interrupted training resumes); returns its `checkpoint` adapter
        (`best`: the lowest dev loss; `last`: the last update)."""
        s, out, f = self.s, self.run_dir(name), self.files()
        if not (out / "last" / "adapter_config.json").is_file():
            resume = (out / "state").is_dir()
            fit_apart(TrainSettings(model=s.model, task="slot", train_data=f["train"], train_langs=list(s.supervised),
                              dev_data=[f["dev"]], batch_size=s.batch_size, max_steps=updates, eval_every=eval_every,
                              patience=1000, lr=lr, warmup_ratio=s.warmup_ratio, seed=seed, dtype=self.dtype, out=out,
                              resume=resume, overwrite=out.exists() and not resume, **extra))
        return out / checkpoint

    def sft(self, seed: int, lr: float | None = None, updates: int | None = None, eval_every: int | None = None,
            name: str | None = None) -> Path:
        s = self.s
        return self.adapter(name or f"sft-s{seed}", seed, dict(no_align=True, grad_accum=s.grad_accum),
                            updates or s.updates, eval_every or s.eval_every, lr or s.lr)

    def alignment(self) -> dict:
        """The alignment settings of the joint and alignment-only runs."""
        s, f = self.s, self.files()
        return dict(align_data=[f["align"]], align_dev_data=[f["align_dev"]], align_batch_size=s.align_batch_size,
                    temperature=s.temperature, pool=s.pool, align_layer=s.align_layer or None)

    def joint(self, seed: int) -> Path:
        s = self.s
        return self.adapter(f"joint-s{seed}", seed, dict(grad_accum=2 * s.grad_accum, **self.alignment()),
                            s.updates, s.eval_every, s.lr)

    def align_only(self, seed: int) -> Path:
        """The alignment module of §6.3, trained alone: the joint run's alignment micro-batches, no task loss."""
        s = self.s
        return self.adapter(f"align-s{seed}", seed, dict(align_only=True, grad_accum=s.grad_accum, **self.alignment()),
                            s.updates, s.eval_every, s.lr)

    def merged(self) -> Path:
        """The SFT adapter of the first seed merged with the alignment-only adapter (§6.3), the task weight
        chosen by dev F1 over the supervised languages' dev utterances; the search is saved as `merge-search`."""
        s, out = self.s, self.run_dir("merged")
        if not (out / "adapter_config.json").is_file():
            seed = s.seeds[0]
            adapters = [read_adapter(self.sft(seed)), read_adapter(self.align_only(seed))]
            start = time.perf_counter()
            model, tok = load_for_inference(s.model, dtype=self.dtype)
            dev = self.files()["dev"]
            examples = load_massive(dev, "dev")
            merged, record = search_weight(model, tok, adapters, s.merge_weights, "linear", TASKS["slot"],
                                           examples, s.max_new_tokens, s.batch_gen)
            save_search(out, merged, record)
            for scores in record["weights"].values():  # every dev prediction, re-scored by the report
                scores["items"] = items_by_language(dev, examples, scores.pop("predictions"))
            self.save("merge-search", {**record, "seed": seed}, time.perf_counter() - start)
        return out

    def evaluate(self, run: str, adapter, partition: str = "test", log: str | None = None,
                 data: str | None = None) -> dict:
        """F1 per language of the base model or an adapter (trained first if need be), with every prediction;
        data: the key of the sampled file in `files()` (default: the partition's sample)."""
        if (r := read_result(self.results / f"{run}.json", self.design(run))) is not None:
            return r
        start = time.perf_counter()
        adapter = adapter() if adapter else None
        path = self.files()[data or ("test" if partition == "test" else "dev")]
        examples = load_massive(path, partition)
        model, tok = load_for_inference(self.s.model, adapter, dtype=self.dtype)
        predictions, generation = predict(model, tok, examples, self.s.max_new_tokens, self.s.batch_gen)
        items = items_by_language(path, examples, predictions)
        per_lang = {l: 100 * slot_f1(*zip(*[(u, a, p) for _, u, a, p in rows]), l)["f1"] for l, rows in items.items()}
        result = {"partition": partition, "per_lang": per_lang, "items": items, "generation": generation}
        if log is not None:
            result.update(curves(self.run_dir(log) / "log.jsonl"))
        return self.save(run, result, time.perf_counter() - start)

    def pooling_pilot(self, run: str = "pilot-pooling") -> dict:
        """Can the alignment objective pull anything at the aligned layer? Per pooling, the base model's loss
        (InfoNCE, the study's τ) and the cosines of translations and of non-translations, over random
        micro-batches of the alignment training pairs (the first token of Qwen- and Llama-family models is
        an attention sink, hundreds of times larger than the rest in middle layers: docs/method.md §1)."""
        s = self.s
        if (r := read_result(self.results / f"{run}.json", self.design(run))) is not None:
            return r
        start = time.perf_counter()
        model, tok = load_for_inference(s.model, dtype=self.dtype)
        layer = s.align_layer or model.config.num_hidden_layers // 2
        pairs = load_pairs(self.files()["align"])
        if len(pairs) < s.pooling_batches * s.align_batch_size:
            raise DataError(f"{self.files()['align']}: {len(pairs)} alignment pairs, fewer than the pooling pilot's "
                            f"{s.pooling_batches} × {s.align_batch_size}: lower pooling_batches")
        random.Random(f"{s.sample_seed}-pooling").shuffle(pairs)
        n, amp = s.align_batch_size, autocast(model.lm_head.weight.device, torch.bfloat16 if self.dtype == "bf16"
                                                  else torch.float32)
        result = {"layer": layer, "temperature": s.temperature, "batch_size": n, "pools": {}}
        for pool in POOLS:
            losses, same, other = [], [], []
            for b in range(s.pooling_batches):
                src, en = encode_pairs(tok, pairs[b * n:(b + 1) * n], AlignConfig.max_length)
                with torch.no_grad(), amp():
                    x, y = (pooled_states(model, ids, (layer,), pool, tok.pad_id)[0] for ids in (src, en))
                cos = F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T
                losses.append(contrastive_loss(x, y, s.temperature).item())
                same += cos.diag().tolist()
                other += cos[~torch.eye(len(cos), dtype=torch.bool)].tolist()
            result["pools"][pool] = {"loss": statistics.mean(losses), "chance_loss": math.log(n),
                                     "cos_translations": [statistics.mean(same), statistics.stdev(same)],
                                     "cos_others": [statistics.mean(other), statistics.stdev(other)]}
        return self.save(run, result, time.perf_counter() - start)

    def retrieval(self, run: str, adapter, log: str | None = None) -> dict:
        """Translation retrieval (paper §2: ratio margin, k = 4) at every layer, both poolings, over all
        directions between the study's 20 locales: per direction (`src-tgt`, one value per layer) and per
        language (the mean of its source and target rows)."""
        if (r := read_result(self.results / f"{run}.json", self.design(run))) is not None:
            return r
        start = time.perf_counter()
        model, tok = load_for_inference(self.s.model, adapter() if adapter else None, dtype=self.dtype)
        res = layer_retrieval(model, tok, self.parallel(), list(range(model.config.num_hidden_layers + 1)), POOLS)
        pools = {name: {"per_layer": p["per_layer"], "paper_average": p["paper_average"], "peak_layer": p["peak_layer"],
                        "per_language": {l: [(a + b) / 2 for a, b in zip(v["as_source"], v["as_target"])]
                                         for l, v in p["per_language"].items()},
                        "per_direction": {d: [round(a, 4) for a in v] for d, v in p["per_direction"].items()}}
                 for name, p in res["pools"].items()}
        result = {"layers": res["layers"], "n_sentences": res["n_sentences"], "pools": pools}
        if log is not None:  # the adapter's training curves (its alignment loss against its floor)
            result.update(curves(self.run_dir(log) / "log.jsonl"))
        return self.save(run, result, time.perf_counter() - start)

    # ----------------------------------------------------------------------------------- stages
    def stage(self, name: str) -> None:
        s = self.s
        if name == "pilot":
            self.pooling_pilot()
            self.evaluate("pilot-base", None, partition="dev")
            for lr in s.pilot_lrs:
                tag = f"pilot-lr{lr:g}"
                self.evaluate(tag, lambda lr=lr, tag=tag: self.sft(0, lr, s.pilot_updates, s.pilot_eval_every, tag),
                              partition="dev", log=tag)
        elif name in ("main", "more-seeds"):  # the first paired seed (the study's question), then zero-shot
            for seed in s.seeds[:MAIN_SEEDS] if name == "main" else s.seeds[MAIN_SEEDS:]:
                self.evaluate(f"sft-s{seed}", lambda seed=seed: self.sft(seed), log=f"sft-s{seed}")
                self.evaluate(f"joint-s{seed}", lambda seed=seed: self.joint(seed), log=f"joint-s{seed}")
                if seed == s.seeds[0]:
                    self.evaluate("base", None)
        elif name == "retrieval":  # the base model's is Fig. 1b's x axis; SFT and joint as Table 2's column
            first = s.seeds[0]
            self.retrieval("ret-base", None)
            self.retrieval(f"ret-sft-s{first}", lambda: self.sft(first))
            self.retrieval(f"ret-joint-s{first}", lambda: self.joint(first))
        elif name == "merge":
            self.evaluate("merged", self.merged, log=f"align-s{s.seeds[0]}")


def items_by_language(path: Path, examples: list, predictions: list[str]) -> dict[str, list]:
    """Per language, [id, utterance, gold annotation, prediction] for each example read from `path` (the
    compact record from which every reported F1 is recomputed with the official scorer)."""
    ids = [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]
    items: dict[str, list] = {}
    for i, ex, pred in zip(ids, examples, predictions, strict=True):
        items.setdefault(ex.lang, []).append([i, ex.user, ex.annot, pred])
    return items


def sample(path: Path, partition: str, n: int, seed: str) -> list[dict]:
    """n random records of `partition` (a fixed seed per locale), in file order."""
    rows = [r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if r["partition"] == partition]
    keep = set(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    return [r for i, r in enumerate(rows) if i in keep]


def main(argv: list[str] | None = None) -> None:
    p = study_parser(__doc__, STAGES, "slot", ROOT / "experiments" / "results" / "slot")
    p.add_argument("--massive-from", type=Path, help="MASSIVE 1.1's tarball or unpacked folder (else downloaded)")
    p.add_argument("--tatoeba-from", type=Path,
                   help="LASER's Tatoeba test set folder (tatoeba.<xxx>-eng.*; else OPUS Tatoeba is downloaded)")
    args = p.parse_args(argv)
    check_report_only(args)
    study = QUICK if args.quick else SlotStudy()
    if args.model:
        study = replace(study, model=args.model)
    if not args.report_only:
        runner = Runner(study, args.results, args.work, args.data_dir, args.massive_from, args.tatoeba_from)
        for stage in args.stages:
            print(f"[slot] {stage} ({runner.dtype})", file=sys.stderr)
            runner.stage(stage)
    command = "python experiments/slot.py" + (f" --quick --model {study.model}" if args.quick else "")
    round2 = None
    if not args.quick:  # round two's section leads the report (its runner imports this module: imported here)
        from slot_round2 import RESULTS as ROUND2, for_report, load_design
        round2 = for_report(load_design(), study, ROUND2, args.results)
    render(study, args.results, args.report, lambda path: read_result(path, study.fingerprint(path.stem)), command,
           round2)
    print(f"wrote {args.report}")


if __name__ == "__main__":
    run(main)
