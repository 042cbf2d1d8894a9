"""Round two of the slot study (docs/slot.md), pre-registered in experiments/slot_round2.md with its
machine-readable design in experiments/slot_round2.json: first make sure the alignment takes hold, then
test transfer.

    python experiments/slot_round2.py --massive-from amazon-massive-dataset-1.1.tar.gz --tatoeba-from LASER/data/tatoeba/v1
    python experiments/slot_round2.py --stages gate      # the manipulation gate only (alignment-only runs, retrieval)
    python experiments/slot_round2.py --report-only      # rebuild docs/slot.md from both rounds' result files
    python experiments/slot_round2.py --quick --model DIR  # every stage at toy size (the test suite)

Stages, in the pre-registered order:
- `gate`: alignment-only training at each of the design's τ (same pairs, pooling, layer and updates as
  round one), then retrieval of the base model and of each alignment-only adapter with every direction
  stored. The gate passes for a τ when the aligned languages' X→en retrieval at the aligned layer, under
  the training pooling, rises by at least the design's threshold over the base model.
- `main`: only when the gate passed: SFT and joint at the chosen τ, per seed (the same task batches and
  LoRA initialisation), decoded on round one's test sample plus the extra aligned test utterances drawn
  with the pre-registered seed, and retrieval of both (the joint runs' own manipulation check).
- `joint-t1.5`: round one's joint arm retrained and decoded on the same test items (last in the budget).

Every result file names the commit of the pre-registration; a run refuses to start while the
pre-registration differs from that commit (a deviation is reported in docs/slot.md, never edited into it).
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from midalign.cli import run  # noqa: E402
from midalign.data.experiments import MASSIVE_LOCALES  # noqa: E402
from midalign.errors import DataError, MidalignError  # noqa: E402
from midalign.io import atomic_write_text  # noqa: E402
from slot import QUICK, Runner, SlotStudy  # noqa: E402
from slot_report import render  # noqa: E402
from slot_round2_report import gate  # noqa: E402
from study import check_report_only, read_result, study_parser  # noqa: E402

STAGES = ("gate", "main", "joint-t1.5")
DESIGN = ROOT / "experiments" / "slot_round2.json"
PREREGISTRATION = (DESIGN, ROOT / "experiments" / "slot_round2.md")
RESULTS = ROOT / "experiments" / "results" / "slot-round2"


def load_design(path: Path = DESIGN) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def quick_design(design: dict) -> dict:
    """The design at toy size for --quick: the tiny test model (4 layers, middle 2) and the MASSIVE excerpts
    (3 test utterances per locale); its gate always passes, so that every stage runs."""
    return {**design, "updates": 2, "layer": 2, "extra_test": {**design["extra_test"], "per_lang": 1, "sha256": None},
            "gate": {**design["gate"], "min_gain_points": -100.0}, "bootstrap": 50,
            "align_batch_size": QUICK.align_batch_size}


def preregistration_commit(paths=PREREGISTRATION, root: Path = ROOT) -> str:
    """The commit that last changed the pre-registration; an error while it is not committed as it stands."""
    rel = [str(p.relative_to(root)) for p in paths]
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *rel], cwd=root, capture_output=True, text=True,
                               check=True).stdout.strip()
        commit = subprocess.run(["git", "log", "-1", "--format=%H", "--", *rel], cwd=root, capture_output=True,
                                text=True).stdout.strip()  # empty, or an error, before the first commit
    except (OSError, subprocess.CalledProcessError) as e:
        raise MidalignError(f"round two records the commit of its pre-registration, and git could not say it ({e}): "
                            "run it from a git checkout of midalign") from e
    if dirty or not commit:
        raise MidalignError(f"the pre-registration ({', '.join(rel)}) is not committed as it stands: round two runs only "
                            "under a committed pre-registration (report a deviation in docs/slot.md instead of editing it)")
    return commit


def ids_sha256(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def extra_test(locale_file: Path, used: set[str], n: int, seed: str) -> list[dict]:
    """n random `test` records of one locale whose ids are not in `used` (round one's sample), in file order."""
    rows = [r for r in map(json.loads, locale_file.read_text(encoding="utf-8").splitlines()) if r["partition"] == "test"]
    free = sorted((r["id"] for r in rows if r["id"] not in used), key=int)
    if len(free) < n:
        raise DataError(f"{locale_file}: {len(free)} unused test utterances, fewer than the {n} round two draws")
    keep = set(random.Random(seed).sample(free, n))
    return [r for r in rows if r["id"] in keep]


def stamp(design: dict, study: SlotStudy) -> str:
    """The fingerprint of round two's runs: its design and round one's, whole."""
    both = json.dumps({"round2": design, "round1": asdict(study)}, sort_keys=True)
    return hashlib.sha256(both.encode()).hexdigest()[:10]


def for_report(design: dict, study: SlotStudy, results: Path, round_one: Path) -> tuple:
    """What slot_report.render takes to write round two's section: the design, readers of round two's and
    round one's result files, and the lines of the round's deviations file (results/DEVIATIONS.md)."""
    notes = results / "DEVIATIONS.md"
    return (design, lambda run: read_result(results / f"{run}.json", stamp(design, study)),
            lambda run: read_result(round_one / f"{run}.json", study.fingerprint(run)),
            notes.read_text(encoding="utf-8").strip().splitlines() if notes.is_file() else [])


class Round2(Runner):
    """Round one's runner (its data files, training, decoding and retrieval) under round two's design."""

    def __init__(self, design: dict, commit: str, study: SlotStudy, *args):
        super().__init__(study, *args)
        self.d, self.commit, self.stamp = design, commit, stamp(design, study)

    def design(self, run: str) -> str:
        return self.stamp

    def save(self, run: str, result: dict, seconds: float) -> dict:
        return super().save(run, {**result, "preregistration": self.commit}, seconds)

    def files(self) -> dict:
        """Round one's files, and `test2`: round one's test sample plus the pre-registered extra draw of
        aligned test utterances (its ids checked against the pre-registered sha256)."""
        f = super().files()
        if "test2" in f:
            return f
        x = self.d["extra_test"]
        rows = [json.loads(line) for line in f["test"].read_text(encoding="utf-8").splitlines()]
        extra = {}
        for lang in self.s.aligned:
            used = {r["id"] for r in rows if r["locale"] == MASSIVE_LOCALES[lang]}
            extra[lang] = extra_test(f["locales"][lang], used, x["per_lang"], x["seed"].format(lang=lang))
            want = (x["sha256"] or {}).get(lang)
            if want and ids_sha256([r["id"] for r in extra[lang]]) != want:
                raise DataError(f"{f['locales'][lang]}: the extra test draw does not reproduce the pre-registered ids "
                                f"(sha256 {want[:12]}…): another MASSIVE file than the publisher's?")
        f["test2"] = self.work / "data" / "test2.jsonl"
        atomic_write_text(f["test2"], "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                              for r in rows + [r for lang in self.s.aligned for r in extra[lang]]))
        return f

    def aligning(self, temperature: float) -> dict:
        return {**self.alignment(), "temperature": temperature, "pool": self.d["pool"], "align_layer": self.d["layer"],
                "align_batch_size": self.d["align_batch_size"]}

    def align_only_at(self, temperature: float, seed: int) -> Path:
        s = self.s
        return self.adapter(f"align-t{temperature:g}-s{seed}", seed,
                            dict(align_only=True, grad_accum=s.grad_accum, **self.aligning(temperature)),
                            self.d["updates"], s.eval_every, s.lr, checkpoint=self.d["checkpoint"])

    def sft_last(self, seed: int) -> Path:
        s = self.s
        return self.adapter(f"sft-s{seed}", seed, dict(no_align=True, grad_accum=s.grad_accum), self.d["updates"],
                            s.eval_every, s.lr, checkpoint=self.d["checkpoint"])

    def joint_at(self, temperature: float, seed: int) -> Path:
        s = self.s
        return self.adapter(f"joint-t{temperature:g}-s{seed}", seed,
                            dict(grad_accum=2 * s.grad_accum, **self.aligning(temperature)), self.d["updates"],
                            s.eval_every, s.lr, checkpoint=self.d["checkpoint"])

    def gate(self) -> dict | None:
        """The gate from the result files: per τ, aligned X→en retrieval of base and alignment-only, and whether it
        passed; None until every gate run has a result."""
        return gate(self.d, lambda run: read_result(self.results / f"{run}.json", self.stamp))

    def stage(self, name: str) -> None:
        d = self.d
        if name == "gate":
            self.retrieval("ret-base", None)
            for t in d["gate_temperatures"]:
                self.retrieval(f"ret-align-t{t:g}-s0", lambda t=t: self.align_only_at(t, 0), log=f"align-t{t:g}-s0")
            return
        g = self.gate()
        if g is None or g["chosen"] is None:
            raise MidalignError("the gate has not passed (run `--stages gate` first; if no τ passed, the pre-registration "
                                "stops the round before any F1 is read)")
        t = g["chosen"] if name == "main" else 1.5
        for seed in d["seeds"]:
            if name == "main":
                self.evaluate(f"sft-s{seed}", lambda seed=seed: self.sft_last(seed), log=f"sft-s{seed}", data="test2")
                self.retrieval(f"ret-sft-s{seed}", lambda seed=seed: self.sft_last(seed))
            run_name = f"joint-t{t:g}-s{seed}"
            self.evaluate(run_name, lambda seed=seed: self.joint_at(t, seed), log=run_name, data="test2")
            self.retrieval(f"ret-{run_name}", lambda seed=seed: self.joint_at(t, seed))


def main(argv: list[str] | None = None) -> None:
    p = study_parser(__doc__, STAGES, "slot", RESULTS)
    p.add_argument("--round-one", type=Path, default=ROOT / "experiments" / "results" / "slot",
                   help="round one's result files (its section of the report)")
    p.add_argument("--massive-from", type=Path, help="MASSIVE 1.1's tarball or unpacked folder (else downloaded)")
    p.add_argument("--tatoeba-from", type=Path, help="LASER's Tatoeba test set folder (else OPUS Tatoeba is downloaded)")
    args = p.parse_args(argv)
    check_report_only(args)
    design = load_design()
    study = QUICK if args.quick else SlotStudy()
    if args.quick:
        design = quick_design(design)
    if args.model:
        study = replace(study, model=args.model)
    commit = "quick" if args.quick else preregistration_commit()
    if not args.report_only:
        runner = Round2(design, commit, study, args.results, args.work, args.data_dir, args.massive_from,
                        args.tatoeba_from)
        for stage in args.stages:
            print(f"[slot round 2] {stage} ({runner.dtype}; pre-registration {commit[:10]})", file=sys.stderr)
            runner.stage(stage)
    command = "python experiments/slot_round2.py" + (f" --quick --model {study.model}" if args.quick else "")
    render(study, args.round_one, args.report, lambda path: read_result(path, study.fingerprint(path.stem)), command,
           round2=for_report(design, study, args.results, args.round_one))
    print(f"wrote {args.report}")


if __name__ == "__main__":
    run(main)
