"""midalign vs transformers + peft, side by side on the same machine, model, batch and precision.

    python bench/run.py                       # all workloads in fp32 and bf16, default model, writes bench/RESULTS.md
    python bench/run.py --workloads align --reps 3 --dtypes bf16
    python bench/run.py --config tests/fixtures/llama-3-8b-config.json --device cuda --batch 32 --seq 128 \
        --pairs 32 --new-tokens 128 --out bench/GPU.md     # random-init Llama-3-8B shape (bench/gpu_check.sh)

Each (workload, precision, implementation) runs in its own fresh process — midalign first, then the
peer, back to back — with one warm-up and `--reps` timed repetitions. Precisions (`--dtypes`; default
fp32 and bf16 on CPU, bf16 on CUDA): fp32, or bf16 weights under bf16 autocast with fp32 LoRA factors
(midalign's `--dtype bf16`; the peer's model in bf16 under the same autocast, peft's LoRA in fp32); the table gives medians, the ratio
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
With --config, both sides are built with random weights from that config.json directly on the device
(no files, no tokenizer: inputs are random token ids of the same sizes), and --shrink makes the config
tiny (dry runs on CPU). Beside the times, each run reports the machine's own limits measured in the
same run — the dense matmul rate in each precision and the memory bandwidth of a large copy — and each
workload's share of the better of them: MFU of the task step (4 × matmul parameters × tokens: forward, and
backward to the inputs only, the base being frozen), the weight-streaming rate of decoding (bytes of
weights read per step / step time), and the task step's peak memory against `midalign.memory`.
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
SIZES = dict(batch=8, seq=128, pairs=32, new_tokens=64, gen_batch=8)  # the CPU defaults; flags override


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


def bench_config(path: Path, shrink: bool) -> dict:
    """An HF config dict; `shrink` keeps its architecture (GQA ratio, RoPE scaling, biases) at tiny sizes."""
    raw = json.loads(Path(path).read_text())
    if shrink:
        ratio = raw["num_attention_heads"] // raw.get("num_key_value_heads", raw["num_attention_heads"])
        raw.update(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=max(1, 4 // ratio), vocab_size=512, head_dim=16)
    return raw


def random_model(impl: str, raw: dict, device, dtype):
    """A random-init model of config `raw`, built on `device` in `dtype` (weights N(0, 0.02), norms 1)."""
    import torch

    from midalign.config import ModelConfig
    from midalign.model import CausalLM

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            if impl == "midalign":
                model = CausalLM(ModelConfig.from_hf(raw))
            else:
                import transformers
                model = transformers.AutoModelForCausalLM.from_config(
                    transformers.AutoConfig.for_model(**raw), dtype=dtype, attn_implementation="sdpa")
    finally:
        torch.set_default_dtype(previous)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if "norm" in name else p.normal_(0, 0.02)
    return model


def build(impl: str, model_name: str, device, lora: bool, config: dict | None = None, dtype_name: str | None = None):
    """(model, tokenizer folder or None) for 'midalign' or 'peer' (transformers + peft), in `dtype_name`
    (fp32, bf16; default: the device's); with `config`, random weights of that shape and no tokenizer."""

    from midalign.checkpoint import load_model, resolve_model_dir
    from midalign.precision import resolve_dtype
    from midalign.lora import DEFAULT_TARGETS, LoRAConfig, apply_lora

    dtype = resolve_dtype(dtype_name, device)
    folder = None if config else resolve_model_dir(model_name)
    if impl == "midalign":
        model = random_model(impl, config, device, dtype) if config else load_model(folder, device=device, dtype=dtype)
        if lora:
            apply_lora(model, LoRAConfig())
    else:
        import transformers
        model = random_model(impl, config, device, dtype) if config else transformers.AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype, attn_implementation="sdpa").to(device)
        if lora:
            import peft
            model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1,
                                                               target_modules=list(DEFAULT_TARGETS), task_type="CAUSAL_LM"))
        for p in model.parameters():
            p.requires_grad_(lora and p.requires_grad)
    return model, folder


