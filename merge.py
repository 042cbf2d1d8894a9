"""Merge LoRA adapters (paper §6.3: a task adapter and a separately trained alignment adapter).

    python merge.py --adapters runs/task/best runs/align/best --weights 0.9 0.1 --method cat --out merged

--method linear   peft's add_weighted_adapter(combination_type="linear"), what a peft user of the paper
                  ran: A = sum sqrt(w_i s_i) A_i, B = sum sqrt(w_i s_i) B_i (equal ranks). Its update
                  holds w_i s_i B_i A_i plus cross terms B_i A_j (i != j): not the weighted average.
--method cat      peft's "cat": the exact weighted sum of updates sum_i w_i s_i B_i A_i, by
                  concatenating ranks (rank r1 + r2 + ...; adapters of different ranks are fine).
--into-base       also fold the merged update into the base weights and write a full HF checkpoint
                  that transformers and midalign both load.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from midalign.adapters import AdapterError, load_adapter_weights, merge_adapters, read_adapter, save_adapter
from midalign.checkpoint import load_model, resolve_model_dir, save_checkpoint
from midalign.errors import MidalignError
from midalign.lora import apply_lora, lora_modules


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters", nargs="+", required=True, type=Path, help="adapter folders (PEFT format)")
    parser.add_argument("--weights", nargs="+", type=float, help="one weight per adapter (default: equal)")
    parser.add_argument("--method", choices=["linear", "cat"], default="linear",
                        help="linear: peft's linear (√(w·s) on each factor; cross terms); "
                             "cat: peft's cat, the exact weighted sum of updates by concatenating ranks")
    parser.add_argument("--out", required=True, type=Path, help="output folder (written atomically)")
    parser.add_argument("--into-base", action="store_true",
                        help="write a full merged HF checkpoint instead of an adapter")
    parser.add_argument("--model", help="base model for --into-base (default: the adapters' base_model_name_or_path)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    weights = args.weights or [1.0 / len(args.adapters)] * len(args.adapters)
    adapters = [read_adapter(a) for a in args.adapters]
    merged = merge_adapters(adapters, weights, args.method)
    if not args.into_base:
        save_adapter(merged, args.out)
        print(f"wrote {args.method}-merged adapter (rank {merged.config.r}) to {args.out}")
        return
    base = args.model or merged.base_model
    if not base:
        raise AdapterError("the adapters record no base model; pass --model")
    folder = resolve_model_dir(base)
    model = load_model(folder, device="cpu", dtype=torch.float32)
    apply_lora(model, merged.config)
    load_adapter_weights(model, merged, where=" + ".join(map(str, args.adapters)))  # checks names and shapes
    for module in lora_modules(model).values():
        module.merge()
    save_checkpoint(model, folder, args.out)
    print(f"wrote base '{base}' + {args.method}-merged adapters as a full checkpoint to {args.out}")


if __name__ == "__main__":
    try:
        main()
    except MidalignError as e:
        sys.exit(f"error: {e}")
