"""The miniature study end to end at toy size (--quick) on the tiny model and real-file excerpts, and its
report built from the result files alone."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "publishers"


def test_quick_study_runs_every_stage_and_the_report_reads_the_result_files(tiny_chat_checkpoint, tmp_path):
    results, report = tmp_path / "results", tmp_path / "docs" / "miniature.md"
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / "experiments" / "miniature.py"), "--quick", "--model",
                                     str(tiny_chat_checkpoint), "--results", str(results), "--work", str(tmp_path / "work"),
                                     "--report", str(report), "--data-dir", str(tmp_path / "data"), "--alma-dir",
                                     str(FIXTURES / "alma"), "--wmt23-dir", str(FIXTURES / "wmt23"), *a],
                                    capture_output=True, text=True, cwd=ROOT)
    res = run()
    assert res.returncode == 0, res.stderr[-3000:]
    expected = {"mt-base", "mt-sft-s0", "mt-sft-s1", "mt-joint-s0", "mt-joint-s1", "ret-base", "ret-sft", "ret-joint",
                "ret-align-l1", "ret-align-l2", "ret-align-l3", "merge-search", "mt-merged", "udhr-sft",
                "udhr-joint-unseen"}
    assert {p.stem for p in results.glob("*.json")} == expected
    text = report.read_text()
    assert "Not run yet" not in text and text.count("\n## ") == 7  # six claims and the differences from the paper
    verdicts = re.findall(r"^\| .+ \| (holds|does not hold|is not detected|is contradicted) \|$", text, re.M)
    assert len(verdicts) == 6, text  # the summary: one verdict per claim
    assert "Compute: " in text  # summed from the runs' own timings
    for plot in ("retrieval", "placement", "correlation", "dev_curve", "train_curve"):
        assert (report.parent / f"miniature_{plot}.png").is_file(), plot
    sft = json.loads((results / "mt-sft-s0.json").read_text())
    assert set(sft["per_unit"]) == {"de-en", "ru-en", "zh-en", "he-en", "ja-en", "uk-en"}
    assert all(len(v) == 2 for v in sft["segments"].values())  # test_per_direction segments, every model

    # a second invocation reuses every result file (nothing is trained or evaluated again) ...
    (tmp_path / "work").rename(tmp_path / "elsewhere")
    res = run()
    assert res.returncode == 0 and not (tmp_path / "work" / "sft-s0").exists(), res.stderr[-2000:]
    # ... and the report is built from the files: an edited number shows up in it
    search = json.loads((results / "merge-search.json").read_text())
    search["best_weight"] = 0.123
    (results / "merge-search.json").write_text(json.dumps(search))
    assert run("--report-only").returncode == 0 and "**0.123**" in report.read_text()

    # a result file from another design is refused by name, never mixed into the report
    search["design"] = "0123456789"
    (results / "merge-search.json").write_text(json.dumps(search))
    res = run("--report-only")
    assert res.returncode == 1 and "merge-search.json was made under another design" in res.stderr, res.stderr


def test_paired_bootstrap_equals_resampling_corpus_chrf_directly():
    """The bootstrap sums per-segment chrF statistics; the reference recomputes sacrebleu's corpus chrF on
    every resample (the same segment indices, and the same seeds: a seed's two systems drawn together), on
    real WMT23 references as "outputs"."""
    import random
    import statistics

    from sacrebleu.metrics import CHRF

    sys.path.insert(0, str(ROOT / "experiments"))
    from miniature_report import paired_bootstrap

    refs = {x: (FIXTURES / "wmt23" / "txt" / "references" / f"generaltest2023.{x}-en.ref.refA.en").read_text().splitlines()[:6]
            for x in ("ru", "de")}
    hyp = lambda x, shift: [[refs[x][(i + shift) % 6] if i % 3 == 0 else refs[x][i], refs[x][i]] for i in range(6)]
    system = lambda shift: {"segments": {f"{x}-en": hyp(x, shift) for x in refs}}
    a, b, units = [system(1), system(2)], [system(3), system(4)], ["ru-en", "de-en"]
    got = paired_bootstrap(a, b, units, n=40, seed=7)

    chrf = lambda pairs: CHRF().corpus_score([h for h, _ in pairs], [[r for _, r in pairs]]).score
    score = lambda systems, idx, seeds: statistics.mean(
        statistics.mean(chrf([systems[k]["segments"][u][i] for i in idx[u]]) for u in units) for k in seeds)
    rng, full = random.Random(7), {u: range(6) for u in units}
    deltas = []
    for _ in range(40):
        idx = {u: [rng.randrange(6) for _ in range(6)] for u in units}
        seeds = [rng.randrange(2) for _ in range(2)]
        deltas.append(score(a, idx, seeds) - score(b, idx, seeds))
    deltas.sort()
    assert abs(got["delta"] - (score(a, full, [0, 1]) - score(b, full, [0, 1]))) < 1e-9
    assert abs(got["ci95"][0] - deltas[1]) < 1e-9 and abs(got["ci95"][1] - deltas[39]) < 1e-9
    assert got["p_le_0"] == sum(d <= 0 for d in deltas) / 40
