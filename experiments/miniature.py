"""The paper in miniature: its main claims re-tested on real data, on CPU, with error bars.

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
  unseen      §5.1: transfer gain (joint with alignment on a named UDHR language subset − SFT) for
              languages in that subset vs languages absent from it
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from midalign.adapters import read_adapter  # noqa: E402
from midalign.cli import run  # noqa: E402
from midalign.data import sources  # noqa: E402
from midalign.data.tasks import TASKS  # noqa: E402
from midalign.data.udhr import parallel_sentences  # noqa: E402
from midalign.evaluation import first_per_unit, load_examples, load_for_inference, predict, score_units  # noqa: E402
from midalign.io import atomic_write_text  # noqa: E402
from midalign.merging import save_search, search_weight  # noqa: E402
from midalign.registry import DEFAULT_MODEL  # noqa: E402
from midalign.retrieval import layer_retrieval  # noqa: E402
from midalign.training import TrainSettings  # noqa: E402
from miniature_report import placement_layers, render  # noqa: E402
from study import check_report_only, curves, fit_apart, read_result, study_parser  # noqa: E402

STAGES = ("mt", "retrieval", "placement", "merge", "correlation", "unseen")


@dataclass(frozen=True)
class Study:
    """The study's design, sized to about 2 hours on 2 CPU cores; QUICK is the same at toy size."""
    model: str = DEFAULT_MODEL
    train_langs: tuple = ("cs", "de", "is", "ru", "zh")  # ALMA X→en task languages
    supervised: tuple = ("de", "ru", "zh")  # WMT23 test directions X→en
    transfer: tuple = ("he", "ja", "uk")
    pairs_per_lang: int = 200  # ALMA training pairs per language (the first ones)
    dev_per_lang: int = 4  # ALMA dev pairs per language (task dev loss; merge weight choice)
    test_per_direction: int = 16  # WMT23 segments per direction (the first ones), the same for every model
    updates: int = 16
    batch_size: int = 2
    grad_accum: int = 2  # SFT: 2 task micro-batches per update; joint: 1 task + 1 alignment (the paper's rule)
    align_batch_size: int = 16
    eval_every: int = 8
    seeds: tuple = (0, 1, 2)
    temperature: float = 0.1
    pool: str = "mean-skip-first"
    max_new_tokens: int = 96
    # UDHR languages: retrieval (with English), the subset aligned in the "unseen" run, the others
    retrieval_langs: tuple = ("en", "cs", "de", "is", "ru", "zh", "ja", "uk", "cy", "sw", "tl", "jv")
    unseen_aligned: tuple = ("af", "fi", "hu", "id", "ko", "tr", "vi", "it")
    unseen_other: tuple = ("cy", "sw", "tl", "jv", "ja", "uk", "hi", "pl")
    udhr_per_lang: int = 2  # shortest held-out UDHR paragraphs per language for the X→en evaluations
    bootstrap: int = 1000
    batch_gen: int = 16

    def fingerprint(self) -> str:
        """Names the design: result files and trained adapters are only reused under the same one."""
        design = {k: v for k, v in asdict(self).items() if k != "bootstrap"}  # bootstrap only shapes the report
        return hashlib.sha256(json.dumps(design, sort_keys=True).encode()).hexdigest()[:10]


QUICK = Study(pairs_per_lang=6, dev_per_lang=2, test_per_direction=2, updates=2, batch_size=2, align_batch_size=4,
              eval_every=2, seeds=(0, 1), max_new_tokens=4, retrieval_langs=("en", "de", "ru", "cy"),
              unseen_aligned=("fi", "hu"), unseen_other=("cy", "sw"), udhr_per_lang=1, bootstrap=50, batch_gen=8)


