"""midalign vs transformers + peft, side by side on the same machine, model, batch and precision.

    python bench/run.py                       # all workloads, default model, writes bench/RESULTS.md
    python bench/run.py --workloads align --reps 3

Each (workload, implementation) runs in its own fresh process — midalign first, then the peer, back
to back — with one warm-up and `--reps` timed repetitions; the table gives medians, the ratio
peer/midalign (> 1: midalign is faster) and peak memory (RSS on CPU, max allocated on CUDA).
Workloads (issue: benchmarks against the peer):
  task      LoRA task training step (forward + backward + AdamW, r 8 on all 7 projections), batch 8 × 128
            tokens, loss on the last 64 tokens of each row (the answer)
  align     alignment step at the middle layer, 32 pairs of real UDHR paragraphs of ≤ 48 tokens a side
            (sentence-length, like the paper's Tatoeba pairs); the peer runs the full model with
            output_hidden_states=True, as the official code does, but with logits_to_keep=1 — sparing
            it the LM head at every position that the official code computes (this favours the peer)
  generate  greedy generation, batch 8 prompts, 64 new tokens
  retrieve  embeddings of every layer for 64 real UDHR paragraphs (length-sorted batches of 16 for both; the
            peer with logits_to_keep=1)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from midalign.io import atomic_write_text  # noqa: E402
WORKLOADS = ("task", "align", "generate", "retrieve")
MAX_TOKENS = 48


def udhr_sentences(n: int, tok) -> list[tuple[str, str]]:
    """n real translation pairs (UDHR paragraphs of all articles, 12 languages) of at most MAX_TOKENS
    tokens a side — sentence-length inputs like the paper's Tatoeba pairs — with distinct English sides
    (no false negatives in a contrastive batch)."""
    from midalign.data.udhr import english_pairs
    langs = ["de", "fr", "es", "ru", "zh", "cy", "sw", "is", "tl", "jv", "ja", "hi"]
    pairs = [p for split in ("train", "dev", "test") for p in english_pairs(split, langs=langs)]
    seen, out = set(), []
    for _, text, en in pairs:
        if en not in seen and max(len(ids) for ids in tok.encode_batch([text, en])) <= MAX_TOKENS:
            seen.add(en)
            out.append((text, en))
    if len(out) < n:
        sys.exit(f"only {len(out)} UDHR pairs of ≤ {MAX_TOKENS} tokens; the benchmark needs {n}")
    return out[:n]


def peak_memory_mb(device) -> float:
    import torch
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(impl: str, model_name: str, device, lora: bool):
    """(model, tokenizer folder) for 'midalign' or 'peer' (transformers + peft), in the default dtype."""

    from midalign.checkpoint import load_model, resolve_model_dir
    from midalign.precision import resolve_dtype
    from midalign.lora import DEFAULT_TARGETS, LoRAConfig, apply_lora

    folder = resolve_model_dir(model_name)
    dtype = resolve_dtype(None, device)
    if impl == "midalign":
        model = load_model(folder, device=device, dtype=dtype)
        if lora:
            apply_lora(model, LoRAConfig())
    else:
        import transformers
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa").to(device)
        if lora:
            import peft
            model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1,
                                                               target_modules=list(DEFAULT_TARGETS), task_type="CAUSAL_LM"))
        for p in model.parameters():
            p.requires_grad_(lora and p.requires_grad)
    return model, folder


def workload_fn(name: str, impl: str, model, folder, device):
    """A zero-argument callable running one repetition of the workload; returns work units done."""
    import torch

    from midalign.align import alignment_loss, contrastive_loss, mean_pool
    from midalign.batching import left_pad, length_sorted_batches
    from midalign.generate import greedy_generate
    from midalign.retrieval import embed_layers
    from midalign.sft import task_loss
    from midalign.tokenizer import ChatTokenizer

    tok = ChatTokenizer(folder)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else \
        (lambda: torch.autocast("cpu", enabled=False))
    g = torch.Generator().manual_seed(0)
    if name == "task":
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-5)
        ids = torch.randint(100, 20000, (8, 128), generator=g).to(device)
        mask = torch.ones_like(ids)
        labels = ids.clone()
        labels[:, :64] = -100

        def step():
            with autocast():
                loss = task_loss(model, ids, mask, labels) if impl == "midalign" else \
                    model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return 8 * 128
        return step, "tokens"
    if name == "align":
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-5)
        pairs = udhr_sentences(32, tok)
        src, en = tok.encode_batch([p[0] for p in pairs]), tok.encode_batch([p[1] for p in pairs])
        layer = model.config.num_hidden_layers // 2

        def step():
            with autocast():
                if impl == "midalign":
                    loss = alignment_loss(model, src, en, layer, 0.1, "mean", False, tok.pad_id)
                else:
                    ids, mask = left_pad(src + en, tok.pad_id, device)
                    # logits_to_keep=1 spares the peer the LM head over every position, which the official
                    # code computes: a generous peer.
                    hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                               logits_to_keep=1).hidden_states[layer]
                    pooled = mean_pool(hs, mask)
                    loss = contrastive_loss(pooled[:32], pooled[32:], 0.1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return 32
        return step, "pairs"
    if name == "generate":
        model.eval()
        prompts = [tok.chat_ids([{"role": "user", "content": f"Translate to English: {s}"}])
                   for s, _ in udhr_sentences(8, tok)]

        def step():
            with torch.inference_mode(), autocast():
                if impl == "midalign":
                    out = greedy_generate(model, prompts, 64, eos_ids=[-1], pad_id=tok.pad_id)
                    assert all(len(o) == 64 for o in out)
                else:
                    ids, mask = left_pad(prompts, tok.pad_id, device)
                    model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=64, min_new_tokens=64,
                                   do_sample=False, pad_token_id=tok.pad_id)
            return 8 * 64
        return step, "new tokens"
    if name == "retrieve":
        model.eval()
        sentences = [s for pair in udhr_sentences(32, tok) for s in pair]
        ids = tok.encode_batch(sentences)
        layers = list(range(model.config.num_hidden_layers + 1))

        def step():
            with torch.inference_mode(), autocast():
                if impl == "midalign":
                    embed_layers(model, ids, layers, ("mean",), 16, tok.pad_id)
                else:
                    for batch in length_sorted_batches([len(t) for t in ids], 16):
                        x, mask = left_pad([ids[i] for i in batch], tok.pad_id, device)
                        hs = model(input_ids=x, attention_mask=mask, output_hidden_states=True,
                                   logits_to_keep=1).hidden_states  # no LM head over every position
                        [mean_pool(h, mask) for h in hs]
            return len(sentences)
        return step, "sentences"
    raise ValueError(name)


def child(args) -> None:
    """Run one (workload, implementation) in this process and print a JSON line."""
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, folder = build(args.impl, args.model, device, lora=args.workload in ("task", "align"))
    step, unit = workload_fn(args.workload, args.impl, model, folder, device)
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.reps):
        start = time.perf_counter()
        units = step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    print(json.dumps({"times": times, "units": units, "unit": unit, "peak_mb": peak_memory_mb(device),
                      "device": str(device), "dtype": str(next(model.parameters()).dtype)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="offline alias, folder or hub id")
    p.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    p.add_argument("--reps", type=int, default=5, help="timed repetitions after one warm-up")
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    p.add_argument("--child", nargs=2, metavar=("WORKLOAD", "IMPL"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.workload, args.impl = args.child
        return child(args)
    rows = []
    for workload in args.workloads:
        result = {}
        for impl in ("midalign", "peer"):
            cmd = [sys.executable, __file__, "--child", workload, impl, "--model", args.model, "--reps", str(args.reps)]
            if args.device:
                cmd += ["--device", args.device]
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode != 0:
                why = "killed by the kernel (out of memory)" if run.returncode == -9 else f"exit {run.returncode}"
                print(f"{workload:9s} {impl:9s} FAILED: {why}\n{run.stderr[-2000:]}", flush=True)
                result[impl] = {"failed": why}
                continue
            result[impl] = json.loads(run.stdout.strip().splitlines()[-1])
            med = statistics.median(result[impl]["times"])
            print(f"{workload:9s} {impl:9s} median {med:7.2f} s  {result[impl]['units'] / med:8.1f} "
                  f"{result[impl]['unit']}/s  peak {result[impl]['peak_mb']:7.0f} MB", flush=True)
        rows.append((workload, result))
    # A hand-written "## Analysis" section (profiles, misses) below the table survives re-runs.
    kept = args.out.read_text().partition("\n## Analysis")[1:] if args.out.is_file() else ("", "")
    atomic_write_text(args.out, results_table(rows, args) + "".join(kept))
    print(f"wrote {args.out}")


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(l.split(":", 1)[1].strip() for l in lines if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def results_table(rows: list[tuple[str, dict]], args) -> str:
    import peft
    import torch
    import transformers

    ok = [r[impl] for _, r in rows for impl in ("midalign", "peer") if "times" in r[impl]]
    device = f"device {ok[0]['device']}, {ok[0]['dtype']}" if ok else "no successful run"
    lines = [
        "# Benchmarks: midalign vs transformers + peft", "",
        f"Written by `python bench/run.py` on {datetime.date.today()}: {cpu_name()} ({os.cpu_count()} cores), "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"peft {peft.__version__}, {device}, model `{args.model}`; medians of {args.reps} runs after one warm-up, "
        f"each side in a fresh process, back to back.", "",
        "| workload | midalign (s) | peer (s) | peer / midalign | midalign throughput | peer throughput | "
        "midalign peak MB | peer peak MB |", "|---|---|---|---|---|---|---|---|"]
    for workload, r in rows:
        cells = {}
        for impl in ("midalign", "peer"):
            x = r[impl]
            if "times" in x:
                med = statistics.median(x["times"])
                cells[impl] = (med, f"{med:.2f}", f"{x['units'] / med:.1f} {x['unit']}/s", f"{x['peak_mb']:.0f}")
            else:
                cells[impl] = (None, f"failed: {x['failed']}", "—", "—")
        (a, *ma), (b, *pe) = cells["midalign"], cells["peer"]
        ratio = f"**{b / a:.2f}×**" if a and b else "—"
        lines.append(f"| {workload} | {ma[0]} | {pe[0]} | {ratio} | {ma[1]} | {pe[1]} | {ma[2]} | {pe[2]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
