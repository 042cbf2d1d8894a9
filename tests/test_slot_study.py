"""The slot study end to end at toy size (--quick) on the tiny chat model and the real MASSIVE and LASER
Tatoeba excerpts, and its report recomputed from the predictions stored in the result files."""

from __future__ import annotations

import json
import statistics
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "publishers"
sys.path.insert(0, str(ROOT / "experiments"))


def run_quick(model: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "slot.py"), "--quick", "--model", str(model),
                           "--results", str(tmp / "results"), "--work", str(tmp / "work"), "--report",
                           str(tmp / "slot.md"), "--data-dir", str(tmp / "data"), "--massive-from",
                           str(FIXTURES / "massive"), "--tatoeba-from", str(FIXTURES / "tatoeba-laser"), *extra],
                          capture_output=True, text=True, cwd=ROOT)


def test_quick_slot_study_stores_predictions_and_the_report_reads_them(tiny_chat_checkpoint, tmp_path):
    res = run_quick(tiny_chat_checkpoint, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    results = tmp_path / "results"
    assert {p.stem for p in results.glob("*.json")} == {"pilot-pooling", "pilot-base", "pilot-lr0.0005", "base",
                                                        "sft-s0", "sft-s1",
                                                        "joint-s0", "joint-s1", "ret-base", "ret-sft-s0",
                                                        "ret-joint-s0", "merge-search", "merged"}
    sft = json.loads((results / "sft-s0.json").read_text())
    # the random test sample: (supervised, aligned, other) = (1, 2, 1) utterances per locale, from `test`
    assert {l: len(v) for l, v in sft["items"].items()} == {"ar": 1, "en": 1, "es": 1, "ru": 1, "zh": 1, "cy": 2,
                                                            "ja": 2, "jv": 2, "sw": 2, "tl": 2, "de": 1, "fr": 1}
    real = {r["id"]: r for r in map(json.loads, (FIXTURES / "massive/1.1/data/cy-GB.jsonl").read_text().splitlines())}
    for i, utt, annot, _ in sft["items"]["cy"]:  # id, utterance and gold as in the publisher's file
        assert real[i]["partition"] == "test" and (real[i]["utt"], real[i]["annot_utt"]) == (utt, annot)
    assert sft["dtype"] in ("bf16", "fp32") and sft["train_curve"] and sft["dev_curve"]
    text = (tmp_path / "slot.md").read_text()
    # a random tiny model learns nothing: joint − SFT (3 groups) and merged − SFT (2 with a paper number)
    assert "Not run yet" not in text and text.count("| untestable: the two arms agree on every resample |") == 5
    assert (tmp_path / "slot_correlation.png").is_file() and "![correlation](slot_correlation.png)" in text

    # retrieval: the same ids in every locale, none tested or selected on, from the design's partition
    base = json.loads((results / "ret-base.json").read_text())
    assert base["n_sentences"] == 6 and set(base["pools"]) == {"mean", "mean-skip-first"}
    assert len(base["pools"]["mean"]["per_language"]) == 12 and len(base["layers"]) == len(base["pools"]["mean"]["per_layer"])
    # the pooling pilot: both poolings on micro-batches of the alignment pairs (QUICK: 4 pairs; chance = ln 4)
    pooling = json.loads((results / "pilot-pooling.json").read_text())
    assert set(pooling["pools"]) == {"mean", "mean-skip-first"} and pooling["batch_size"] == 4
    for v in pooling["pools"].values():
        assert v["chance_loss"] == pytest.approx(math.log(4)) and 0 < v["loss"] < 2 * math.log(4)
        assert all(-1 <= c[0] <= 1 for c in (v["cos_translations"], v["cos_others"]))
    assert "Pooling, measured before the joint runs" in text
    search = json.loads((results / "merge-search.json").read_text())
    assert set(search["weights"]) == {"0.5", "0.9"} and search["best_weight"] in (0.5, 0.9)
    from slot_report import f1, item_counts
    for scores in search["weights"].values():  # every dev prediction stored; the score re-computed from them
        assert {l: len(v) for l, v in scores["items"].items()} == {l: 1 for l in ("ar", "en", "es", "ru", "zh")}
        recomputed = sum(f1(c) for c in item_counts(scores).values()) / 5
        assert recomputed == pytest.approx(scores["score"])
    assert list((tmp_path / "work").glob("*/align-s0/best/adapter_config.json"))  # trained alone, then merged

    # a prediction edited to the gold answer changes the report: it is recomputed from the stored items
    i, utt, annot, _ = sft["items"]["cy"][0]
    from midalign.data.tasks import slots_from_annotation
    sft["items"]["cy"][0][3] = slots_from_annotation(annot)
    (results / "sft-s0.json").write_text(json.dumps(sft))
    res = run_quick(tiny_chat_checkpoint, tmp_path, "--report-only")
    assert res.returncode == 0, res.stderr[-2000:]
    row = next(l for l in (tmp_path / "slot.md").read_text().splitlines() if l.startswith("| SFT ("))
    assert row != next(l for l in text.splitlines() if l.startswith("| SFT ("))

    # a second run trains and evaluates nothing; a file from another design is refused by name
    res = run_quick(tiny_chat_checkpoint, tmp_path)
    assert res.returncode == 0 and "[train]" not in res.stderr
    sft["design"] = "0000000000"
    (results / "sft-s0.json").write_text(json.dumps(sft))
    res = run_quick(tiny_chat_checkpoint, tmp_path)
    assert res.returncode == 1 and "sft-s0.json was made under another design" in res.stderr


def test_round_one_s_verdict_describes_the_interval_as_corrected():
    from slot_report import p_text, verdict

    b = lambda low, high, delta, seeds=2: {"ci95": [low, high], "delta": delta, "detectable": 2.2, "se": 0.8,
                                           "seeds": seeds}
    assert verdict(b(+1.0, +6.0, 3.0), 4.9) == "detected"
    assert verdict(b(+1.0, +3.0, 2.0), 4.9) == "detected, smaller than the paper's +4.9"
    assert verdict(b(-3.0, -1.0, -2.0), 4.9) == "negative: the interval lies below 0"
    # round one's aligned row (issue wording): 0 inside, the paper's 7B +4.9 above, its relative +1.7 inside
    assert verdict(b(-0.5, +2.6, 1.0), 4.9, 1.7) == (
        "not detected; an absolute gain as large as the paper's 7B result (+4.9) is unlikely at this scale, "
        "a gain of the paper's relative size (+1.7) is not excluded")
    assert verdict(b(-0.5, +1.5, 0.5), 4.9, 1.7).endswith("unlikely at this scale")  # relative size above: excluded
    assert verdict(b(-0.5, +4.9, 2.0), 4.9, 1.7) == ("not detected, a gain of the paper's relative size (+1.7) is "
                                                       "not excluded")  # the paper's effect on the boundary
    assert verdict(b(-4.0, +3.4, -0.4), 0.7) == "not detected; negative point estimate"
    assert verdict({"ci95": [0, 0], "delta": 0, "detectable": 0, "se": 0, "seeds": 2}, 4.9).startswith("untestable")
    # the merge of Table 6, one seed: the interval [−6.8, +0.2] holds test-item variance only, and says so
    assert verdict(b(-6.8, +0.2, -3.2, seeds=1), 1.1) == ("not detected; negative point estimate (one seed: "
                                                          "training variance not in the interval)")
    assert p_text(0.0) == "p < 0.001" and p_text(0.0031) == "p = 0.003"


def test_t_interval_over_seeds_is_scipy_s():
    from scipy import stats
    from slot_report import t_interval

    d = [1.2, 0.9]
    low, high = t_interval(d)
    expected = stats.t.interval(0.95, 1, loc=sum(d) / 2, scale=stats.sem(d))
    assert (low, high) == pytest.approx(expected) and t_interval([1.0]) is None


def test_item_counts_sum_to_the_official_f1_and_the_bootstrap_is_paired():
    from slot_report import bootstrap_delta, f1, group_f1

    from midalign.metrics import slot_counts, slot_f1

    rows = [json.loads(l) for l in (FIXTURES / "massive/1.1/data/de-DE.jsonl").read_text().splitlines()]
    from midalign.data.tasks import slots_from_annotation
    preds = [slots_from_annotation(r["annot_utt"]) if i % 3 == 0 else "None" for i, r in enumerate(rows)]
    counts = [slot_counts(r["utt"], r["annot_utt"], p, "de") for r, p in zip(rows, preds)]
    assert f1(counts) == pytest.approx(100 * slot_f1([r["utt"] for r in rows], [r["annot_utt"] for r in rows], preds,
                                                     "de")["f1"])
    assert 0 < f1(counts) < 100
    arm = {0: {"de": counts}, 1: {"de": counts}}
    same = bootstrap_delta(arm, arm, ["de"], 200)
    assert same["delta"] == 0 and same["ci95"] == [0, 0]  # identical arms: every paired resample is 0
    perfect = [slot_counts(r["utt"], r["annot_utt"], slots_from_annotation(r["annot_utt"]), "de") for r in rows]
    better = bootstrap_delta({0: {"de": perfect}, 1: {"de": perfect}}, arm, ["de"], 200)
    assert better["delta"] == pytest.approx(100 - group_f1({"de": counts}, ["de"])) and better["ci95"][0] > 0


def test_a_run_is_fingerprinted_by_the_fields_it_depends_on():
    from dataclasses import replace

    from slot import SlotStudy

    s = SlotStudy()
    other_pooling = replace(s, pool="mean")
    # SFT and zero-shot never align: the alignment settings leave them (and their result files) valid
    assert s.fingerprint("sft-s0") == other_pooling.fingerprint("sft-s0") == s.fingerprint("base")
    assert s.fingerprint("joint-s0") != other_pooling.fingerprint("joint-s0")
    assert s.fingerprint("merged") != other_pooling.fingerprint("merged")
    # a run's seed is in its name; the seeds the design lists do not change any run
    assert replace(s, seeds=(0, 1)).fingerprint("joint-s0") == s.fingerprint("joint-s0")
    assert replace(s, lr=1e-3).fingerprint("sft-s0") != s.fingerprint("sft-s0")
    assert replace(s, merge_weights=(0.9,)).fingerprint("merge-search") != s.fingerprint("merge-search")
    assert replace(s, merge_weights=(0.9,)).fingerprint("joint-s0") == s.fingerprint("joint-s0")
    assert replace(s, retrieval_per_lang=50).fingerprint("ret-base") != s.fingerprint("ret-base")
    assert replace(s, pilot_updates=60).fingerprint("pilot-base") != s.fingerprint("pilot-base")


def test_a_training_run_apart_reports_its_failure_in_the_parent(tiny_chat_checkpoint, tmp_path, capfd):
    from study import fit_apart

    from midalign.errors import MidalignError
    from midalign.training import TrainSettings

    settings = TrainSettings(model=str(tiny_chat_checkpoint), task="slot", no_align=True, align_layer=99, max_steps=1,
                             train_data=[FIXTURES / "massive/1.1/data/en-US.jsonl"], out=tmp_path / "run")
    with pytest.raises(MidalignError, match="exit code 1"):
        fit_apart(settings)
    err = capfd.readouterr().err  # the child ended as a script does: its error in one line, no traceback
    assert "error: --align-layer 99 is out of range" in err and "Traceback" not in err


def test_retrieval_sample_too_large_for_the_parallel_ids_is_an_error_not_a_smaller_sample(tmp_path):
    from dataclasses import replace

    from slot import QUICK, Runner

    from midalign.errors import DataError

    runner = Runner(QUICK, tmp_path / "results", tmp_path / "work", tmp_path / "data", FIXTURES / "massive",
                    FIXTURES / "tatoeba-laser")
    sentences = runner.parallel()  # the excerpts' 8 `train` ids shared by all 12 locales: 6 drawn
    assert len(sentences) == 12 and {len(v) for v in sentences.values()} == {6}
    ids = {json.loads(l)["utt"]: json.loads(l)["id"] for l in (FIXTURES / "massive/1.1/data/de-DE.jsonl").read_text().splitlines()}
    en = {json.loads(l)["id"]: json.loads(l)["utt"] for l in (FIXTURES / "massive/1.1/data/en-US.jsonl").read_text().splitlines()}
    assert [en[ids[u]] for u in sentences["de"]] == sentences["en"]  # row i is the same utterance in every locale
    runner.s = replace(QUICK, retrieval_per_lang=9)
    with pytest.raises(DataError, match="needs 9 MASSIVE `train` ids .* there are 8"):
        runner.parallel()


def test_well_formed_answers_are_none_or_typed_values_only():
    from slot_report import well_formed

    # the answer format of the slot prompt (midalign.data.tasks): `type: value; type: value` or `None`
    assert well_formed("None") and well_formed(" none\n") and well_formed("time: five am")
    assert well_formed("date: today; time: five am")
    # the base model's zero-shot answers on MASSIVE test (experiments/results/slot/base.json)
    assert not well_formed("song name") and not well_formed('["song name"]') and not well_formed("entity, song name")
    assert not well_formed("date: today; junk") and not well_formed("")



def test_align_loss_span_means_the_first_and_last_updates_of_the_stored_curve():
    from slot_report import align_loss_span

    curve = [{"step": i + 1, "align_loss": 3.0 if i < 2 else 1.0 if i >= 4 else 2.0} for i in range(6)]
    assert align_loss_span({"train_curve": curve}, k=2) == "3.000 → 1.000"
    assert align_loss_span({"train_curve": curve[:3]}, k=2) == "not recorded"  # too short to have both ends
    assert align_loss_span({"train_curve": [{"step": 1, "task_loss": 1.0}] * 4}, k=2) == "not recorded"  # SFT
    assert align_loss_span(None) == "not recorded"


def test_training_seconds_add_up_a_clock_that_restarted_at_a_resume():
    from study import training_seconds

    # as sft-s1 of the slot study: stopped after update 101, resumed from update 100's state, clock from 0
    assert training_seconds([{"elapsed_s": 10.0}, {"elapsed_s": 20.0}, {"elapsed_s": 5.0}, {"elapsed_s": 8.0}]) == 28.0
    assert training_seconds([{"elapsed_s": 1.0}, {"elapsed_s": 3.0}]) == 3.0  # one clock: its last value
    assert training_seconds([]) == 0.0 and training_seconds([{"step": 1}]) == 0.0


def test_round_two_quick_runs_the_gate_then_the_main_arms_and_stamps_the_preregistration(tiny_chat_checkpoint,
                                                                                          tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "experiments" / "slot_round2.py"), "--quick", "--model",
                          str(tiny_chat_checkpoint), "--stages", "gate", "main", "--results", str(tmp_path / "r2"),
                          "--round-one", str(tmp_path / "r1"), "--work", str(tmp_path / "work"), "--report",
                          str(tmp_path / "slot.md"), "--data-dir", str(tmp_path / "data"), "--massive-from",
                          str(FIXTURES / "massive"), "--tatoeba-from", str(FIXTURES / "tatoeba-laser")],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    results = tmp_path / "r2"
    assert {p.stem for p in results.glob("*.json")} == {
        "ret-base", "ret-align-t0.1-s0", "ret-align-t1.5-s0", "sft-s0", "sft-s1", "joint-t0.1-s0", "joint-t0.1-s1",
        "ret-sft-s0", "ret-sft-s1", "ret-joint-t0.1-s0", "ret-joint-t0.1-s1"}
    for path in results.glob("*.json"):
        assert json.loads(path.read_text())["preregistration"] == "quick"
    gate = json.loads((results / "ret-align-t0.1-s0.json").read_text())
    # every direction stored, per layer; the adapter's training curve beside it
    assert len(gate["pools"]["mean-skip-first"]["per_direction"]) == 12 * 11 and gate["train_curve"]
    joint = json.loads((results / "joint-t0.1-s0.json").read_text())
    # round one's test sample plus the extra draw: aligned 2 + 1, the others as round one
    assert {l: len(v) for l, v in joint["items"].items()} == {"ar": 1, "en": 1, "es": 1, "ru": 1, "zh": 1, "cy": 3,
                                                              "ja": 3, "jv": 3, "sw": 3, "tl": 3, "de": 1, "fr": 1}
    assert all("task_grad_norm" in r and "align_grad_norm" in r for r in joint["train_curve"])
    text = (tmp_path / "slot.md").read_text()
    assert text.index("### Manipulation gate") < text.index("# Round one")
    assert "| alignment-only | 0.1 |" in text and "**Gate: passed at τ 0.1, 1.5.**" in text
    # the endpoint: the joint runs' own manipulation check first, then the pre-registered analysis
    assert text.index("Joint check: mean gain") < text.index("**Primary endpoint**") < text.index("Secondary")
    # a random tiny model answers alike in both arms: no standard error, so no power is claimed
    assert "(0.00 F1; normal approximation): untestable: the two arms agree on every resample." in text
    # the cost of every run of the round, and the pre-registered runs not run (the τ 1.5 arm: its own stage)
    assert text.index("Secondary") < text.index("### Cost") < text.index("# Round one")
    assert ("Pre-registered runs without a result file (§7: what the budget does not reach is reported as not run): "
            "joint-t1.5-s0, ret-joint-t1.5-s0, joint-t1.5-s1, ret-joint-t1.5-s1.") in text
    # with seed 1 not in yet, the endpoint is interim: no verdict from a part of the pre-registered seeds
    import slot_round2_report
    from slot_round2 import load_design, quick_design

    design = quick_design(load_design())
    read = lambda name: json.loads((results / f"{name}.json").read_text()) if (results / f"{name}.json").is_file() \
        else None
    interim = "\n".join(slot_round2_report.endpoint_section(design, lambda n: None if n.endswith("-s1") else read(n),
                                                            0.1))
    assert "**interim, seed 0 of 0, 1: no verdict until every pre-registered seed is in**" in interim
    assert not any(v in interim for v in ("improves transfer", "lowers transfer", "inconclusive", "is excluded"))


