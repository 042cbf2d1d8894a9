"""midalign: middle-layer representation alignment for cross-lingual transfer (Liu & Niehues, ACL 2025)."""

from midalign.checkpoint import load_model, resolve_model_dir
from midalign.config import ModelConfig
from midalign.tokenizer import ChatTokenizer

__all__ = ["ChatTokenizer", "ModelConfig", "load_model", "resolve_model_dir"]
