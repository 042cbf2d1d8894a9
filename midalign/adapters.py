"""LoRA adapters on disk in the PEFT format, and merging several adapters (paper §6.3).

Files: `adapter_config.json` + `adapter_model.safetensors` with PEFT's key names
(`base_model.model.<module>.lora_A.weight`), so adapters move freely between midalign and peft.
Every write goes to a temporary folder that is renamed into place.

Merging (paper §6.3: a task adapter and a separately trained alignment adapter, task weight 0.9), as a
peft user does it with `add_weighted_adapter` (`merge_adapters`, tested against peft):
- `linear`: each factor scaled by √(wᵢsᵢ) and summed, A = Σ √(wᵢsᵢ) Aᵢ, B = Σ √(wᵢsᵢ) Bᵢ (sᵢ = alphaᵢ/rᵢ,
  merged scaling 1). The update B A holds the wanted wᵢsᵢBᵢAᵢ plus cross terms √(wᵢsᵢwⱼsⱼ)(BᵢAⱼ + BⱼAᵢ):
  what averaging LoRA weights does, not the weighted average of the updates.
- `cat`: the exact weighted sum of updates Σ wᵢsᵢBᵢAᵢ, by stacking ranks: A = [w₁s₁A₁; w₂s₂A₂; …]
  (rank r₁ + r₂ + …), B = [B₁ B₂ …], scaling 1. Different ranks are fine here.

For inference (`load_adapter(..., merge=True)`) the update is folded into the base weights in memory
(`LoRALinear.merge`), so a model with an adapter costs what the base model costs; the adapter's files
are only read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from midalign.cache import cache_dir
from midalign.errors import MidalignError
from midalign.io import atomic_dir
from midalign.lora import LoRAConfig, apply_lora, lora_modules, merge_lora
from midalign.registry import REGISTRY

PEFT_PREFIX = "base_model.model."


class AdapterError(MidalignError, ValueError):
    """An adapter that cannot be read, or does not fit the model or the other adapters."""


@dataclass
class Adapter:
    """LoRA weights of one adapter: module name → (A [r, in], B [out, r]), with its config and base."""
    config: LoRAConfig
    base_model: str
    weights: dict[str, tuple[Tensor, Tensor]]


def adapter_from_model(model: nn.Module, config: LoRAConfig) -> Adapter:
    weights = {name: (m.lora_A.detach().cpu().clone(), m.lora_B.detach().cpu().clone())
               for name, m in lora_modules(model).items()}
    if not weights:
        raise AdapterError("the model has no LoRA layers to save")
    return Adapter(config, getattr(model, "name_or_path", ""), weights)


def save_adapter(adapter: Adapter, folder: str | Path) -> None:
    """Write `adapter_config.json` + `adapter_model.safetensors` (PEFT format), atomically."""
    c = adapter.config
    peft_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": adapter.base_model,
        "r": c.r, "lora_alpha": c.alpha, "lora_dropout": c.dropout, "target_modules": sorted(c.targets),
        "bias": "none", "use_rslora": c.use_rslora, "use_dora": False, "modules_to_save": None,
        "fan_in_fan_out": False, "init_lora_weights": True, "inference_mode": True,
    }
    tensors = {}
    for name, (a, b) in adapter.weights.items():
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = a.contiguous()
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = b.contiguous()
    with atomic_dir(Path(folder)) as tmp:
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(peft_config, indent=2))


def read_adapter(folder: str | Path) -> Adapter:
    """Read a PEFT LoRA adapter folder; anything midalign cannot represent exactly is an error."""
    folder = Path(folder)
    cfg_path, weights_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    for p in (cfg_path, weights_path):
        if not p.is_file():
            raise AdapterError(f"{p}: missing; an adapter folder holds adapter_config.json and "
                               f"adapter_model.safetensors (PEFT format)")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise AdapterError(f"{cfg_path}:{e.lineno}: not valid JSON ({e.msg})") from e
    if raw.get("peft_type") != "LORA":
        raise AdapterError(f"{cfg_path}: peft_type is {raw.get('peft_type')!r}; only LORA adapters are supported")
    unsupported = {"use_dora": False, "bias": "none", "modules_to_save": None, "fan_in_fan_out": False}
    for key, ok in unsupported.items():
        if raw.get(key, ok) not in (ok, [] if ok is None else ok):
            raise AdapterError(f"{cfg_path}: '{key}' = {raw[key]!r} is not supported (needs {ok!r})")
    for key in ("rank_pattern", "alpha_pattern", "layers_to_transform"):
        if raw.get(key):
            raise AdapterError(f"{cfg_path}: '{key}' is set; per-layer ranks/layers are not supported")
    targets = raw.get("target_modules")
    if isinstance(targets, str) or not targets:
        raise AdapterError(f"{cfg_path}: 'target_modules' must be a list of module names, got {targets!r}")
    config = LoRAConfig(r=int(raw["r"]), alpha=float(raw["lora_alpha"]), dropout=float(raw.get("lora_dropout", 0.0)),
                        targets=tuple(sorted(targets)), use_rslora=bool(raw.get("use_rslora", False)))
    try:
        tensors = load_file(str(weights_path))
    except SafetensorError as e:
        raise AdapterError(f"{weights_path}: unreadable safetensors ({e}); the file is truncated or corrupt") from e
    weights: dict[str, list] = {}
    for key, t in tensors.items():
        if not key.startswith(PEFT_PREFIX) or not key.endswith((".lora_A.weight", ".lora_B.weight")):
            raise AdapterError(f"{weights_path}: unexpected tensor '{key}' (only LoRA A/B weights are supported)")
        name, part = key[len(PEFT_PREFIX):].rsplit(".", 2)[0], key.rsplit(".", 2)[1]
        weights.setdefault(name, [None, None])[part == "lora_B"] = t.float()
    incomplete = [n for n, (a, b) in weights.items() if a is None or b is None]
    if incomplete:
        raise AdapterError(f"{weights_path}: A or B missing for {incomplete[:4]}")
    broken = [n for n, (a, b) in weights.items() if not (torch.isfinite(a).all() and torch.isfinite(b).all())]
    if broken:
        raise AdapterError(f"{weights_path}: NaN or inf in {len(broken)} modules ({', '.join(broken[:3])}); the "
                           f"adapter is broken (a diverged training or a bad merge): use another checkpoint")
    return Adapter(config, raw.get("base_model_name_or_path") or "", {n: (a, b) for n, (a, b) in weights.items()})


def load_adapter(model: nn.Module, folder: str | Path, check_base: bool = True, merge: bool = False) -> LoRAConfig:
    """Apply the adapter in `folder` to `model` (adding LoRA layers if needed); strict on names and shapes.

    merge: fold s·BA into the base weights (inference only: the cost of the base model, no dropout; the
    model must not be trained afterwards)."""
    adapter = read_adapter(folder)
    if check_base:
        ours = getattr(model, "name_or_path", "")
        if adapter.base_model and ours and not _same_model(adapter.base_model, ours):
            raise AdapterError(f"{folder}: adapter was trained on '{adapter.base_model}', the model is '{ours}'. "
                               f"Load the matching base model with --model (a folder and its offline alias count as the "
                               f"same model)")
    if not lora_modules(model):
        apply_lora(model, adapter.config)
    load_adapter_weights(model, adapter, where=str(folder))
    if merge:
        merge_lora(model)
    return adapter.config


def load_adapter_weights(model: nn.Module, adapter: Adapter, where: str = "adapter") -> None:
    modules = lora_modules(model)
    missing = sorted(set(modules) - set(adapter.weights))
    unexpected = sorted(set(adapter.weights) - set(modules))
    if missing or unexpected:
        raise AdapterError(f"{where}: adapter modules do not match the model's LoRA layers; "
                           f"missing {missing[:4]}{' …' if len(missing) > 4 else ''}, "
                           f"unexpected {unexpected[:4]}{' …' if len(unexpected) > 4 else ''}")
    for name, m in modules.items():
        a, b = adapter.weights[name]
        if a.shape != m.lora_A.shape or b.shape != m.lora_B.shape:
            raise AdapterError(f"{where}: {name}: adapter A {tuple(a.shape)}, B {tuple(b.shape)} do not fit the "
                               f"model's A {tuple(m.lora_A.shape)}, B {tuple(m.lora_B.shape)} — another base "
                               f"model or rank")
        with torch.no_grad():
            m.lora_A.copy_(a)
            m.lora_B.copy_(b)
        m.scaling = adapter.config.scaling


def _same_model(a: str, b: str) -> bool:
    """Whether two model references name the same weights: equal, or the same folder once offline
    aliases are mapped to their cache folders (nothing is downloaded to decide)."""

    def folder(name: str) -> str:
        if name in REGISTRY:
            return str((cache_dir() / "models" / name).resolve())
        path = Path(name).expanduser()
        return str(path.resolve()) if path.exists() else name

    return a == b or folder(a) == folder(b)


# --------------------------------------------------------------------------------------- merging


def merge_adapters(adapters: list[Adapter], weights: list[float], method: str) -> Adapter:
    """Combine adapters as peft's `add_weighted_adapter` does (paper §6.3; docs/method.md §5); scaling 1.

    linear: A = Σ sign(wᵢsᵢ)·√|wᵢsᵢ|·Aᵢ, B = Σ √|wᵢsᵢ|·Bᵢ (equal ranks). The update BA holds the wanted
            wᵢsᵢBᵢAᵢ plus cross terms √(w₁s₁w₂s₂)(B₁A₂ + B₂A₁): not the weighted average of the updates.
    cat:    A = [w₁s₁A₁; w₂s₂A₂; …], B = [B₁ B₂ …] (rank Σrᵢ): exactly Σ wᵢsᵢBᵢAᵢ.
    """
    if len(adapters) != len(weights) or len(adapters) < 2:
        raise AdapterError(f"need at least two adapters and one weight each (got {len(adapters)} and {len(weights)})")
    first = adapters[0]
    for i, ad in enumerate(adapters[1:], start=2):
        if ad.base_model and first.base_model and not _same_model(ad.base_model, first.base_model):
            raise AdapterError(f"adapter {i} was trained on '{ad.base_model}', adapter 1 on '{first.base_model}'")
        if set(ad.weights) != set(first.weights):
            only = lambda a, b: ", ".join(sorted(set(a.weights) - set(b.weights))[:3]) or "none"
            raise AdapterError(f"adapter {i} adapts other modules than adapter 1 (only in adapter 1: "
                               f"{only(first, ad)}; only in adapter {i}: {only(ad, first)}); merge adapters of the "
                               f"same model with the same --lora-targets")
    ws = [w * ad.config.scaling for ad, w in zip(adapters, weights)]  # wᵢsᵢ
    if method == "linear":
        if len({ad.config.r for ad in adapters}) > 1:
            raise AdapterError("'linear' needs equal ranks in all adapters (as peft); use --method cat")
        root = [math.sqrt(abs(x)) for x in ws]
        merged = {name: (sum(math.copysign(r, x) * ad.weights[name][0] for ad, r, x in zip(adapters, root, ws)),
                         sum(r * ad.weights[name][1] for ad, r in zip(adapters, root)))
                  for name in first.weights}
        r = first.config.r
    elif method == "cat":
        merged = {name: (torch.cat([x * ad.weights[name][0] for ad, x in zip(adapters, ws)], dim=0),
                         torch.cat([ad.weights[name][1] for ad in adapters], dim=1))
                  for name in first.weights}
        r = sum(ad.config.r for ad in adapters)
    else:
        raise AdapterError(f"unknown merge method '{method}' (linear, cat)")
    if not all(torch.isfinite(a).all() and torch.isfinite(b).all() for a, b in merged.values()):
        raise AdapterError(f"the {method} merge with weights {weights} gives NaN or inf values")
    config = LoRAConfig(r=r, alpha=float(r), dropout=first.config.dropout, targets=first.config.targets)
    return Adapter(config, first.base_model, merged)  # scaling alpha / r = 1
