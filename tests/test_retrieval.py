"""Margin retrieval against a brute-force per-item version; pooling; layer indexing against transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import hf_model
from midalign.align import mean_pool
from midalign.checkpoint import load_model
from midalign.errors import DataError, MidalignError
from midalign.retrieval import embed_layers, margin_retrieval, paper_average, retrieval_accuracy

ROOT = Path(__file__).parent.parent


def brute_force_retrieval(x: np.ndarray, y: np.ndarray, k: int) -> list[int]:
    """LASER ratio margin, one item at a time, in plain Python (the definition, written out)."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    n, m = len(xn), len(yn)
    s = [[float(np.dot(xn[i], yn[j])) for j in range(m)] for i in range(n)]
    k = min(k, n, m)
    avg_xy = [sum(sorted(s[i], reverse=True)[:k]) / k for i in range(n)]
    avg_yx = [sum(sorted((s[i][j] for i in range(n)), reverse=True)[:k]) / k for j in range(m)]
    picks = []
    for i in range(n):
        kth = sorted(s[i], reverse=True)[k - 1]
        best, best_j = -float("inf"), -1
        for j in range(m):
            if s[i][j] >= kth:
                margin = s[i][j] / ((avg_xy[i] + avg_yx[j]) / 2)
                if margin > best:
                    best, best_j = margin, j
        picks.append(best_j)
    return picks


@pytest.mark.parametrize("n, m, d, k, quantise", [(30, 30, 8, 4, False), (12, 20, 5, 4, False),
                                                    (25, 25, 3, 4, True), (5, 5, 4, 10, False), (3, 7, 2, 4, True)])