def random_sentences(n: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """n random token sequences of 16..MAX_TOKENS tokens (for random-init models, which have no tokenizer)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(16, MAX_TOKENS + 1, (n,), generator=g).tolist()
    return [torch.randint(3, vocab, (k,), generator=g).tolist() for k in lengths]


def workload_fn(name: str, impl: str, model, folder, device, sizes: dict):
    """A zero-argument callable running one repetition of the workload; returns work units done."""
    import torch

    from midalign.align import AlignConfig, alignment_loss, contrastive_loss, mean_pool
    from midalign.batching import left_pad, length_sorted_batches
    from midalign.generate import greedy_generate
    from midalign.precision import autocast as precision_autocast
    from midalign.retrieval import embed_layers
    from midalign.sft import task_loss
    from midalign.tokenizer import ChatTokenizer

    tok = ChatTokenizer(folder) if folder else None
    pad_id, vocab = (tok.pad_id if tok else 0), model.config.vocab_size
    autocast = precision_autocast(device, next(model.parameters()).dtype)
    g = torch.Generator().manual_seed(0)

    def sentence_pairs(n):  # (sources, English), real UDHR pairs with a tokenizer, random ids without
        if tok is None:
            return random_sentences(n, vocab, 1), random_sentences(n, vocab, 2)
        pairs = udhr_sentences(n, tok)
        return tok.encode_batch([p[0] for p in pairs]), tok.encode_batch([p[1] for p in pairs])

    if name == "task":
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-5)
        B, T = sizes["batch"], sizes["seq"]
        ids = torch.randint(100, min(20000, vocab), (B, T), generator=g).to(device)
        mask = torch.ones_like(ids)
        labels = ids.clone()
        labels[:, :T // 2] = -100

        def step():
            with autocast():
                loss = task_loss(model, ids, mask, labels) if impl == "midalign" else \
                    model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return B * T
        return step, "tokens"
    if name == "align":
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-5)
        n = sizes["pairs"]
        src, en = sentence_pairs(n)
        layer = model.config.num_hidden_layers // 2

        def step():
            with autocast():
                if impl == "midalign":
                    loss = alignment_loss(model, src, en, AlignConfig(layer, 0.1, "mean"), pad_id)
                else:
                    ids, mask = left_pad(src + en, pad_id, device)
                    # logits_to_keep=1 spares the peer the LM head over every position, which the official
                    # code computes: a generous peer.
                    hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                               logits_to_keep=1).hidden_states[layer]
                    pooled = mean_pool(hs, mask)
                    loss = contrastive_loss(pooled[:n], pooled[n:], 0.1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return n
        return step, "pairs"
    if name == "generate":
        model.eval()
        B, new = sizes["gen_batch"], sizes["new_tokens"]
        prompts = random_sentences(B, vocab, 3) if tok is None else \
            [tok.chat_ids([{"role": "user", "content": f"Translate to English: {s}"}]) for s, _ in udhr_sentences(B, tok)]

        def step():
            with torch.inference_mode(), autocast():
                if impl == "midalign":
                    out = greedy_generate(model, prompts, new, eos_ids=[-1], pad_id=pad_id)
                    assert all(len(o) == new for o in out)
                else:
                    ids, mask = left_pad(prompts, pad_id, device)
                    model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                   do_sample=False, pad_token_id=pad_id)
            return B * new
        return step, "new tokens"
    if name == "retrieve":
        model.eval()
        ids = [s for pair in zip(*sentence_pairs(32)) for s in pair]
        layers = list(range(model.config.num_hidden_layers + 1))

        def step():
            with torch.inference_mode(), autocast():
                if impl == "midalign":
                    embed_layers(model, ids, layers, ("mean",), 16, pad_id)
                else:
                    for batch in length_sorted_batches([len(t) for t in ids], 16):
                        x, mask = left_pad([ids[i] for i in batch], pad_id, device)
                        hs = model(input_ids=x, attention_mask=mask, output_hidden_states=True,
                                   logits_to_keep=1).hidden_states  # no LM head over every position
                        [mean_pool(h, mask) for h in hs]
            return len(ids)
        return step, "sentences"
    raise ValueError(name)


def limits(device) -> dict:
    """The machine's own limits, measured here: the dense matmul rate in fp32 and in bf16 (TFLOP/s) and the
    bandwidth of a large on-device copy (GB/s, bytes read + written)."""
    import torch

    n = 8192 if device.type == "cuda" else 1024
    x = torch.empty(2**28 if device.type == "cuda" else 2**26, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)

    def timed(fn, reps):
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / reps
    matmul = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        matmul[name] = 2 * n**3 / timed(lambda: a @ b, 10) / 1e12
    copy = 2 * x.numel() / timed(lambda: y.copy_(x), 10) / 1e9
    return {"matmul_tflops": matmul, "copy_gbps": copy, "matmul_n": n}


def model_costs(model, sizes: dict) -> dict:
    """FLOPs of one task step (forward, and backward to the inputs: the base is frozen; attention scores
    included; LM head on the answer half) and the weight bytes one decoding step reads."""
    cfg = model.config
    # the decoder layers' projection matrices (LoRA-wrapped or not; LoRA factors and norms left out)
    linear = sum(p.numel() for n, p in model.named_parameters() if ".layers." in n and p.ndim == 2 and ".lora_" not in n)
    B, T, d, L, V = sizes["batch"], sizes["seq"], cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    attention = 3 * 4 * B * T * T * d * L  # QKᵀ and AV, forward + the two input gradients
    flops = 4 * linear * B * T + attention + 4 * V * d * B * T // 2
    weights = (linear + V * d) * next(model.parameters()).element_size()
    return {"task_flops": flops, "decode_weight_bytes": weights}


def child(args) -> None:
    """Run one (workload, implementation) in this process and print a JSON line."""
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.workload == "limits":
        print(json.dumps(limits(device)))
        return
    sizes = {k: getattr(args, k) for k in SIZES}
    config = bench_config(args.config, args.shrink) if args.config else None
    model, folder = build(args.impl, args.model, device, lora=args.workload in ("task", "align"), config=config,
                          dtype_name=args.dtype)
    step, unit = workload_fn(args.workload, args.impl, model, folder, device, sizes)
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
    result = {"times": times, "units": units, "unit": unit, "peak_mb": peak_memory_mb(device), "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
              "dtype": args.dtype or str(next(model.parameters()).dtype)}
    if args.impl == "midalign":
        from midalign.lora import LoRAConfig
        from midalign.memory import estimate_training_memory

        result.update(model_costs(model, sizes))
        if args.workload == "task":
            estimate = estimate_training_memory(model.config, LoRAConfig(), model.lm_head.weight.dtype,
                                                sizes["batch"], sizes["seq"], answer_tokens=sizes["batch"] * sizes["seq"] // 2)
            result["estimate_mb"] = estimate.total / 2**20
    print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="offline alias, folder or hub id")
    p.add_argument("--config", type=Path, help="random-init models of this config.json instead of --model")
    p.add_argument("--shrink", action="store_true", help="with --config: tiny sizes, same architecture (dry runs)")
    p.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    p.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"],
                   help="precisions to run each workload in (default: fp32 and bf16 on CPU, bf16 on CUDA)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions after one warm-up")
    p.add_argument("--device", help="cpu or cuda")
    for key, value in SIZES.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=value, help=f"(default {value})")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    p.add_argument("--child", nargs=2, metavar=("WORKLOAD", "IMPL"), help=argparse.SUPPRESS)
    p.add_argument("--dtype", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.workload, args.impl = args.child
        return child(args)
    cuda = args.device == "cuda" or args.device is None and __import__("torch").cuda.is_available()
    args.dtypes = args.dtypes or (["bf16"] if cuda else ["fp32", "bf16"])
    passed = ["--model", args.model, "--reps", str(args.reps), *(["--device", args.device] if args.device else []),
              *(["--config", str(args.config)] if args.config else []), *(["--shrink"] if args.shrink else []),
              *[x for key in SIZES for x in (f"--{key.replace('_', '-')}", str(getattr(args, key)))]]
    run = subprocess.run([sys.executable, __file__, "--child", "limits", "-", *passed], capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"measuring the machine's limits failed:\n{run.stderr[-2000:]}")
    machine = json.loads(run.stdout.strip().splitlines()[-1])
    print("limits: matmul " + ", ".join(f"{d} {r:.2f} TFLOP/s" for d, r in machine["matmul_tflops"].items()) +
          f"; copy {machine['copy_gbps']:.1f} GB/s", flush=True)
    rows = []
    for workload in args.workloads:
        for dtype in args.dtypes:
            result = {}
            for impl in ("midalign", "peer"):
                run = subprocess.run([sys.executable, __file__, "--child", workload, impl, "--dtype", dtype, *passed],
                                     capture_output=True, text=True)
                if run.returncode != 0:
                    why = "killed by the kernel (out of memory)" if run.returncode == -9 else f"exit {run.returncode}"
                    print(f"{workload:9s} {dtype} {impl:9s} FAILED: {why}\n{run.stderr[-2000:]}", flush=True)
                    result[impl] = {"failed": why}
                    continue
                result[impl] = json.loads(run.stdout.strip().splitlines()[-1])
                med = statistics.median(result[impl]["times"])
                print(f"{workload:9s} {dtype} {impl:9s} median {med:7.2f} s  {result[impl]['units'] / med:8.1f} "
                      f"{result[impl]['unit']}/s  peak {result[impl]['peak_mb']:7.0f} MB", flush=True)
            rows.append((workload, dtype, result))
    # A hand-written "## Analysis" section (profiles, misses) below the table survives re-runs.
    kept = args.out.read_text().partition("\n## Analysis")[1:] if args.out.is_file() else ("", "")
    atomic_write_text(args.out, results_table(rows, args, machine) + "".join(kept))
    print(f"wrote {args.out}")


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(l.split(":", 1)[1].strip() for l in lines if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def median(x: dict) -> float | None:
    return statistics.median(x["times"]) if "times" in x else None


def results_table(rows: list[tuple[str, str, dict]], args, machine: dict) -> str:
    import peft
    import torch
    import transformers

    ok = [r[impl] for _, _, r in rows for impl in ("midalign", "peer") if "times" in r[impl]]
    device = f"{ok[0]['device_name']} ({ok[0]['device']})" if ok else "no successful run"
    model = f"random-init `{args.config}`" + (" (shrunk)" if args.shrink else "") if args.config else f"`{args.model}`"
    sizes = ", ".join(f"{k} {getattr(args, k)}" for k in SIZES)
    rates = machine["matmul_tflops"]
    best = max(rates, key=rates.get)
    lines = [
        "# Benchmarks: midalign vs transformers + peft", "",
        f"Written by `python bench/run.py` on {datetime.date.today()}: {cpu_name()} ({os.cpu_count()} cores), "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"peft {peft.__version__}, {device}, model {model}; sizes: {sizes}; medians of {args.reps} runs after one "
        f"warm-up, each side in a fresh process, back to back.", "",
        f"Machine limits measured in the same run: dense matmul ({machine['matmul_n']}³) " +
        ", ".join(f"**{r:.2f} TFLOP/s** in {d}" for d, r in rates.items()) +
        f" (the better: {best}); on-device copy **{machine['copy_gbps']:.1f} GB/s** (read + write). Shares below "
        f"are of the better matmul rate (MFU) and of the copy bandwidth (decoding's weight streaming).", "",
        "| workload | precision | midalign (s) | peer (s) | peer / midalign | midalign throughput | peer throughput | "
        "midalign peak MB | peer peak MB | share of the machine's limit (midalign / peer) |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for workload, dtype, r in rows:
        cells = {}
        for impl in ("midalign", "peer"):
            x, med = r[impl], median(r[impl])
            cells[impl] = (med, f"{med:.2f}", f"{x['units'] / med:.1f} {x['unit']}/s", f"{x['peak_mb']:.0f}") if med \
                else (None, f"failed: {x['failed']}", "—", "—")
        (a, *ma), (b, *pe) = cells["midalign"], cells["peer"]
        ratio = f"**{b / a:.2f}×**" if a and b else "—"
        costs = r["midalign"] if "times" in r["midalign"] else {}
        share = "—"
        if workload == "task" and costs:
            mfu = lambda t: f"{100 * costs['task_flops'] / t / 1e12 / rates[best]:.0f}%" if t else "—"
            share = f"MFU {mfu(a)} / {mfu(b)}; estimate {costs['estimate_mb']:.0f} MB"
        elif workload == "generate" and costs:
            steps = getattr(args, "new_tokens")
            rate = lambda t: f"{100 * costs['decode_weight_bytes'] * steps / t / 1e9 / machine['copy_gbps']:.0f}%" if t else "—"
            share = f"weight streaming {rate(a)} / {rate(b)} of copy bandwidth"
        lines.append(f"| {workload} | {dtype} | {ma[0]} | {pe[0]} | {ratio} | {ma[1]} | {pe[1]} | {ma[2]} | {pe[2]} | "
                     f"{share} |")
    dtypes = list(dict.fromkeys(d for _, d, _ in rows))
    if len(dtypes) == 2:  # which precision is faster here, per workload and side
        by = {(w, d): r for w, d, r in rows}
        lines += ["", f"{dtypes[1]} against {dtypes[0]} on this machine (time in {dtypes[0]} / time in {dtypes[1]}; "
                      f"> 1: {dtypes[1]} is faster):", "", "| workload | midalign | peer |", "|---|---|---|"]
        for w in dict.fromkeys(w for w, _, _ in rows):
            speed = lambda impl: (f"{median(by[w, dtypes[0]][impl]) / median(by[w, dtypes[1]][impl]):.2f}×"
                                  if median(by[w, dtypes[0]][impl]) and median(by[w, dtypes[1]][impl]) else "—")
            lines.append(f"| {w} | {speed('midalign')} | {speed('peer')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