class Runner:
    """Runs (or skips) the study's runs; each run's result is one JSON file in `results`."""

    def __init__(self, study: Study, results: Path, work: Path, data_dir: Path | None, alma_dir: Path | None,
                 wmt23_dir: Path | None):
        self.s, self.results, self.work = study, results, work / study.fingerprint()
        self.data_dir, self.alma_dir, self.wmt23_dir = data_dir, alma_dir, wmt23_dir
        self._files: dict | None = None
        self._clock: dict[str, float] = {}

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
        """The run's result if it exists; else starts the run's clock (the result records its compute)."""
        result = read_result(self.results / f"{run}.json", self.s.fingerprint())
        self._clock[run] = time.perf_counter()
        return result

    def save(self, run: str, result: dict) -> dict:
        """Writes the run's result with its design and the seconds since `done(run)` (trainings it caused
        included; a run made inside another one, as merge-search inside mt-merged, is not timed twice)."""
        seconds = round(time.perf_counter() - self._clock.pop(run), 1) if run in self._clock else None
        result = {**result, "design": self.s.fingerprint(), "seconds": seconds,
                  "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"}
        atomic_write_text(self.results / f"{run}.json", json.dumps(result, ensure_ascii=False, indent=1))
        return result

    def adapter(self, name: str, extra: dict, seed: int = 0) -> Path:
        """Train `name` (the work folder's adapter) unless it finished; an interrupted training resumes
        exactly where it stopped. Returns its best adapter."""
        s, out = self.s, self.work / name
        if not (out / "last" / "adapter_config.json").is_file():
            f, resume = self.files(), (out / "state").is_dir()
            fit_apart(TrainSettings(model=s.model, task="mt", mt_direction="to-en", train_data=f["train"], dev_data=f["dev"],
                              batch_size=s.batch_size, align_batch_size=s.align_batch_size, grad_accum=s.grad_accum,
                              max_steps=s.updates, eval_every=s.eval_every, patience=1000, pool=s.pool,
                              temperature=s.temperature, seed=seed, out=out, resume=resume,
                              overwrite=out.exists() and not resume, **extra))
        return out / "best"

    def sft(self, seed: int) -> Path:
        return self.adapter(f"sft-s{seed}", dict(no_align=True), seed)

    def joint(self, seed: int) -> Path:
        return self.adapter(f"joint-s{seed}", dict(align_data=[self.files()["pairs"]]), seed)

    def align_only(self, layer: int) -> Path:
        return self.adapter(f"align-l{layer}", dict(align_only=True, align_data=[self.files()["pairs"]],
                                                    align_layer=layer))

    def decode(self, examples: list, adapter: Path | None) -> dict:
        """chrF/BLEU per direction of the model (+ adapter) on `examples`, with every hypothesis and reference
        (for the bootstrap)."""
        model, tok = load_for_inference(self.s.model, adapter)
        predictions, generation = predict(model, tok, examples, self.s.max_new_tokens, self.s.batch_gen)
        per_unit = score_units(TASKS["mt"], examples, predictions)
        return {"per_unit": {u: {"chrf": v["chrf"], "bleu": v["bleu"]} for u, v in per_unit.items()},
                "segments": {u: [[p, ex.answer] for ex, p in zip(examples, predictions) if ex.unit == u]
                             for u in per_unit},
                "generation": generation}

    def mt_eval(self, run: str, adapter: Callable[[], Path] | None, log: str | None = None) -> dict:
        """WMT23 X→en per direction. `adapter` is called (trained, if need be) only when the result is missing."""
        if (r := self.done(run)) is not None:
            return r
        adapter = adapter() if adapter else None
        result = self.decode(load_examples(TASKS["mt"], self.files()["test"]), adapter)
        return self.save(run, {**result, **(curves(self.work / log / "log.jsonl") if log else {})})

    def udhr_eval(self, run: str, adapter: Callable[[], Path] | None) -> dict:
        """chrF per language, UDHR held-out paragraphs X→en (the languages of the correlation and unseen parts)."""
        if (r := self.done(run)) is not None:
            return r
        s, adapter = self.s, adapter() if adapter else None
        langs = list(dict.fromkeys([*s.retrieval_langs[1:], *s.unseen_aligned, *s.unseen_other]))
        examples = first_per_unit(TASKS["mt"].offline("test", langs, None), s.udhr_per_lang)
        return self.save(run, self.decode(examples, adapter))

    def retrieval(self, run: str, adapter: Callable[[], Path] | None) -> dict:
        """Layer-wise UDHR retrieval (test articles, all layers, ratio margin k = 4)."""
        if (r := self.done(run)) is not None:
            return r
        model, tok = load_for_inference(self.s.model, adapter() if adapter else None)
        sentences = parallel_sentences(list(self.s.retrieval_langs), "test")
        res = layer_retrieval(model, tok, sentences, list(range(model.config.num_hidden_layers + 1)), [self.s.pool])
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
            self.udhr_eval("udhr-joint-unseen",
                           lambda: self.adapter("joint-unseen", dict(align_langs=list(s.unseen_aligned))))

    def merged(self, mid: int) -> Path:
        """The SFT adapter merged with the middle-layer alignment-only adapter, task weight chosen on ALMA dev."""
        s, out = self.s, self.work / "merged"
        if not (out / "search.json").is_file():
            adapters = [read_adapter(self.sft(s.seeds[0])), read_adapter(self.align_only(mid))]
            model, tok = load_for_inference(s.model)
            examples = load_examples(TASKS["mt"], self.files()["dev"], partition="dev")
            save_search(out, *search_weight(model, tok, adapters, (0.5, 0.7, 0.9), "linear", TASKS["mt"], examples,
                                            s.max_new_tokens, s.batch_gen))
        self.save("merge-search", json.loads((out / "search.json").read_text()))
        return out


def main(argv: list[str] | None = None) -> None:
    p = study_parser(__doc__, STAGES, "miniature", ROOT / "experiments" / "results")
    p.add_argument("--alma-dir", type=Path, help="a local copy of ALMA's human_written_data/ (else downloaded)")
    p.add_argument("--wmt23-dir", type=Path, help="a local copy of wmt23-news-systems (txt/ or xml/; else downloaded)")
    args = p.parse_args(argv)
    check_report_only(args)
    study = QUICK if args.quick else Study()
    if args.model:
        study = replace(study, model=args.model)
    if not args.report_only:
        runner = Runner(study, args.results, args.work, args.data_dir, args.alma_dir, args.wmt23_dir)
        for stage in args.stages:
            print(f"[miniature] {stage}", file=sys.stderr)
            runner.stage(stage)
    command = "python experiments/miniature.py" + (f" --quick --model {study.model}" if args.quick else "")
    render(study, args.results, args.report, lambda path: read_result(path, study.fingerprint()), command)
    print(f"wrote {args.report}")


if __name__ == "__main__":
    run(main)
