"""LoRA (Hu et al., 2021) by module replacement, as the paper fine-tunes every model (App. D.1).

`LoRALinear` keeps the base `weight`/`bias` on itself, so a model's checkpoint keys are the same with
and without LoRA; the low-rank update lives in `lora_A` [r, in] and `lora_B` [out, r]:

    y = x Wᵀ + b + s · dropout(x) Aᵀ Bᵀ,   s = alpha / r   (rsLoRA: alpha / √r)

A is initialised Kaiming-uniform (a = √5) and B with zeros, so training starts from the base model.
Merging the update into W is explicit (`merge()` / `unmerge()`), never a side effect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The paper's choice: every attention and MLP projection.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoRAConfig:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    targets: tuple[str, ...] = field(default=DEFAULT_TARGETS)
    use_rslora: bool = False

    @property
    def scaling(self) -> float:
        return self.alpha / math.sqrt(self.r) if self.use_rslora else self.alpha / self.r


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, scaling: float, dropout: float):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias  # same names as nn.Linear: checkpoint keys unchanged
        device = base.weight.device
        # LoRA weights stay fp32 whatever the base dtype (bf16 on CUDA): small, and trained with Adam.
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=device, dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, r, device=device, dtype=torch.float32))
        self.scaling = scaling
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear and PEFT initialise A
        nn.init.zeros_(self.lora_B)  # B = 0: the update starts at zero

    def delta_weight(self, out: Tensor | None = None) -> Tensor:
        """The update s · B A, shape [out, in], fp32; computed into `out` (fp32, that shape) when given."""
        if out is None:
            return self.scaling * (self.lora_B @ self.lora_A)
        return torch.mm(self.lora_B, self.lora_A, out=out).mul_(self.scaling)

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.merged:
            return y
        z = self.dropout(x).to(self.lora_A.dtype) @ self.lora_A.T @ self.lora_B.T  # (…, out)
        return y + (self.scaling * z).to(y.dtype)

    @torch.no_grad()
    def merge(self, scratch: Tensor | None = None) -> None:
        """W += s·BA (in the weight's dtype). A weight that still maps its checkpoint file's pages
        (`file_backed`, set by midalign.checkpoint) gets the sum in new memory instead: written in place, each
        page would be copied on its first write, several times the cost of the sum (docs/performance.md).
        scratch: an fp32 buffer of at least out × in elements for BA, reused across modules by `merge_lora`
        instead of a new weight-sized product per module."""
        if not self.merged:
            if getattr(self.weight, "file_backed", False):
                self.weight = nn.Parameter(self.weight + self._delta(scratch), requires_grad=False)
            else:
                self.weight.add_(self._delta(scratch))
            self.merged = True

    @torch.no_grad()
    def unmerge(self, scratch: Tensor | None = None) -> None:
        if self.merged:
            self.weight.sub_(self._delta(scratch))
            self.merged = False

    def _delta(self, scratch: Tensor | None) -> Tensor:
        out = scratch[:self.weight.numel()].view(self.weight.shape) if scratch is not None else None
        return self.delta_weight(out).to(self.weight.dtype)  # rounded to the weight's dtype first, then added

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.lora_A.shape[0]}, scaling={self.scaling}"


def apply_lora(model: nn.Module, config: LoRAConfig = LoRAConfig()) -> list[str]:
    """Replace every nn.Linear whose last name part is in `config.targets`; freeze everything else.

    Returns the replaced module names. Raises if a target matches no module.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    replaced, seen = [], set()
    for name, module in list(model.named_modules()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf in config.targets and isinstance(module, nn.Linear):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            lora = LoRALinear(module, config.r, config.scaling, config.dropout)
            setattr(parent, leaf, lora.train(module.training))  # keep the model's train/eval mode
            replaced.append(name)
            seen.add(leaf)
    missing = set(config.targets) - seen
    if missing:
        raise ValueError(f"LoRA targets {sorted(missing)} match no linear layer in this model; "
                         f"available: {sorted({n.rsplit('.', 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})}")
    return replaced


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> None:
    """Fold every LoRA update into its base weight (inference at the base model's cost). One fp32 buffer
    holds each module's BA in turn (docs/performance.md: a fresh weight-sized product per module cost more
    than the arithmetic)."""
    _each(model, "merge")


def unmerge_lora(model: nn.Module) -> None:
    """Undo `merge_lora` (W − s·BA: equal to the unmerged W up to one rounding of the weight's dtype)."""
    _each(model, "unmerge")


def _each(model: nn.Module, action: str) -> None:
    modules = list(lora_modules(model).values())
    if not modules:
        return
    scratch = torch.empty(max(m.weight.numel() for m in modules), dtype=torch.float32, device=modules[0].weight.device)
    for module in modules:
        getattr(module, action)(scratch)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
