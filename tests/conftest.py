"""Shared fixtures: tiny random HF checkpoints written by transformers (the independent reference)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from multilingual import UDHR_ARTICLE_1

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
TINY_CONFIGS = {
    # GQA, llama3 rope scaling, untied head
    "llama": dict(TINY, model_type="llama", rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                  rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                    original_max_position_embeddings=64), bos_token_id=1, eos_token_id=2),
    # q/k/v bias, tied embeddings
    "qwen2": dict(TINY, model_type="qwen2", rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                  use_sliding_window=False, bos_token_id=1, eos_token_id=2),
}


def write_tiny_checkpoint(model_type: str, folder: Path, seed: int = 0, **overrides) -> Path:
    """Save a randomly initialised transformers model in HF layout (fp32 safetensors)."""
    cfg = transformers.AutoConfig.for_model(**{**TINY_CONFIGS[model_type], **overrides})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():  # HF inits biases and norms to constants; randomise them so they are tested
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session", params=["llama", "qwen2"])
def tiny_checkpoint(request, tmp_path_factory) -> Path:
    return write_tiny_checkpoint(request.param, tmp_path_factory.mktemp(f"tiny-{request.param}"))


def hf_model(folder: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def read_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def write_tiny_chat_checkpoint(folder: Path, model_type: str = "llama") -> Path:
    """A tiny random model with a real byte-level BPE tokenizer (trained here on UDHR text) and ChatML."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers


    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(UDHR_ARTICLE_1.values()) * 3, trainer)
    write_tiny_checkpoint(model_type, folder, vocab_size=tok.get_vocab_size(), bos_token_id=0, eos_token_id=2)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": CHATML, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2], "pad_token_id": 0}))
    return folder


@pytest.fixture(scope="session")
def tiny_chat_checkpoint(tmp_path_factory) -> Path:
    return write_tiny_chat_checkpoint(tmp_path_factory.mktemp("tiny-chat"))


def write_tiny_data(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    en = UDHR_ARTICLE_1["en"]
    rows = [{"translation": {"de": f"{UDHR_ARTICLE_1['de']} {i}", "en": f"{en} {i}"}} for i in range(8)]
    (folder / "train.de-en.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    (folder / "dev.de-en.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows[:3]))
    pairs = [f"{lang}\t{text} {i}\t{en} {i}" for i in range(6) for lang, text in UDHR_ARTICLE_1.items() if lang != "en"]
    (folder / "pairs.tsv").write_text("\n".join(pairs))
    return {"train": folder / "train.de-en.jsonl", "dev": folder / "dev.de-en.jsonl", "pairs": folder / "pairs.tsv"}


def tiny_args(checkpoint: Path, data: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["--model", str(checkpoint), "--train-data", str(data["train"]), "--dev-data", str(data["dev"]),
            "--align-data", str(data["pairs"]), "--align-dev-data", str(data["pairs"]), "--align-layer", "2",
            "--batch-size", "2", "--align-batch-size", "4", "--grad-accum", "2", "--max-steps", "6",
            "--eval-every", "2", "--patience", "100", "--out", str(out), *extra]


# The device the device-aware tests run on: cpu here and in CI; bench/gpu_check.sh sets cuda.
TEST_DEVICE = torch.device(os.environ.get("MIDALIGN_TEST_DEVICE", "cpu"))
