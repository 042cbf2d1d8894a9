"""The alignment preflight (midalign/preflight.py, preflight.py): the AUC against scipy's Mann–Whitney U,
every cosine and loss against transformers' hidden states written out by hand, and on the real default
model the study's pilot finding (mean pooling inert at the middle layer, mean-skip-first not)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import hf_model, write_tiny_data
from midalign.batching import left_pad
from midalign.checkpoint import load_model
from midalign.data.tasks import load_pairs
from midalign.preflight import auc, preflight, sample_batches
from midalign.tokenizer import ChatTokenizer

ROOT = Path(__file__).parent.parent


def test_auc_is_the_mann_whitney_statistic():
    from scipy.stats import mannwhitneyu

    g = torch.Generator().manual_seed(0)
    pos = (torch.randn(40, generator=g) + 0.7).round(decimals=1).tolist()  # rounded: ties on purpose
    neg = torch.randn(300, generator=g).round(decimals=1).tolist()
    assert auc(pos, neg) == pytest.approx(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)), rel=1e-12)
    assert auc([1.0, 2.0], [0.0]) == 1.0 and auc([0.0], [1.0, 2.0]) == 0.0 and auc([1.0], [1.0]) == 0.5


def test_preflight_rows_equal_transformers_hidden_states_written_out(tiny_chat_checkpoint, tmp_path):
    data = write_tiny_data(tmp_path / "data")
    pairs = load_pairs(data["pairs"])
    model, tok = load_model(tiny_chat_checkpoint, device="cpu"), ChatTokenizer(tiny_chat_checkpoint)
    result = preflight(model, tok, pairs, batch_size=4, batches=3, seed=1, progress=False)
    assert result["layers"] == [0, 1, 2, 3, 4] and result["n_pairs"] == 12

    hf = hf_model(tiny_chat_checkpoint)
    same, other, losses = [], [], []
    for batch in sample_batches(pairs, 4, 3, seed=1):
        ids, mask = left_pad(tok.encode_batch([p.text for p in batch] + [p.en for p in batch]), tok.pad_id,
                             torch.device("cpu"))
        with torch.no_grad():
            h = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[2]
        m = mask.float()[..., None]
        pooled = (h * m).sum(1) / m.sum(1)  # the masked mean
        cos = F.normalize(pooled[:4], dim=-1) @ F.normalize(pooled[4:], dim=-1).T
        same += cos.diag().tolist()
        other += cos[~torch.eye(4, dtype=torch.bool)].tolist()
        logits = cos / 1.5
        losses.append(-torch.log_softmax(logits, dim=1).diag().mean().item())
    row = result["pools"]["mean"][2]
    assert row["cos_translations"] == pytest.approx(sum(same) / len(same), abs=1e-5)
    assert row["cos_others"] == pytest.approx(sum(other) / len(other), abs=1e-5)
    assert row["loss"]["1.5"]["now"] == pytest.approx(sum(losses) / len(losses), abs=1e-5)
    assert row["loss"]["1.5"]["chance"] == pytest.approx(math.log(4))
    assert row["verdict"] in ("inert", "separating", "weak")


def test_preflight_script_writes_its_report_and_refuses_a_bad_layer(tiny_chat_checkpoint, tmp_path):
    data = write_tiny_data(tmp_path / "data")
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / "preflight.py"), "--model", str(tiny_chat_checkpoint),
                                     "--pairs", str(data["pairs"]), "--batch-size", "4", "--batches", "2", *a],
                                    capture_output=True, text=True, cwd=ROOT)
    res = run("--out", str(tmp_path / "pf"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert {p.name for p in (tmp_path / "pf").iterdir()} == {"preflight.json", "preflight.md", "preflight.png"}
    assert sum(line.split(":")[0] in ("mean", "mean-skip-first", "bos", "last") for line in res.stdout.splitlines()) == 4
    res = run("--layer", "9", "--out", str(tmp_path / "bad"))
    assert res.returncode == 1 and "error: --layer 9 is out of range" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_preflight_on_the_default_model_finds_mean_pooling_inert_at_the_middle(tmp_path):
    """The slot study's pooling pilot, reproduced by forward passes alone on the offline default model and
    real Tatoeba pairs (LASER's files, excerpt: tests/fixtures/publishers/tatoeba-laser): at layer 12 every
    sentence's mean points one way; without the first token, translations stand out."""
    from midalign.data import sources

    langs = ["cy", "da", "ja", "jv", "sv", "sw", "tl"]
    folders = sources.ensure("tatoeba", tmp_path / "data", langs, progress=False,
                             local=Path(__file__).parent / "fixtures" / "publishers" / "tatoeba-laser")
    files = [str(f / f"{l}-en.tsv") for f, l in zip(folders, langs)]
    res = subprocess.run([sys.executable, str(ROOT / "preflight.py"), "--pairs", *files, "--out", str(tmp_path / "pf")],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads((tmp_path / "pf" / "preflight.json").read_text())
    mean, skip = result["pools"]["mean"][12], result["pools"]["mean-skip-first"][12]
    assert mean["verdict"] == "inert" and mean["cos_others"] > 0.95 and "mean: inert at layer 12" in res.stdout
    assert skip["verdict"] != "inert" and skip["cos_others"] < 0.8 and skip["auc"] > mean["auc"]
    assert result["sink"][12] > 0.5  # the first token sets the mean's direction
