"""Llama 3.x / Qwen2 decoder in plain PyTorch, with HuggingFace parameter names.

Read top to bottom: RMSNorm → RoPE helpers → KV cache → attention → MLP → block → decoder → causal LM.
Parameter names and the half-split ("rotate_half") RoPE layout are HF's, so a HF safetensors
checkpoint loads with no renaming and no permutation.

What midalign adds over a plain decoder is what the paper's method needs (§2, §3): the hidden states
of chosen layers with HF's indexing (0 = embedding output, i < L = output of decoder layer i with *no*
final norm, L = after the final norm, as transformers returns it) and the option to stop after layer k, so an alignment or retrieval pass runs only the layers it
uses and never the vocabulary projection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from midalign.config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in fp32 whatever the input dtype (as HF does), cast back, then scale.
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


# ---------------------------------------------------------------------------------------- RoPE


def rope_inv_freq(config: ModelConfig, device: torch.device | None = None) -> Tensor:
    """Inverse RoPE frequencies [head_dim/2] in fp32, with Llama 3.1 frequency scaling if configured."""
    d = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, device=device).float() / d))
    s = config.rope_scaling
    if s is None:
        return inv_freq
    # Llama 3.1: keep high frequencies, divide low ones by `factor`, interpolate in between.
    factor, lo, hi = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_len = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / lo, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= old_len / hi) & (wavelen <= old_len / lo)
    return torch.where(is_medium, smoothed, scaled)


def rope_cos_sin(inv_freq: Tensor, position_ids: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos, sin of shape (B, 1, T, head_dim) for integer positions (B, T); angles computed in fp32."""
    angles = position_ids[..., None].float() * inv_freq  # (B, T, hd/2)
    emb = torch.cat((angles, angles), dim=-1)  # half-split layout: [θ_0..θ_{d/2-1}, θ_0..θ_{d/2-1}]
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return x * cos + rotate_half(x) * sin


# ------------------------------------------------------------------------------------ KV cache


class KVCache:
    """Preallocated contiguous keys/values for all layers: (layers, B, n_kv_heads, max_len, head_dim).

    Layers write their new keys at [length, length + T); `advance(T)` moves the end after a forward.
    """

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, device, dtype: torch.dtype):
        shape = (config.num_hidden_layers, batch_size, config.num_key_value_heads, max_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        end = self.length + k.shape[2]
        if end > self.k.shape[3]:
            raise ValueError(f"KV cache is full: {end} positions needed, {self.k.shape[3]} allocated")
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.length += n


def build_attention_mask(key_mask: Tensor, past: int) -> Tensor:
    """Boolean mask (B, 1, T, S): causal within the sequence and blind to padded keys.

    `key_mask` (B, S) marks real tokens over past + current positions; T = S - past queries.
    A padded query (left padding) would see no key at all and give NaN, so every query may also see
    itself; those rows are padding and never read.
    """
    S = key_mask.shape[1]
    k_pos = torch.arange(S, device=key_mask.device)
    q_pos = k_pos[past:, None]  # (T, 1)
    allowed = (k_pos <= q_pos) & key_mask[:, None, :].bool()  # (B, T, S)
    allowed = allowed | (k_pos == q_pos)
    return allowed[:, None]


# --------------------------------------------------------------------------------------- blocks


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = (
            config.num_attention_heads, config.num_key_value_heads, config.head_dim)
        d, qkv_bias = config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=config.o_proj_bias)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None,
                cache: KVCache | None, layer_idx: int) -> Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer_idx, k, v)  # (B, nkv, S, hd)
        gqa = self.n_kv_heads != self.n_heads
        if T == 1 and x.device.type == "cpu" and q.dtype != torch.float32:
            # A decoding step (one query per row): torch's CPU attention kernel takes ~5x longer in bf16 than in
            # fp32 here (2.4 vs 0.5 ms a layer at 16 rows, 2 cores); in fp32 the result is also rounded once.
            # (CPU autocast would cast the inputs back to bf16.)
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, enable_gqa=gqa)
            y = y.to(q.dtype)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=gqa)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d, h, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(d, h, bias=bias)
        self.up_proj = nn.Linear(d, h, bias=bias)
        self.down_proj = nn.Linear(h, d, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, cache: KVCache | None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, self.layer_idx)
        return x + self.mlp(self.post_attention_layernorm(x))


