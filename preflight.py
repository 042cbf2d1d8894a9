"""Alignment preflight: can the contrastive loss work on this model, layer, pooling and τ? Forward passes
only, before any training (midalign/preflight.py; docs/method.md §9).

    python preflight.py                                   # default model, UDHR pairs of every language with English
    python preflight.py --pairs pairs.tsv --layer 16      # any pair file (TSV lang<TAB>sentence<TAB>english or JSONL)
    python preflight.py --model DIR --adapter runs/x/best --out runs/preflight-x

For every layer and pooling: cosine of translations and of non-translations, their separation (AUC), the
first token's share of the mean (the attention sink), and per τ the loss now against its chance level and
floor. Writes preflight.json, preflight.md and preflight.png into --out, and prints a verdict per pooling
at --layer (default: the middle, L/2).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from midalign.cli import add_model_arguments, positive_int, run
from midalign.data.assemble import alignment_pairs
from midalign.errors import DataError
from midalign.evaluation import load_for_inference
from midalign.io import atomic_write_text, check_writable_folder
from midalign.preflight import markdown, plot, preflight, summary
from midalign.registry import DEFAULT_MODEL


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p.add_argument_group("model"), DEFAULT_MODEL)
    g = p.add_argument_group("pairs and batches")
    g.add_argument("--pairs", nargs="+", type=Path,
                   help="pair files: TSV lang<TAB>sentence<TAB>english or JSONL {lang,text,en} (default: the UDHR "
                        "train articles of every language version, paired with English: the offline alignment data)")
    g.add_argument("--langs", nargs="+", help="only these languages' pairs")
    g.add_argument("--batch-size", type=positive_int, default=16, help="pairs per micro-batch: n of the loss (ln n at chance)")
    g.add_argument("--batches", type=positive_int, default=8, help="random micro-batches measured")
    g.add_argument("--layer", type=int, help="the layer the verdict speaks of (default: the middle, L/2)")
    g.add_argument("--seed", type=int, default=0, help="which random micro-batches")
    g.add_argument("--out", type=Path, default=Path("runs/preflight"), help="output folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    pairs, _ = alignment_pairs(args.pairs, None, args.langs)
    check_writable_folder(args.out)
    start = time.perf_counter()
    model, tok = load_for_inference(args.model, args.adapter, args.device, args.dtype)
    layer = model.config.num_hidden_layers // 2 if args.layer is None else args.layer
    if not 0 <= layer <= model.config.num_hidden_layers:
        raise DataError(f"--layer {layer} is out of range: this model has layers 0..{model.config.num_hidden_layers}")
    result = preflight(model, tok, pairs, args.batch_size, args.batches, args.seed)
    seconds = time.perf_counter() - start
    command = " ".join(["python preflight.py", *(sys.argv[1:] if argv is None else argv)]).replace(str(Path.home()), "~")
    result.update(model=args.model, adapter=str(args.adapter) if args.adapter else None, layer=layer,
                  seconds=round(seconds, 1), dtype=str(model.lm_head.weight.dtype).removeprefix("torch."),
                  command=command)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "preflight.json", json.dumps(result, indent=1))
    atomic_write_text(args.out / "preflight.md", markdown(result, layer, args.model, seconds, command))
    plot(result, args.out / "preflight.png", f"{args.model}: {result['n_pairs']} pairs, batch {args.batch_size}")
    print("\n".join(summary(result, layer)))
    print(f"{seconds:.0f} s; wrote {args.out}/preflight.json, preflight.md, preflight.png")


if __name__ == "__main__":
    run(main)
