"""Finding and loading checkpoints: a local HF folder, an offline registry alias, or a hub repo id.

Weights are read only from safetensors (never pickles), the model is built on the meta device and
filled strictly: every tensor in the checkpoint is used, every model tensor is found, every shape
matches, or the load stops with a list of what is wrong.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from midalign.config import ModelConfig
from midalign.errors import CheckpointError
from midalign.model import CausalLM
from midalign.precision import resolve_dtype
from midalign.registry import REGISTRY, ensure_registry_model
from midalign.tokenizer import ChatTokenizer

# What a model folder needs; everything else in a hub repo (pickles, GGUF, ONNX, …) is never fetched.
HUB_FILES = [
    "config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
]
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """A folder holding config.json + safetensors for a local path, offline alias or hub id."""

    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path}: folder has no config.json; point at a HuggingFace model folder")
        return path
    if name in REGISTRY:
        return ensure_registry_model(name)
    if path.exists() or name.startswith((".", "/", "~")) or not HUB_ID.fullmatch(name):
        raise CheckpointError(
            f"model '{name}' is neither a local model folder, an offline alias "
            f"({', '.join(REGISTRY)}), nor a hub repo id of the form 'org/name'"
        )
    return hub_download(name)


def hub_download(repo_id: str) -> Path:
    """Fetch config, safetensors, tokenizer and generation files of a hub repo (honours HF_TOKEN, HF_HUB_OFFLINE)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    hint = (f"the hub repo '{repo_id}' could not be fetched. With no network, download it elsewhere and pass "
            f"its folder, or use an offline alias (python -m midalign.registry list)")
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except GatedRepoError as e:
        raise CheckpointError(f"'{repo_id}' is gated: accept its licence on the hub and set HF_TOKEN ({e})") from e
    except RepositoryNotFoundError as e:
        raise CheckpointError(f"'{repo_id}' does not exist on the hub (or is private: set HF_TOKEN)") from e
    except LocalEntryNotFoundError as e:
        raise CheckpointError(f"{hint} (offline, and not in the local hub cache)") from e
    except (HfHubHTTPError, OSError, ValueError) as e:  # connection errors are OSErrors underneath
        raise CheckpointError(f"{hint}: {type(e).__name__}: {e}") from e
    if not list(folder.glob("*.safetensors")):
        raise CheckpointError(f"hub repo '{repo_id}' has no safetensors weights; midalign never loads pickled "
                              f"(.bin/.pt) weights. Convert it to safetensors first")
    return folder


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files of a model folder: sharded (via the index) or a single model.safetensors."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index}: not a safetensors index (needs a 'weight_map' object): {e}") from e
        files = [folder / f for f in dict.fromkeys(weight_map.values())]
    else:
        files = [folder / "model.safetensors"]
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{f}: weight file missing from {folder}; re-download or re-convert the model")
    return files


def load_state_dict(model: CausalLM, folder: Path, device: torch.device, dtype: torch.dtype) -> None:
    """Fill a meta-device model from the folder's safetensors, strictly, converting to device/dtype."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    tied = model.config.tie_word_embeddings
    if tied:
        expected.pop("lm_head.weight")
    state: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    wrong_shape: dict[str, str] = {}
    mapped: set[str] = set()  # tensors left on the memory-mapped file's pages (no conversion)
    for path in safetensors_files(folder):
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():
                    if key not in expected:
                        if not (tied and key == "lm_head.weight"):  # some tied checkpoints store a copy
                            unexpected.append(f"{key} (in {path.name})")
                        continue
                    t = f.get_slice(key)
                    shape = tuple(t.get_shape())
                    if shape != tuple(expected[key]):
                        wrong_shape[key] = f"{key}: checkpoint {shape}, model {tuple(expected[key])}"
                        continue
                    tensor = f.get_tensor(key)
                    state[key] = tensor.to(device=device, dtype=dtype)
                    if state[key] is tensor and device.type == "cpu":
                        mapped.add(key)
        except SafetensorError as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e}); it is truncated or "
                                  f"corrupt — delete it and download/convert again") from e
    missing = sorted(set(expected) - set(state) - set(wrong_shape))
    if missing or unexpected or wrong_shape:
        lines = [f"{folder}: checkpoint does not fit the model built from its config.json"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", list(wrong_shape.values()))):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:8]) + (" …" if len(items) > 8 else ""))
        raise CheckpointError("\n".join(lines))
    if tied:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if tied:  # assign=True wraps each tensor in its own Parameter: tie them again
        model.lm_head.weight = model.model.embed_tokens.weight
    for name, p in model.named_parameters():  # their pages are copied on first write (lora.merge avoids that)
        p.file_backed = name in mapped


def load_model(name_or_path: str | os.PathLike, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None) -> CausalLM:
    """Load a Llama/Qwen2 checkpoint (folder, alias or hub id) in eval mode; fp32 on CPU, bf16 on CUDA."""
    folder = resolve_model_dir(name_or_path)
    config = ModelConfig.from_hf(folder)
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or resolve_dtype(None, device)
    with torch.device("meta"):
        model = CausalLM(config)
    load_state_dict(model, folder, device, dtype)
    model.name_or_path = str(name_or_path)
    return model.eval()


def load_model_and_tokenizer(name_or_path: str | os.PathLike, device: str | None = None, dtype: str | None = None,
                             released_template: bool = False) -> tuple[CausalLM, ChatTokenizer]:
    """A script's model and tokenizer from its --model, --device (default: cuda when available) and --dtype
    (default: bf16 on cuda, fp32 on cpu) flags."""
    folder = resolve_model_dir(name_or_path)
    device = torch.device(device) if device else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu")
    model = load_model(folder, device, resolve_dtype(dtype, device))
    local = Path(name_or_path).expanduser()
    # a local folder is recorded absolute (an adapter's base model then matches from any working folder)
    model.name_or_path = str(local.resolve()) if local.exists() else str(name_or_path)
    return model, ChatTokenizer(folder, released_template)


def save_checkpoint(model: CausalLM, source: Path, out: str | os.PathLike, max_shard_bytes: int = 2 << 30) -> None:
    """Write `model` as an HF folder (safetensors, sharded past `max_shard_bytes`) with the source's
    config, tokenizer and generation files; atomically. LoRA tensors are never written: merge first."""
    import shutil

    from safetensors.torch import save_file

    from midalign.io import atomic_dir

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if ".lora_" not in k}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight")
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    with atomic_dir(Path(out)) as tmp:
        if len(shards) == 1:
            save_file(shards[0], str(tmp / "model.safetensors"), metadata={"format": "pt"})
        else:
            weight_map = {}
            for i, shard in enumerate(shards, start=1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / name), metadata={"format": "pt"})
                weight_map.update(dict.fromkeys(shard, name))
            total = sum(t.numel() * t.element_size() for t in state.values())
            (tmp / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                     "special_tokens_map.json", "chat_template.jinja"):
            if (source / name).is_file():
                shutil.copy2(source / name, tmp / name)