def test_cost_table_counts_training_once_for_a_file_that_trained_before_retrieving():
    from slot_report import cost_table

    machine = "x86_64, cpu"
    curve = [{"step": 1, "elapsed_s": 120.0}, {"step": 2, "elapsed_s": 240.0}]
    retrieval = {"train_curve": curve, "seconds": 600.0, "dtype": "bf16", "machine": machine}  # 240 s trained
    decoded = {"train_curve": curve, "seconds": 999.0, "generation": {"seconds": 240.0}, "dtype": "fp32",
               "machine": machine, "items": {"cy": [None] * 30, "ja": [None] * 30}}
    lines = cost_table([("ret-align", retrieval), ("sft", decoded)])
    assert lines[2] == "| ret-align | bf16 | 4 | 6 | — | x86_64, cpu |"  # 600 s − 240 s of training
    assert lines[3] == "| sft | fp32 | 4 | 4 | 4.00 | x86_64, cpu |"  # 240 s over 60 answers
    assert lines[-1] == "Total: 0.3 h of CPU wall time."  # (240 + 360 + 240 + 240) s


def test_round_two_gate_rule_and_extra_test_draw(tmp_path):
    from slot_round2 import extra_test
    from slot_round2_report import gate

    design = json.loads((ROOT / "experiments" / "slot_round2.json").read_text())
    ret = lambda xen: {"layers": [0, 12], "pools": {"mean-skip-first": {"per_direction": {
        f"{l}-en": [0.0, xen] for l in design["gate"]["langs"]}}}}
    get = lambda levels: (lambda run: {"ret-base": ret(0.10), "ret-align-t0.1-s0": ret(levels[0]),
                                       "ret-align-t1.5-s0": ret(levels[1])}.get(run))
    assert gate(design, get((0.15, 0.20)))["chosen"] == 0.1  # +5.0 points passes (≥), τ 0.1 preferred
    assert gate(design, get((0.149, 0.20)))["chosen"] == 1.5  # only τ 1.5 passed
    assert gate(design, get((0.149, 0.12)))["chosen"] is None  # alignment not achieved
    assert gate(design, lambda run: None) is None  # not run yet

    rows = [{"id": str(i), "partition": "test" if i % 4 else "dev"} for i in range(40)]
    path = tmp_path / "xx.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    used = {"1", "2", "3"}
    drawn = extra_test(path, used, 5, "round2-test-xx")
    assert len(drawn) == 5 and not {r["id"] for r in drawn} & used and all(r["partition"] == "test" for r in drawn)
    assert [int(r["id"]) for r in drawn] == sorted(int(r["id"]) for r in drawn)  # file order
    assert drawn == extra_test(path, used, 5, "round2-test-xx")  # reproducible from the seed
    with pytest.raises(Exception, match="fewer than the 40"):
        extra_test(path, used, 40, "round2-test-xx")


