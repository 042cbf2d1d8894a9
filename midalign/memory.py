"""Training memory estimate, printed before a run starts (issue: reliability and scale).

    python -m midalign.memory tests/fixtures/llama-3-8b-config.json --batch-size 8 --seq-len 512 --device cuda

Four parts: frozen weights (every parameter of the model in its dtype); LoRA state (fp32 weights,
gradients and AdamW's two moments, 16 bytes per LoRA parameter); activations kept for the backward
pass. Activations are not guessed from a formula: one LoRA-adapted decoder layer and the LM head are
run on the *meta* device (shapes only, no memory) at the run's batch shape, and the tensors autograd
saves are summed — the layer total times the layers the pass runs, plus the head on the answer
tokens. With gradient checkpointing only each layer's input is kept, plus one layer recomputed at a
time. Allocator slack and transient buffers come on top (typically 10–20% on CUDA).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from unittest import mock

import torch
import torch.nn.functional as F

from midalign.cli import run
from midalign.config import ModelConfig
from midalign.lora import LoRAConfig, apply_lora, trainable_parameters
from midalign.model import CausalLM, DecoderLayer, rope_cos_sin, rope_inv_freq

GiB = 2**30


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int  # bytes
    lora_state: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.lora_state + self.activations

    def describe(self) -> str:
        return (f"weights {self.weights / GiB:.2f} GiB + LoRA/grads/AdamW {self.lora_state / GiB:.2f} GiB + "
                f"activations {self.activations / GiB:.2f} GiB ≈ {self.total / GiB:.2f} GiB")


def saved_tensor_bytes(fn) -> int:
    """Bytes of the distinct storages autograd saves for backward while `fn()` runs, parameters (and
    views of them, e.g. a transposed weight) left out: they are counted as weights."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        if isinstance(t, torch.nn.Parameter) or isinstance(t._base, torch.nn.Parameter):
            return t
        storage = t.untyped_storage()
        key = storage._cdata if t.device.type != "meta" else id(t)  # meta tensors share no real storage
        seen[key] = max(seen.get(key, 0), t.numel() * t.element_size() if t.device.type == "meta" else storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


class _FusedAttentionSaves(torch.autograd.Function):
    """Stands in for SDPA during the estimate: keeps what the fused (flash / memory-efficient) kernels
    keep for backward — q, k, v, the output and the fp32 log-sum-exp — where the meta device would run
    the math path and keep T×T attention weights."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.empty_like(q)
        ctx.save_for_backward(q, k, v, out, torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device))
        return out


def _layer_activations(config: ModelConfig, lora: LoRAConfig, dtype: torch.dtype, batch: int, seq: int) -> int:
    with torch.device("meta"):
        layer = DecoderLayer(config, 0)
        apply_lora(layer, lora)
        layer.to(dtype).train()  # LoRA in `dtype` too: under bf16 autocast its matmuls save bf16 inputs
        x = torch.empty(batch, seq, config.hidden_size, dtype=dtype)
        cos, sin = rope_cos_sin(rope_inv_freq(config), torch.arange(seq).expand(batch, seq), dtype)
    with mock.patch.object(F, "scaled_dot_product_attention", lambda q, k, v, **_: _FusedAttentionSaves.apply(q, k, v)):
        return saved_tensor_bytes(lambda: layer(x, cos, sin, None, None))


def _head_activations(config: ModelConfig, dtype: torch.dtype, tokens: int) -> int:
    with torch.device("meta"):
        norm_head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False).to(dtype)
        hidden = torch.empty(tokens, config.hidden_size, dtype=dtype, requires_grad=True)
        targets = torch.zeros(tokens, dtype=torch.long)
    return saved_tensor_bytes(lambda: F.cross_entropy(norm_head(hidden).float(), targets))


def estimate_training_memory(config: ModelConfig, lora: LoRAConfig, dtype: torch.dtype, batch: int, seq: int,
                             layers: int | None = None, answer_tokens: int = 0,
                             grad_checkpoint: bool = False) -> MemoryEstimate:
    """Peak-memory estimate of one training pass of `batch` × `seq` tokens through `layers` decoder
    layers (default all), with the LM head on `answer_tokens` positions (0 for an alignment pass)."""
    layers = config.num_hidden_layers if layers is None else layers
    with torch.device("meta"):
        model = CausalLM(config)
        apply_lora(model, lora)
    weights = sum(p.numel() for p in model.parameters() if not p.requires_grad) * torch.finfo(dtype).bits // 8
    per_layer = _layer_activations(config, lora, dtype, batch, seq)
    if grad_checkpoint:
        kept = layers * batch * seq * config.hidden_size * torch.finfo(dtype).bits // 8 + per_layer
    else:
        kept = layers * per_layer
    head = _head_activations(config, dtype, answer_tokens) if answer_tokens else 0
    return MemoryEstimate(weights, 16 * trainable_parameters(model), kept + head)


def main() -> None:
    from pathlib import Path

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path, help="an HF config.json file or a folder holding one")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--answer-tokens", type=int, help="positions with a loss (default: half of each sequence)")
    p.add_argument("--device", default="cuda", help="cuda: bf16 weights; cpu: fp32")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--grad-checkpoint", action="store_true")
    args = p.parse_args()
    config = ModelConfig.from_hf(args.config)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    answer = args.answer_tokens if args.answer_tokens is not None else args.batch_size * args.seq_len // 2
    est = estimate_training_memory(config, LoRAConfig(r=args.lora_r), dtype, args.batch_size, args.seq_len,
                                   answer_tokens=answer, grad_checkpoint=args.grad_checkpoint)
    print(f"task step, batch {args.batch_size} × {args.seq_len} tokens, {dtype}: {est.describe()}")


if __name__ == "__main__":
    run(main)
