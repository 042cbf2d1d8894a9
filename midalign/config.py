"""Model configuration read from a HuggingFace ``config.json`` (Llama 3.x and Qwen2/2.5).

Only what the decoder needs is kept. Anything midalign does not implement (another model type, another
RoPE scaling, sliding-window attention) is refused with an error that names the key, so a checkpoint
never runs with silently wrong numerics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midalign.errors import MidalignError

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
SUPPORTED_ROPE_TYPES = ("default", "llama3")


class ConfigError(MidalignError, ValueError):
    """A config.json that midalign cannot run faithfully."""


@dataclass(frozen=True)
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # bias on q, k, v (Qwen2: always; Llama: `attention_bias`)
    o_proj_bias: bool = False  # Llama's `attention_bias` also puts a bias on o_proj; Qwen2 never does
    mlp_bias: bool = False
    max_position_embeddings: int = 8192
    source: str = field(default="<dict>", compare=False)  # where it was read from, for error messages

    @classmethod
    def from_hf(cls, path_or_dict: str | Path | dict[str, Any]) -> "ModelConfig":
        """Read a HF config: a dict, a ``config.json`` file, or a folder holding one."""
        if isinstance(path_or_dict, dict):
            raw, source = path_or_dict, "<dict>"
        else:
            path = Path(path_or_dict)
            if path.is_dir():
                path = path / "config.json"
            if not path.is_file():
                raise ConfigError(f"{path}: no config.json here; point at a HuggingFace model folder")
            try:
                raw = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e
            source = str(path)
        return cls._from_dict(raw, source)

    @classmethod
    def _from_dict(cls, raw: dict[str, Any], source: str) -> "ModelConfig":
        def need(key: str) -> Any:
            if key not in raw:
                raise ConfigError(f"{source}: missing key '{key}'")
            return raw[key]

        model_type = need("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"{source}: model_type '{model_type}' is not supported; midalign implements "
                f"{', '.join(SUPPORTED_MODEL_TYPES)} (Llama 3.x, Qwen2/2.5)"
            )
        if raw.get("use_sliding_window"):
            raise ConfigError(f"{source}: use_sliding_window=true is not supported; set it to false")
        hidden, heads = need("hidden_size"), need("num_attention_heads")
        # Newer transformers nest RoPE settings in `rope_parameters`; older ones keep `rope_theta` and
        # `rope_scaling` at the top level.
        rope = dict(raw.get("rope_parameters") or {})
        theta = rope.get("rope_theta", raw.get("rope_theta", 10000.0))
        scaling = raw.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        if scaling is not None:
            scaling = dict(scaling)
            rope_type = scaling.get("rope_type", scaling.get("type", "default"))
            if rope_type not in SUPPORTED_ROPE_TYPES:
                raise ConfigError(
                    f"{source}: rope_scaling type '{rope_type}' is not supported "
                    f"(supported: {', '.join(SUPPORTED_ROPE_TYPES)})"
                )
            if rope_type == "default":
                scaling = None
            else:
                for key in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
                    if key not in scaling:
                        raise ConfigError(f"{source}: rope_scaling (llama3) is missing '{key}'")
                scaling = {"rope_type": "llama3", **{k: scaling[k] for k in (
                    "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}}
        is_qwen = model_type == "qwen2"
        return cls(
            model_type=model_type,
            vocab_size=need("vocab_size"),
            hidden_size=hidden,
            intermediate_size=need("intermediate_size"),
            num_hidden_layers=need("num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=raw.get("num_key_value_heads") or heads,
            head_dim=raw.get("head_dim") or hidden // heads,
            rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
            rope_theta=float(theta),
            rope_scaling=scaling,
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            attention_bias=True if is_qwen else bool(raw.get("attention_bias", False)),
            o_proj_bias=False if is_qwen else bool(raw.get("attention_bias", False)),
            mlp_bias=False if is_qwen else bool(raw.get("mlp_bias", False)),
            max_position_embeddings=raw.get("max_position_embeddings", 8192),
            source=source,
        )

    def to_hf(self) -> dict[str, Any]:
        """The config as a HF ``config.json`` dict (what transformers needs to build the same model)."""
        arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[self.model_type]
        out: dict[str, Any] = {
            "architectures": [arch],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": "silu",
        }
        if self.model_type == "llama":
            out["attention_bias"] = self.attention_bias
            out["mlp_bias"] = self.mlp_bias
        return out

    def validate_layer(self, layer: int, what: str = "layer") -> int:
        """Check a HF hidden-state index (0 = embeddings, i = output of decoder layer i)."""
        if not 0 <= layer <= self.num_hidden_layers:
            raise ValueError(
                f"{what} {layer} is out of range: this model has {self.num_hidden_layers} decoder layers, "
                f"so valid indices are 0..{self.num_hidden_layers} (0 = embedding output)"
            )
        return layer