def test_round_two_runs_only_under_a_committed_preregistration(tmp_path):
    from slot_round2 import preregistration_commit

    from midalign.errors import MidalignError

    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    git("init", "-q")
    files = [tmp_path / "design.json", tmp_path / "plan.md"]
    for f in files:
        f.write_text("fixed\n")
    with pytest.raises(MidalignError, match="not committed as it stands"):
        preregistration_commit(files, tmp_path)
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pre-registration")
    commit = git("rev-parse", "HEAD").strip()
    assert preregistration_commit(files, tmp_path) == commit
    files[0].write_text("changed after a result\n")
    with pytest.raises(MidalignError, match="not committed as it stands"):
        preregistration_commit(files, tmp_path)


def test_round_two_resampled_f1_and_crossed_bootstrap_against_brute_force():
    import numpy as np
    from slot_report import f1
    from slot_round2_report import crossed_bootstrap, resampled_f1

    rng = np.random.default_rng(0)
    counts = rng.integers(0, 3, size=(7, 3)).astype(float)
    counts[:, 1] = np.maximum(counts[:, 1], counts[:, 0])  # correct ≤ predicted, ≤ gold
    counts[:, 2] = np.maximum(counts[:, 2], counts[:, 0])
    draws = rng.integers(0, 7, size=(5, 7))
    weights = np.zeros((5, 7))
    np.add.at(weights, (np.arange(5)[:, None], draws), 1.0)
    expected = [f1([tuple(counts[i]) for i in row]) for row in draws]  # each resample's items written out
    assert resampled_f1(counts, weights) == pytest.approx(expected)

    items = lambda seed: {l: [tuple(c) for c in rng.integers(0, 3, size=(20, 3))] for l in ("cy", "sw")}
    sft = {0: items(0), 1: items(1)}
    same = crossed_bootstrap(sft, sft, ("cy", "sw"), 200, 0)  # identical arms: nothing to find
    assert same["delta"] == 0 and same["ci95"] == [0, 0] and same["per_seed"] == [0, 0]
    better = {s: {l: [(c[2], c[2], c[2]) for c in v] for l, v in per.items()} for s, per in sft.items()}  # all correct
    b = crossed_bootstrap(better, sft, ("cy", "sw"), 500, 0)
    by_hand = [sum(f1(better[s][l]) - f1(sft[s][l]) for l in ("cy", "sw")) / 2 for s in (0, 1)]
    assert b["per_seed"] == pytest.approx(by_hand) and b["delta"] == pytest.approx(sum(by_hand) / 2)
    assert b["ci95"][0] <= b["delta"] <= b["ci95"][1] and b["hierarchical"][0] < b["delta"] < b["hierarchical"][1]