# ---------------------------------------------------------------------------------------- model


@dataclass
class ModelOutput:
    logits: Tensor | None = None  # (B, T or logits_to_keep, vocab); None when not computed
    last_hidden_state: Tensor | None = None  # (B, T, d) after the final norm; None when stopped early
    # HF index → (B, T, d): 0 = embeddings, i < L = output of layer i (no norm), L = after the final norm
    hidden_states: dict[int, Tensor] = field(default_factory=dict)


class DecoderModel(nn.Module):
    """The HF `model.` part: embeddings, decoder layers, final norm."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class CausalLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = DecoderModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # Recompute each layer's activations in the backward pass instead of storing them (training only).
        self.gradient_checkpointing = False

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        cache: KVCache | None = None,
        output_hidden_states: Iterable[int] = (),
        stop_after_layer: int | None = None,
        logits_to_keep: int | None = 0,
    ) -> ModelOutput:
        """Run the decoder on `input_ids` (B, T).

        attention_mask: (B, past + T), 1 = token, 0 = padding (left or right); None = no padding.
        output_hidden_states: HF indices to return (0 = embeddings, i = output of layer i, no norm; the
            last index L is after the final norm, as transformers' `hidden_states[L]`).
        stop_after_layer: run layers 1..k only; for k < L no later layers, no final norm, no LM head.
        logits_to_keep: 0 = logits for all positions, n = the last n only, None = no LM head.
        """
        cfg = self.config
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        wanted = {cfg.validate_layer(i, "hidden state") for i in output_hidden_states}
        n_layers = cfg.num_hidden_layers if stop_after_layer is None else cfg.validate_layer(stop_after_layer)
        if wanted and max(wanted) > n_layers:
            raise ValueError(f"hidden state {max(wanted)} requested but the pass stops after layer {n_layers}")

        if cache is not None and n_layers < cfg.num_hidden_layers:
            raise ValueError("a KV cache is for full passes (generation); do not combine it with stop_after_layer")
        if attention_mask is None:
            key_mask = torch.ones(B, past + T, dtype=torch.long, device=input_ids.device)
            mask = None if cache is None else build_attention_mask(key_mask, past)
        else:
            if attention_mask.shape != (B, past + T):
                raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(B, past + T)}")
            key_mask = attention_mask
            mask = build_attention_mask(key_mask, past) if cache is not None or not key_mask.all() else None
        # Positions count real tokens only, so a left-padded sequence gets the same positions as alone.
        position_ids = (key_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]

        x = self.model.embed_tokens(input_ids)  # (B, T, d)
        cos, sin = rope_cos_sin(rope_inv_freq(cfg, x.device), position_ids, x.dtype)
        out = ModelOutput()
        if 0 in wanted:
            out.hidden_states[0] = x
        for i, layer in enumerate(self.model.layers[:n_layers], start=1):
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, cos, sin, mask, cache, use_reentrant=False)  # RNG state preserved
            else:
                x = layer(x, cos, sin, mask, cache)
            if i in wanted and i < cfg.num_hidden_layers:
                out.hidden_states[i] = x
        if cache is not None:
            cache.advance(T)
        if n_layers < cfg.num_hidden_layers:
            return out
        out.last_hidden_state = self.model.norm(x)
        if cfg.num_hidden_layers in wanted:
            out.hidden_states[cfg.num_hidden_layers] = out.last_hidden_state
        if logits_to_keep is not None:
            # contiguous: torch's matmul of a strided (B, n, d) slice with a weight that needs no grad (frozen
            # under LoRA) copies the (vocab × d) weight once per row: 14 s per 16-prompt prefill on 2 cores
            h = out.last_hidden_state
            h = h if logits_to_keep == 0 else h[:, -logits_to_keep:].contiguous()
            out.logits = self.lm_head(h)
        return out
