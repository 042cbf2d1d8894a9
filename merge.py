"""Merge LoRA adapters (paper §6.3: a task adapter and a separately trained alignment adapter).

    python merge.py --adapters runs/task/best runs/align/best --weights 0.9 0.1 --method cat --out merged

--method linear   peft's add_weighted_adapter(combination_type="linear"), what a peft user of the paper
                  ran: A = sum sqrt(w_i s_i) A_i, B = sum sqrt(w_i s_i) B_i (equal ranks). Its update
                  holds w_i s_i B_i A_i plus cross terms B_i A_j (i != j): not the weighted average.
--method cat      peft's "cat": the exact weighted sum of updates sum_i w_i s_i B_i A_i, by
                  concatenating ranks (rank r1 + r2 + ...; adapters of different ranks are fine).
--into-base       also fold the merged update into the base weights and write a full HF checkpoint
                  that transformers and midalign both load.
--search W …      the paper's choice of the task weight (§6.3: 0.9 among 0.5, 0.7, 0.9 on the MASSIVE dev
                  set): merge with weights (W, 1 - W) for each W, score each merged model on --dev-data,
                  keep the best in --out; every weight's scores and predictions go to --out/search.json.

    python merge.py --adapters runs/slot/best runs/align/best --search 0.5 0.7 0.9 \
        --task slot --dev-data massive/ --limit 100 --out runs/merged
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from midalign.adapters import AdapterError, load_adapter_weights, merge_adapters, read_adapter, save_adapter
from midalign.checkpoint import load_model, load_model_and_tokenizer, resolve_model_dir, save_checkpoint
from midalign.cli import add_device_arguments, add_template_argument, finite_float, positive_int, run
from midalign.data.tasks import TASKS
from midalign.evaluation import load_examples
from midalign.io import PROVENANCE, check_output_folder, check_writable_folder, write_provenance
from midalign.merging import save_search, search_weight
from midalign.lora import apply_lora, merge_lora


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters", nargs="+", required=True, type=Path, help="adapter folders (PEFT format)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier merge output in --out (never anything else, never an input)")
    parser.add_argument("--weights", nargs="+", type=finite_float, help="one weight per adapter (default: equal)")
    parser.add_argument("--method", choices=["linear", "cat"], default="linear",
                        help="linear: peft's linear (√(w·s) on each factor; cross terms); "
                             "cat: peft's cat, the exact weighted sum of updates by concatenating ranks")
    parser.add_argument("--out", required=True, type=Path, help="output folder (written atomically)")
    parser.add_argument("--into-base", action="store_true",
                        help="write a full merged HF checkpoint instead of an adapter")
    parser.add_argument("--model", help="base model for --into-base and --search (default: the adapters' "
                                        "base_model_name_or_path)")
    g = parser.add_argument_group("weight search (two adapters: task first)")
    g.add_argument("--search", nargs="+", type=finite_float, metavar="W", help="task weights to try (the other gets 1 - W)")
    g.add_argument("--task", choices=sorted(TASKS), help="the task of --dev-data (midalign/data/tasks.py)")
    g.add_argument("--dev-data", nargs="+", type=Path,
                   help="dev files as evaluate.py --data reads them (MASSIVE: the 'dev' partition)")
    g.add_argument("--langs", nargs="+", help="dev languages (default: all in the data)")
    g.add_argument("--limit", type=positive_int, help="at most this many dev examples per language (per direction for MT)")
    g.add_argument("--max-new-tokens", type=positive_int, help="default: slot 128, mt 512, json 512")
    g.add_argument("--batch-size", type=positive_int, default=32,
                   help="prompts decoded together (32: the fastest per answer measured on a 2-core CPU)")
    add_template_argument(g)
    add_device_arguments(g)
    args = parser.parse_args(argv)
    if args.search and (len(args.adapters) != 2 or not args.task or not args.dev_data or args.weights or args.into_base):
        parser.error("--search takes exactly two --adapters (task, alignment), --task and --dev-data, and no "
                     "--weights or --into-base")
    return args


def search(args, adapters: list) -> None:
    """Merge with (w, 1 - w) for each w, score the merged model on the dev data, keep the best."""
    task = TASKS[args.task]
    examples = load_examples(task, args.dev_data, args.langs, args.limit, partition="dev")
    base = args.model or adapters[0].base_model
    if not base:
        raise AdapterError("the adapters record no base model; pass --model")
    model, tok = load_model_and_tokenizer(base, args.device, args.dtype, args.no_default_template)
    merged, record = search_weight(model, tok, adapters, args.search, args.method, task, examples,
                                   args.max_new_tokens or task.max_new_tokens, args.batch_size)
    save_search(args.out, merged, record)
    write_provenance(args.out, adapters=args.adapters, method=args.method, weights=[record["best_weight"],
                                                                                   1 - record["best_weight"]],
                     searched=list(record["weights"]))
    w = record["best_weight"]
    print(f"best task weight {w:g} (dev score {record['weights'][f'{w:g}']['score']:.2f}); wrote the merged adapter "
          f"and search.json to {args.out}")


# What merge.py writes into --out (an adapter, a search record, or a full checkpoint): an --out holding
# only these is its own earlier output, replaced with --overwrite; anything else there stops it.
OWN_FILES = {"adapter_config.json", "adapter_model.safetensors", "search.json", "config.json", "generation_config.json",
             "model.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "chat_template.jinja", PROVENANCE}


def own_file(name: str) -> bool:
    return name in OWN_FILES or re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", name) is not None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_output_folder(args.out, args.adapters, own_file, args.overwrite)
    inputs = sum(f.stat().st_size for a in args.adapters for f in Path(a).glob("*.safetensors"))
    check_writable_folder(args.out, inputs + (1 << 20), "the merged adapter")  # cat: the inputs' ranks summed
    weights = args.weights or [1.0 / len(args.adapters)] * len(args.adapters)
    adapters = [read_adapter(a) for a in args.adapters]
    if args.search:
        search(args, adapters)
        return
    merged = merge_adapters(adapters, weights, args.method)
    if not args.into_base:
        save_adapter(merged, args.out)
        write_provenance(args.out, adapters=args.adapters, weights=weights, method=args.method)
        print(f"wrote {args.method}-merged adapter (rank {merged.config.r}) to {args.out}")
        return
    base = args.model or merged.base_model
    if not base:
        raise AdapterError("the adapters record no base model; pass --model")
    folder = resolve_model_dir(base)
    weights_bytes = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    check_writable_folder(args.out, 2 * weights_bytes, "the merged model (fp32)")  # bf16 weights double in fp32
    model = load_model(folder, device="cpu", dtype=torch.float32)
    apply_lora(model, merged.config)
    load_adapter_weights(model, merged, where=" + ".join(map(str, args.adapters)))  # checks names and shapes
    merge_lora(model)
    save_checkpoint(model, folder, args.out)
    write_provenance(args.out, adapters=args.adapters, weights=weights, method=args.method, base=base)
    print(f"wrote base '{base}' + {args.method}-merged adapters as a full checkpoint to {args.out}")


if __name__ == "__main__":
    run(main)