def test_vectorised_margin_equals_brute_force(n, m, d, k, quantise):
    g = torch.Generator().manual_seed(n * 100 + d)
    x, y = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)
    if quantise:  # repeated rows: exact ties in the similarity matrix, in any summation order
        x = x[torch.randint(0, max(n // 3, 1), (n,), generator=g)]
        y = y[torch.randint(0, max(m // 3, 1), (m,), generator=g)]
    x_before = x.clone()
    assert margin_retrieval(x, y, k).tolist() == brute_force_retrieval(x.double().numpy(), y.double().numpy(), k)
    assert torch.equal(x, x_before)  # inputs untouched


def test_permutation_invariance_and_identity():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(40, 16, generator=g)
    x = y + 0.8 * torch.randn(40, 16, generator=g)
    perm = torch.randperm(40, generator=g)
    pred = margin_retrieval(x, y)
    assert torch.equal(margin_retrieval(x[perm], y[perm]), torch.argsort(perm)[pred[perm]])
    assert retrieval_accuracy(x[perm], y[perm]) == retrieval_accuracy(x, y)
    assert retrieval_accuracy(y, y) == 1.0 and retrieval_accuracy(y, y, margin="cosine") == 1.0
    assert retrieval_accuracy(y, y.flip(0)) == 0.0


def test_mean_pool_ignores_padding_and_can_skip_the_first_token():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(1, 5, 3, generator=g)
    alone = h.mean(1)
    left = torch.cat([torch.randn(1, 2, 3, generator=g) * 100, h], dim=1)
    right = torch.cat([h, torch.randn(1, 2, 3, generator=g) * 100], dim=1)
    torch.testing.assert_close(mean_pool(left, torch.tensor([[0, 0, 1, 1, 1, 1, 1]])), alone)
    torch.testing.assert_close(mean_pool(right, torch.tensor([[1, 1, 1, 1, 1, 0, 0]])), alone)
    skipped = h[:, 1:].mean(1)
    torch.testing.assert_close(mean_pool(left, torch.tensor([[0, 0, 1, 1, 1, 1, 1]]), skip_first=True), skipped)
    torch.testing.assert_close(mean_pool(right, torch.tensor([[1, 1, 1, 1, 1, 0, 0]]), skip_first=True), skipped)


def test_embed_layers_matches_pooled_transformers_hidden_states(tiny_checkpoint):
    model = load_model(tiny_checkpoint, device="cpu")
    ref = hf_model(tiny_checkpoint)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, 128, (n,), generator=g).tolist() for n in (4, 9, 6, 12, 5)]
    layers = [0, 1, 2, 3]  # HF indices; the pass stops after layer 3 of 4
    emb = embed_layers(model, seqs, layers, pools=("mean", "mean-skip-first"), batch_size=2)
    for i, s in enumerate(seqs):
        with torch.no_grad():
            hs = ref(torch.tensor([s]), output_hidden_states=True).hidden_states
        for li, layer in enumerate(layers):
            torch.testing.assert_close(emb["mean"][li, i], hs[layer][0].mean(0), atol=1e-5, rtol=0)
            torch.testing.assert_close(emb["mean-skip-first"][li, i], hs[layer][0, 1:].mean(0), atol=1e-5, rtol=0)


def test_paper_average_uses_even_layers_without_embeddings():
    acc = torch.stack([torch.full((2, 2), float(l)) for l in range(5)])  # value = layer index
    acc[:, 0, 0] = acc[:, 1, 1] = float("nan")
    assert paper_average(acc, [0, 1, 2, 3, 4]) == 3.0  # mean of layers 2 and 4


def test_pearson_and_permutation_p_value_by_hand():
    from scipy.stats import pearsonr

    from midalign.stats import pearson

    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    y = np.array([2.0, 1.0, 4.0, 3.0, 5.0])
    # by hand: deviations x (-2,-1,0,1,2), y (-1,-2,1,0,2); Σxy = 2+2+0+0+4 = 8, Σx² = Σy² = 10 → r = 0.8
    r, p = pearson(x, y, permutations=5000)
    assert r == pytest.approx(0.8) == pytest.approx(pearsonr(x, y)[0])
    # exact: of the 120 orderings of y, those with |r| >= 0.8 are Σxy ∈ {8, 9, 10, -8, -9, -10}
    import itertools
    exact = np.mean([abs(np.corrcoef(x, np.array(q))[0, 1]) >= 0.8 - 1e-12 for q in itertools.permutations(y)])
    assert p == pytest.approx(exact, abs=0.02)
    # a constant series: r is 0 / 0, undefined (scipy: nan), and no p-value either
    assert all(np.isnan(v) for v in pearson(x, np.full(5, 3.0))) and np.isnan(pearsonr(x + 0.0, y * 0 + 3.0)[0])


def test_retrieve_cli_end_to_end_on_a_tiny_model(tiny_chat_checkpoint, tmp_path):
    from multilingual import UDHR_ARTICLE_1

    rows = [{lang: f"{text} ({i})" for lang, text in UDHR_ARTICLE_1.items() if lang in ("en", "de", "fr")}
            for i in range(6)]
    data = tmp_path / "multiway.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    res = subprocess.run([sys.executable, str(ROOT / "retrieve.py"), "--model", str(tiny_chat_checkpoint),
                          "--data", str(data), "--layers", "0,2,4", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["langs"] == ["en", "de", "fr"] and results["layers"] == [0, 2, 4]
    for pool, s in results["pools"].items():
        assert set(s["per_direction"]) == {"en-de", "en-fr", "de-en", "de-fr", "fr-en", "fr-de"}
        assert s["paper_average"] == pytest.approx(np.mean([v[1:] for v in s["per_direction"].values()]))
    assert (tmp_path / "out" / "results.csv").read_text().startswith("pool,layer,source,target,accuracy")
    # an earlier retrieval is replaced only when told, and whole: no earlier plot stays beside the new results
    again = lambda *a: subprocess.run([sys.executable, str(ROOT / "retrieve.py"), "--model", str(tiny_chat_checkpoint),
                                       "--data", str(data), "--layers", "0,2", "--out", str(tmp_path / "out"), *a],
                                      capture_output=True, text=True, cwd=ROOT)
    res = again()
    assert res.returncode == 1 and "holds an earlier output" in res.stderr and "pass --overwrite" in res.stderr
    (tmp_path / "out" / "heatmap_stale.png").write_bytes(b"an earlier run's plot")
    assert again("--overwrite").returncode == 0
    assert not (tmp_path / "out" / "heatmap_stale.png").exists()
    record = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert record["layers"] == [0, 2] and record["data"] == str(data) and record["langs"] == ["en", "de", "fr"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"en": "a", "de": "b"}\n{"en": "c"\n')
    res = subprocess.run([sys.executable, str(ROOT / "retrieve.py"), "--model", str(tiny_chat_checkpoint),
                          "--data", str(bad), "--out", str(tmp_path / "out2")], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode != 0 and "bad.jsonl:2: not valid JSON" in res.stderr


def test_correlate_uses_the_middle_layer_by_default(tmp_path):
    """Fig. 1b: per-language accuracy at the middle layer (as source and target, averaged) against the
    downstream score; Pearson r checked against scipy, MT directions mapped to their X language."""
    import retrieve
    from scipy.stats import pearsonr

    rng = np.random.default_rng(0)
    langs, layers = ["de", "sw", "cy", "ja", "is"], list(range(5))
    per_language = {l: {"as_source": rng.random(5).tolist(), "as_target": rng.random(5).tolist()} for l in langs}
    (tmp_path / "results.json").write_text(json.dumps({"layers": layers, "pools": {"mean": {
        "per_layer": rng.random(5).tolist(), "per_language": per_language}}}))
    scores = {f"{l}-en": {"score": float(rng.random())} for l in langs} | {"en-de": {"score": 99.0}}
    (tmp_path / "scores.json").write_text(json.dumps({"per_language": scores}))
    x = [(per_language[l]["as_source"][2] + per_language[l]["as_target"][2]) / 2 for l in langs]
    y = [scores[f"{l}-en"]["score"] for l in langs]
    out = retrieve.correlate(tmp_path / "results.json", tmp_path / "scores.json", 200)["mean"]
    assert out["layer"] == 2 and out["pearson_r"] == pytest.approx(pearsonr(x, y)[0])
    x4 = [(per_language[l]["as_source"][4] + per_language[l]["as_target"][4]) / 2 for l in langs]
    assert retrieve.correlate(tmp_path / "results.json", tmp_path / "scores.json", 200, layer=4)["mean"]["pearson_r"] == \
        pytest.approx(pearsonr(x4, y)[0])
    with pytest.raises(DataError, match="layer 9 was not evaluated"):
        retrieve.correlate(tmp_path / "results.json", tmp_path / "scores.json", 200, layer=9)


def test_correlate_and_compare_mistakes_are_one_line_errors_and_outputs_are_their_own(tmp_path, capsys):
    """Missing, broken or wrong files were tracebacks (FileNotFoundError, JSONDecodeError, KeyError); the
    analyses wrote into --out beside whatever was there."""
    import retrieve

    layers = [0, 1, 2]
    rows = {l: {"as_source": [0.1, 0.5 - i / 10, 0.2], "as_target": [0.2, 0.4, 0.3]} for i, l in enumerate(["de", "sw", "cy"])}
    results = tmp_path / "r" / "results.json"
    results.parent.mkdir()
    results.write_text(json.dumps({"layers": layers, "pools": {"mean": {"per_layer": [0.1, 0.4, 0.2],
                                                                        "per_language": rows}}}))
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"de": 50.0, "sw": 20.0, "cy": 10.0}))
    out = ["--out", str(tmp_path / "analysis")]
    for argv, message in [
        (["--correlate", str(tmp_path / "nothere.json"), str(scores)],
         r"nothere.json: file not found; pass a results.json written by retrieve.py$"),
        (["--correlate", str(results), str(results.parent / "results.csv")], r"results.csv: file not found"),
        (["--correlate", str(scores), str(scores)], r"scores.json: no 'layers' list and 'pools' table: not a "
                                                   r"results.json written by retrieve.py$"),
        (["--compare", str(results), str(scores)], r"scores.json: no 'layers' list"),
        (["--correlate", str(results), str(results)], r"results.json: the score of 'layers' is \[0, 1, 2\], not a "
                                                     r"number"),
        (["--correlate", str(results), str(scores), "--out", str(results.parent)], r"inputs are never outputs"),
    ]:
        with pytest.raises(DataError if "--out" not in argv else MidalignError, match=message):
            retrieve.main(argv + (out if "--out" not in argv else []))
    (tmp_path / "flat.json").write_text(json.dumps({"de": 5, "sw": 5, "cy": 5}))
    with pytest.raises(DataError, match=r"mean: the score at layer 1 is the same for all 3 languages"):
        retrieve.main(["--correlate", str(results), str(tmp_path / "flat.json"), "--layer", "1", *out])
    (tmp_path / "broken.json").write_text('{"de": 1,\n')
    with pytest.raises(DataError, match=r"broken.json:2: not valid JSON"):
        retrieve.main(["--correlate", str(results), str(tmp_path / "broken.json"), *out])
    assert not (tmp_path / "analysis").exists()
    retrieve.main(["--correlate", str(results), str(scores), "--layer", "1", *out])
    assert json.loads((tmp_path / "analysis" / "correlation.json").read_text())["mean"]["n_languages"] == 3
    with pytest.raises(MidalignError, match="holds an earlier output"):
        retrieve.main(["--compare", str(results), *out])
    retrieve.main(["--compare", str(results), *out, "--overwrite"])
    assert not (tmp_path / "analysis" / "correlation.json").exists()  # the folder is the new analysis, whole
    assert json.loads((tmp_path / "analysis" / "provenance.json").read_text())["compare"] == [str(results)]
