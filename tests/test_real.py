"""End to end on real pretrained models and real multilingual text (slow; CI runs them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from midalign.data.udhr import parallel_rows
from midalign.registry import ensure_registry_model
from test_retrieval import brute_force_retrieval

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.slow


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, cwd=ROOT)


def test_retrieve_on_smollm_matches_transformers_hidden_states_and_brute_force(tmp_path):
    """One direction, two layers: transformers' hidden states + the written-out margin give the same accuracy."""
    import transformers

    folder = ensure_registry_model("smollm2-135m-instruct")
    langs = ["en", "de", "fr"]
    res = run("retrieve.py", "--model", "smollm2-135m-instruct", "--langs", *langs, "--layers", "0,8,15,30",
              "--pool", "mean-skip-first", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    rows = parallel_rows(langs, "test")
    assert results["n_sentences"] == len(rows) > 10
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    pooled = {}
    with torch.no_grad():
        for lang in ("de", "en"):
            states = [hf(torch.tensor([tok(r[lang])["input_ids"]]), output_hidden_states=True).hidden_states for r in rows]
            pooled[lang] = {layer: torch.stack([h[layer][0, 1:].mean(0) for h in states]) for layer in (8, 15)}
    for li, layer in ((1, 8), (2, 15)):
        picks = brute_force_retrieval(pooled["de"][layer].double().numpy(), pooled["en"][layer].double().numpy(), 4)
        correct = sum(p == i for i, p in enumerate(picks))
        got = results["pools"]["mean-skip-first"]["per_direction"]["de-en"][li]  # a float32 share
        assert round(got * len(rows)) == correct, layer


def test_evaluate_default_model_translates_german(tmp_path):
    from midalign.metrics import mt_scores

    res = run("evaluate.py", "--langs", "de", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())["per_language"]["de-en"]  # MT: per direction
    preds = [json.loads(l) for l in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 4 and "tok:13a" in scores["bleu_signature"]
    # a real translation beats leaving the German untranslated, on both metrics
    copy = mt_scores([p["input"] for p in preds], [p["reference"] for p in preds], "en")
    assert scores["bleu"] > copy["bleu"] + 5 and scores["chrf"] > copy["chrf"] + 10, (scores, copy)


def test_train_demo_preset_on_the_real_default(tmp_path):
    res = run("train.py", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    rows = [json.loads(l) for l in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "eval" not in r]
    evals = [r for r in rows if "eval" in r]
    assert len(steps) == 16 and all(torch.isfinite(torch.tensor([r["task_loss"], r["align_loss"]])).all() for r in steps)
    assert (tmp_path / "best" / "adapter_model.safetensors").is_file()
    assert evals[-1]["dev_align_loss"] < evals[0]["dev_align_loss"] or evals[-1]["dev_task_loss"] < evals[0]["dev_task_loss"]


def test_alignment_only_adapter_then_retrieval_with_it(tmp_path):
    """train.py --align-only on a real model, then retrieve.py --adapter: the path merge and retrieval use."""
    res = run("train.py", "--model", "smollm2-135m-instruct", "--align-only", "--max-steps", "1", "--grad-accum", "1",
              "--align-batch-size", "4", "--align-dev-batches", "1", "--eval-every", "1", "--out", str(tmp_path / "a"))
    assert res.returncode == 0, res.stderr
    res = run("retrieve.py", "--model", "smollm2-135m-instruct", "--adapter", str(tmp_path / "a" / "best"),
              "--langs", "en", "de", "--layers", "15", "--pool", "mean", "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "r" / "results.json").read_text())["adapter"].endswith("best")


def test_refill_decoding_equals_static_batches_on_the_default_model():
    """Finished rows refilled (evaluation's decoder) against static batches, token for token, in fp32: real
    chat prompts of very different lengths (1 to 40 words of UDHR text) whose answers end at different steps."""
    from midalign.checkpoint import load_model_and_tokenizer
    from midalign.generate import generate, greedy_generate

    model, tok = load_model_and_tokenizer("qwen2.5-coder-0.5b-instruct", "cpu", "fp32")
    rows = parallel_rows(["de", "sw"], "test")
    texts = [" ".join(r[lang].split()[:n]) for r, lang, n in zip(rows, ["de", "sw"] * 5, (1, 40, 3, 25, 2, 12, 6, 1, 30, 4))]
    prompts = [tok.chat_ids([{"role": "system", "content": "Translate the following sentences to English."},
                             {"role": "user", "content": t}]) for t in texts]
    static = greedy_generate(model, prompts[:5], 24, tok.eos_ids, tok.pad_id) + \
        greedy_generate(model, prompts[5:], 24, tok.eos_ids, tok.pad_id)
    assert generate(model, prompts, 24, tok.eos_ids, tok.pad_id, batch_size=4, refill_at=1) == static
    lengths = sorted(map(len, static))
    assert lengths[0] < 12 and lengths[-1] == 24 and len(set(lengths)) >= 4, lengths
