"""The training memory estimate against what autograd really keeps (issue: reliability and scale)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from midalign.config import ModelConfig
from midalign.lora import LoRAConfig, apply_lora
from midalign.memory import estimate_training_memory, saved_tensor_bytes

FIXTURES = Path(__file__).parent / "fixtures"


def test_llama_3_8b_weights_and_lora_state():
    est = estimate_training_memory(ModelConfig.from_hf(FIXTURES / "llama-3-8b-config.json"), LoRAConfig(r=8),
                                   torch.bfloat16, batch=8, seq=512, answer_tokens=8 * 256)
    assert est.weights == 8_030_261_248 * 2  # Meta's published parameter count, bf16
    assert est.lora_state == 20_971_520 * 16  # fp32 weight + gradient + two AdamW moments
    assert 4 * 2**30 < est.activations < 40 * 2**30


def test_activation_estimate_matches_the_tensors_a_real_training_pass_saves(tiny_chat_checkpoint):
    from midalign.checkpoint import load_model
    from midalign.sft import answer_tokens, collate, task_loss

    torch.manual_seed(0)
    model = load_model(tiny_chat_checkpoint, device="cpu")
    lora = LoRAConfig(r=8)
    apply_lora(model, lora)
    model.train()
    batch = [(list(range(3, 40)), list(range(40, 67)))] * 4  # 4 × 64 tokens, 26 answer positions each
    ids, mask, labels = collate(batch, 0)
    measured = saved_tensor_bytes(lambda: task_loss(model, ids, mask, labels))
    est = estimate_training_memory(model.config, lora, torch.float32, batch=4, seq=64,
                                   answer_tokens=answer_tokens(labels))
    assert est.activations == pytest.approx(measured, rel=0.15)