def test_round_two_power_is_the_share_of_simulated_intervals_above_zero():
    import numpy as np
    from scipy.stats import norm
    from slot_round2_report import percent, power

    rng = np.random.default_rng(0)
    for effect, se in ((1.7, 0.59), (0.8, 0.6), (4.9, 2.0)):
        estimates = rng.normal(effect, se, 200_000)  # brute force: how often is the 95% interval above 0?
        assert power(effect, se) == pytest.approx(np.mean(estimates - 1.96 * se > 0), abs=0.005)
        assert power(effect, se) == pytest.approx(norm.sf(1.96 - effect / se))
    assert power(1.96, 1.0) == pytest.approx(0.5)  # an effect at the threshold: half the intervals clear 0
    assert percent(0.8234) == "82%" and percent(0.996) == "> 99%" and percent(0.99) == "99%"


def test_round_two_verdict_wording_is_the_preregistered_table():
    from slot_round2_report import verdict

    assert verdict([0.5, 3.0], 1.7) == "alignment improves transfer to the aligned languages"
    assert verdict([0.5, 1.2], 1.7) == ("alignment improves transfer to the aligned languages, by less than the "
                                        "paper's relative effect")
    assert verdict([-2.0, -0.1], 1.7) == "alignment lowers transfer to the aligned languages"
    assert verdict([-0.8, 1.2], 1.7).startswith("no gain of the paper's relative size: +1.7 F1 is excluded")
    assert verdict([-0.8, 1.7], 1.7) == "inconclusive"  # the smallest effect of interest on the boundary


def test_round_two_agreement_of_a_retrained_run_with_committed_predictions():
    """On round one's committed files: a run against itself agrees everywhere; against another run the
    identical predictions are those counted item by item, and each side's F1 is its file's own per-language F1."""
    from slot_round2_report import agreement

    sft, joint = (json.loads((ROOT / "experiments" / "results" / "slot" / f"{r}-s0.json").read_text())
                  for r in ("sft", "joint"))
    same = agreement(sft, sft)
    assert same["identical"] == same["items"] == sum(len(v) for v in sft["items"].values())
    other = agreement(sft, joint)
    by_id = {(l, row[0]): row[3] for l, rows in joint["items"].items() for row in rows}
    assert other["identical"] == sum(by_id[l, row[0]] == row[3] for l, rows in sft["items"].items() for row in rows)
    assert other["identical"] < other["items"]
    assert abs(other["committed"] - statistics.mean(sft["per_lang"].values())) < 1e-9
    assert abs(other["retrained"] - statistics.mean(joint["per_lang"].values())) < 1e-9
