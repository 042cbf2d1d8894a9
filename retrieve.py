"""Layer-wise translation retrieval (paper §2, Fig. 1, Table 2 "Retrieval Acc."; docs/method.md §6).

    python retrieve.py                                   # default model, UDHR held-out articles, 35 languages
    python retrieve.py --adapter runs/demo/best --out runs/retrieval-aligned
    python retrieve.py --compare runs/retrieval/results.json runs/retrieval-aligned/results.json
    python retrieve.py --correlate runs/retrieval/results.json runs/eval/scores.json

For every requested layer and pooling, each of the N(N-1) language directions retrieves translations
with LASER's ratio margin (k = 4). Writes results.json, results.csv and, when matplotlib is installed,
accuracy-vs-layer and language-by-layer plots.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from midalign.align import POOLS
from midalign.cli import add_model_arguments, positive_int, run
from midalign.evaluation import load_for_inference
from midalign.data.sources import ensure
from midalign.data.udhr import DEFAULT_VERSIONS, parallel_sentences
from midalign.errors import DataError
from midalign.io import (PROVENANCE, atomic_write_text, check_output_folder, check_writable_folder, output_dir,
                         write_provenance)
from midalign.registry import DEFAULT_MODEL
from midalign.retrieval import MARGINS, layer_retrieval
from midalign.stats import pearson


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p.add_argument_group("model"), DEFAULT_MODEL)
    g = p.add_argument_group("data")
    g.add_argument("--data", default="udhr",
                   help="'udhr' (offline multiway text), 'flores' (FLORES-200 dev, downloaded on first use), a "
                        "FLORES-200 folder (<code>.dev files, or its root with dev/), or a multiway JSONL file "
                        "({lang: sentence} per line)")
    g.add_argument("--split", default="test", choices=["train", "dev", "test"], help="UDHR articles to use")
    g.add_argument("--langs", nargs="+", help="languages (default: the 35 UDHR languages, or all in --data)")
    g = p.add_argument_group("retrieval")
    g.add_argument("--layers", default="all", help="'all' (0..L) or a comma list of HF hidden-state indices")
    g.add_argument("--pool", nargs="+", choices=list(POOLS), default=["mean", "mean-skip-first"],
                   help="pooling(s), all computed from the same forward pass")
    g.add_argument("--margin", choices=MARGINS, default="ratio", help="ratio margin (LASER xsim) or plain cosine")
    g.add_argument("--k", type=positive_int, default=4, help="neighbourhood size of the margin")
    g.add_argument("--batch-size", type=positive_int, default=16, help="sentences per forward pass")
    g = p.add_argument_group("output and analysis")
    g.add_argument("--out", type=Path, default=Path("runs/retrieval"), help="output folder (written whole, atomically)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an earlier retrieval in --out (never anything else, never an input)")
    g.add_argument("--compare", nargs="+", type=Path, metavar="RESULTS",
                   help="only plot accuracy vs layer for these results.json files (overlaid) into --out")
    g.add_argument("--correlate", nargs=2, type=Path, metavar=("RESULTS", "SCORES"),
                   help="only correlate per-language retrieval accuracy with downstream scores (Fig. 1b)")
    g.add_argument("--layer", type=int,
                   help="--correlate: the layer whose per-language accuracy is correlated (default: the middle, "
                        "L/2, as Fig. 1b)")
    g.add_argument("--permutations", type=positive_int, default=10000, help="permutations for the correlation p-value")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------- data

def read_sentences(data: str, split: str, langs: list[str] | None) -> dict[str, list[str]]:
    """lang → sentences, row i of every language translating row i of the others."""
    if data == "udhr":
        return parallel_sentences(langs or list(DEFAULT_VERSIONS), split)
    path = ensure("flores")[0] if data == "flores" else Path(data)
    if path.is_dir():
        folder = path / "dev" if (path / "dev").is_dir() else path
        files = {f.name[: -len(".dev")]: f for f in sorted(folder.glob("*.dev"))}
        if not files:
            raise DataError(f"{folder}: no FLORES-200 <code>.dev files here (e.g. eng_Latn.dev)")
        langs = langs or list(files)
        missing = [lang for lang in langs if lang not in files]
        if missing:
            raise DataError(f"{folder}: no {', '.join(l + '.dev' for l in missing)}")
        out = {lang: files[lang].read_text(encoding="utf-8").rstrip("\n").split("\n") for lang in langs}
    elif path.is_file():
        out: dict[str, list[str]] = {}
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from e
            wanted = langs or list(row)
            if not isinstance(row, dict) or any(not isinstance(row.get(l), str) for l in wanted):
                raise DataError(f"{path}:{n}: expected an object with a sentence for each of {', '.join(wanted)}")
            langs = wanted
            for lang in wanted:
                out.setdefault(lang, []).append(row[lang])
    else:
        raise DataError(f"--data {data}: neither 'udhr' nor an existing folder or JSONL file")
    sizes = {lang: len(s) for lang, s in out.items()}
    if len(set(sizes.values())) != 1:
        raise DataError(f"{data}: languages have different numbers of sentences: {sizes}")
    return out


def parse_layers(spec: str, n_layers: int) -> list[int]:
    if spec == "all":
        return list(range(n_layers + 1))
    try:
        layers = sorted({int(x) for x in spec.split(",")})
    except ValueError:
        raise DataError(f"--layers must be 'all' or a comma list of integers, got '{spec}'") from None
    if layers[0] < 0 or layers[-1] > n_layers:
        raise DataError(f"--layers {spec}: this model has hidden states 0..{n_layers}")
    return layers


# ---------------------------------------------------------------------------------------- results

def write_outputs(results: dict, out: Path) -> None:
    atomic_write_text(out / "results.json", json.dumps(results, indent=1, ensure_ascii=False))
    rows = [["pool", "layer", "source", "target", "accuracy"]]
    for pool, summary in results["pools"].items():
        for direction, accs in summary["per_direction"].items():
            s, t = direction.split("-", 1)
            rows.extend([pool, layer, s, t, f"{a:.4f}"] for layer, a in zip(results["layers"], accs))
    import io
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())


def print_table(results: dict) -> None:
    pools = list(results["pools"])
    print(f"\nretrieval accuracy (%), mean over {len(results['langs']) * (len(results['langs']) - 1)} directions, "
          f"{results['n_sentences']} sentences, margin {results['margin']}")
    print("layer  " + "  ".join(f"{p:>16s}" for p in pools))
    for i, layer in enumerate(results["layers"]):
        print(f"{layer:5d}  " + "  ".join(f"{100 * results['pools'][p]['per_layer'][i]:16.1f}" for p in pools))
    for p in pools:
        s = results["pools"][p]
        avg = "n/a" if s["paper_average"] is None else f"{100 * s['paper_average']:.1f}"
        print(f"{p}: paper average (even layers, no embeddings) {avg}; peak at layer {s['peak_layer']}")


def plot(results_list: list[tuple[str, dict]], out: Path) -> list[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed, so no plots (pip install matplotlib)", file=sys.stderr)
        return []
    written = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, res in results_list:
        for pool, s in res["pools"].items():
            ax.plot(res["layers"], [100 * a for a in s["per_layer"]], marker="o", ms=3, label=f"{label} ({pool})")
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("retrieval accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(out / "accuracy_vs_layer.png")
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    if len(results_list) == 1:
        res = results_list[0][1]
        for pool, s in res["pools"].items():
            langs = list(s["per_language"])
            grid = np.array([[100 * a for a in s["per_language"][lang]["as_source"]] for lang in langs])
            fig, ax = plt.subplots(figsize=(8, 0.22 * len(langs) + 1.5))
            im = ax.imshow(grid, aspect="auto", cmap="viridis")
            ax.set_yticks(range(len(langs)), langs, fontsize=7)
            ax.set_xticks(range(len(res["layers"])), res["layers"], fontsize=7)
            ax.set_xlabel("layer")
            ax.set_title(f"retrieval accuracy as source (%), {pool}", fontsize=9)
            fig.colorbar(im)
            fig.tight_layout()
            written.append(out / f"heatmap_{pool}.png")
            fig.savefig(written[-1], dpi=120)
            plt.close(fig)
    return written


def read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found; pass {what}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable ({e}); pass {what}") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); pass {what}") from e


def read_results(path: Path) -> dict:
    """A results.json written by retrieve.py, checked for what --compare and --correlate read."""
    what = "a results.json written by retrieve.py"
    results = read_json(path, what)
    pools = results.get("pools") if isinstance(results, dict) else None
    layers = results.get("layers") if isinstance(results, dict) else None
    if not isinstance(layers, list) or not isinstance(pools, dict) or not pools:
        raise DataError(f"{path}: no 'layers' list and 'pools' table: not {what}")
    for pool, s in pools.items():
        rows = s.get("per_language") if isinstance(s, dict) else None
        if (not isinstance(rows, dict) or len(s.get("per_layer") or []) != len(layers)
                or any(len(r.get("as_source", [])) != len(layers) or len(r.get("as_target", [])) != len(layers)
                       for r in rows.values())):
            raise DataError(f"{path}: pool '{pool}' has no accuracy per layer and language for its {len(layers)} "
                            f"layers: not {what}, or a damaged one")
    return results


def read_scores(path: Path) -> dict[str, float]:
    """{lang or direction: score}, from a scores.json of evaluate.py or a plain {lang: score} table."""
    what = "evaluate.py's scores.json or a {lang: score} JSON table"
    raw = read_json(path, what)
    scores = raw.get("per_language", raw) if isinstance(raw, dict) else None
    if not isinstance(scores, dict):
        raise DataError(f"{path}: expected {{lang: score}} or {{'per_language': {{lang: score}}}}")
    out = {}
    for unit, v in scores.items():
        value = v.get("score") if isinstance(v, dict) else v
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"{path}: the score of '{unit}' is {value!r}, not a number; pass {what}")
        out[unit] = float(value)
    return out


def correlate(results_path: Path, scores_path: Path, permutations: int, layer: int | None = None) -> dict:
    """Pearson r between per-language retrieval accuracy at one layer (default the middle one, Fig. 1b:
    the language as source and as target, averaged) and the downstream score; permutation p-value.
    MT scores per direction (`de-en`) count for the non-English language of the X→English direction."""
    results = read_results(results_path)
    scores = {k.removesuffix("-en"): v for k, v in read_scores(scores_path).items() if not k.startswith("en-")}
    layers = results["layers"]
    layer = max(layers) // 2 if layer is None else layer
    if layer not in layers:
        raise DataError(f"{results_path}: layer {layer} was not evaluated (layers {layers[0]}..{layers[-1]}); "
                        f"choose --layer among them")
    i = layers.index(layer)
    out = {}
    for pool, s in results["pools"].items():
        langs = [l for l in s["per_language"] if l in scores]
        if len(langs) < 3:
            raise DataError(f"{scores_path}: fewer than 3 languages shared with {results_path}")
        x = np.array([(s["per_language"][l]["as_source"][i] + s["per_language"][l]["as_target"][i]) / 2 for l in langs])
        y = np.array([scores[l] for l in langs])
        for name, values in (("retrieval accuracy", x), ("score", y)):
            if np.ptp(values) == 0:
                raise DataError(f"{pool}: the {name} at layer {layer} is the same for all {len(langs)} languages: "
                                f"no correlation to compute")
        r, p = pearson(x, y, permutations)
        out[pool] = {"layer": layer, "pearson_r": r, "p_value": p, "n_languages": len(langs), "languages": langs}
        print(f"{pool}: layer {layer}: Pearson r = {r:.3f} (permutation p = {p:.4f}, {len(langs)} languages)")
    return out


# -------------------------------------------------------------------------------------------- main

def own_file(name: str) -> bool:
    """What a retrieval writes into --out (its earlier output, replaced with --overwrite)."""
    return name in {"results.json", "results.csv", "accuracy_vs_layer.png", "correlation.json", PROVENANCE} or \
        (name.startswith("heatmap_") and name.endswith(".png"))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.correlate or args.compare:  # an analysis of earlier results: its own --out folder, written whole
        check_output_folder(args.out, args.correlate or args.compare, own_file, args.overwrite)
        check_writable_folder(args.out)
    if args.correlate:
        result = correlate(*args.correlate, args.permutations, args.layer)
        with output_dir(args.out) as tmp:
            atomic_write_text(tmp / "correlation.json", json.dumps(result, indent=1))
            write_provenance(tmp, correlate=args.correlate, layer=args.layer, permutations=args.permutations)
        print(f"wrote {args.out / 'correlation.json'}")
        return
    if args.compare:
        runs = [(str(p.parent.name or p), read_results(p)) for p in args.compare]
        with output_dir(args.out) as tmp:
            plots = plot(runs, tmp)
            write_provenance(tmp, compare=args.compare)
        print(f"wrote {', '.join(str(args.out / p.name) for p in plots) or 'no plot (matplotlib missing)'}")
        return
    start = time.perf_counter()
    sentences = read_sentences(args.data, args.split, args.langs)
    if len(sentences) < 2:
        raise DataError(f"retrieval needs at least two languages (got {', '.join(sentences) or 'none'}); add --langs")
    check_output_folder(args.out, [a for a in (args.adapter, args.data) if a and Path(a).exists()], own_file,
                        args.overwrite)
    check_writable_folder(args.out)  # before the embedding, not after
    model, tok = load_for_inference(args.model, args.adapter, args.device, args.dtype)
    layers = parse_layers(args.layers, model.config.num_hidden_layers)
    found = layer_retrieval(model, tok, sentences, layers, args.pool, args.k, args.margin, args.batch_size)
    forward_s = found.pop("forward_s")
    results = {"model": args.model, "adapter": str(args.adapter) if args.adapter else None, "data": args.data,
               "split": args.split if args.data == "udhr" else None, "margin": args.margin, "k": args.k, **found}
    total_s = time.perf_counter() - start
    results["timing"] = {"total_s": round(total_s, 1), "forward_s": round(forward_s, 1)}
    with output_dir(args.out) as tmp:  # the whole folder at once: no earlier run's plot stays beside the results
        write_outputs(results, tmp)
        plots = plot([(args.adapter.name if args.adapter else "base", results)], tmp)
        write_provenance(tmp, model=args.model, adapter=args.adapter, data=args.data, split=args.split,
                         langs=list(sentences), layers=layers, pools=args.pool, margin=args.margin, k=args.k)
    print_table(results)
    print(f"\n{total_s:.0f} s in all, {forward_s:.0f} s in forward passes; wrote {args.out}/results.json, "
          f"results.csv" + (f", {len(plots)} plot(s)" if plots else ""))


if __name__ == "__main__":
    run(main)
