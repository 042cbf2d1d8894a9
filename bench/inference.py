"""Inference cost before and after (the studies' evaluation cost on CPU), measured in one run.

    python bench/inference.py --massive ~/.cache/midalign/datasets/massive   # prints a markdown section

Each measurement runs in its own fresh process, back to back, with one warm-up and medians of --reps;
the earlier commit (--ref) runs from a temporary git worktree. Inputs are real: the slot study's prompt
on MASSIVE test utterances, tokenized once by this tree and handed to both trees as token ids.
  adapter  one forward of 16 slot prompts through every layer (retrieve.py's pass, all hidden states):
           the base model; with an adapter applied unmerged (the LoRA factors at every projection, as
           before); the same adapter merged into the weights (as inference runs now)
  prefill  greedy decoding of 16 slot prompts, 16 new tokens (no early stop; the prefill dominates) by the
           base model and with a merged adapter (frozen base weights, as every evaluation of an adapter),
           in bf16, by the earlier commit (--prefill-ref) and this tree
  decode   greedy decoding of 8 slot prompts, 64 new tokens (no early stop): the earlier commit in fp32;
           this tree in fp32 and in bf16 (bf16 weights under bf16 autocast)
  batch    evaluation as the studies run it (`generate`, stop at the end of turn, 64 new tokens at most) of 128
           slot prompts at batch 16 and 32, in fp32 and bf16: the earlier commit (--refill-ref: static,
           length-sorted batches), this tree (finished rows refilled) and, in bf16, the peer (transformers'
           `generate` on the same length-sorted batches); answers per second and how many answers equal the
           earlier commit's, token for token
  align    the joint runs' alignment micro-batch (16 translation pairs: MASSIVE test utterances of cy, ja, sw
           with their English, as short as the study's Tatoeba pairs), forward and backward through a rank-8
           LoRA to layer 12 (mean-skip-first, τ 0.1), in bf16, by --refill-ref and this tree: seconds, and
           MFU (4 × the projection parameters of layers 1–12 × the real tokens, against a 1024³ bf16
           matmul measured in the same process)
  step     one decoding step (one new token per row after a prefill of slot prompts) at 16 and 32 rows in
           bf16, by --refill-ref and this tree, beside the weight products of the same step (every weight
           matrix once, in order): the step's time that is not a matrix product
  gemm     where a decoding step's time goes: each weight matrix of one decoder layer and the LM head
           applied to 8, 16 and 32 rows (one new token per prompt), fp32 and bf16, and the step they add
           up to (layers × the layer's matrices + the head)
  merge    folding an adapter into the weights (`merge_lora`, what loading an adapter for inference costs),
           fp32 and bf16, by the earlier commit (--merge-ref) and this tree: the first merge (the weights'
           pages written for the first time) and a second one after `unmerge_lora`, beside the arithmetic's
           own cost measured in the same process (the rank-8 products at the machine's rate for them, and one
           read-add-write pass over the same weights)
  retrieve `retrieve.py --langs en de cy sw --layers 12` with and without an adapter, alternating, by the
           earlier commit (--merge-ref) and this tree: wall time of each whole command
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCALES = ("cy-GB", "ja-JP", "sw-KE", "en-US")  # the aligned languages, where the study's test items are, and English
BATCHES = (8, 16, 32)
PARTS = ("adapter", "prefill", "decode", "batch", "step", "align", "gemm", "merge", "retrieve")
REFILL_BATCHES = (16, 32)


def child(tree: Path, job: dict) -> dict:
    """One measurement in this process, with `tree`'s midalign."""
    sys.path.insert(0, str(tree))
    import torch

    from midalign.checkpoint import load_model, resolve_model_dir
    from midalign.generate import greedy_generate

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[job["dtype"]]
    folder = resolve_model_dir(job["model"])
    model = load_model(folder, device="cpu", dtype=dtype)
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == torch.bfloat16 else \
        (lambda: torch.autocast("cpu", enabled=False))
    prompts = job["prompts"]
    if job["kind"] == "gemm":
        return gemm_profile(model, job["reps"])
    if job["kind"] == "align":
        return align_profile(model, job["pairs"], job["reps"])
    if job["kind"] == "step":
        with torch.inference_mode(), amp():
            return step_profile(model, prompts, job["reps"])
    if job["kind"] == "merge":
        return merge_profile(model)
    if job["kind"] in ("adapter", "prefill"):
        from midalign.lora import LoRAConfig, apply_lora, lora_modules, merge_lora
        from midalign.retrieval import embed_layers

        if job["variant"] != "base":
            apply_lora(model, LoRAConfig())
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for m in lora_modules(model).values():  # a trained adapter's size: B is no longer zero
                    m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.01)
            if job["variant"] == "merged":
                merge_lora(model)
        layers = list(range(model.config.num_hidden_layers + 1))
        step = (lambda: embed_layers(model, prompts, layers, ("mean",), 16, 0)) if job["kind"] == "adapter" else \
            (lambda: greedy_generate(model, prompts, 16, eos_ids=[-1], pad_id=0))
    elif job["kind"] == "decode":
        step = lambda: greedy_generate(model, prompts, 64, eos_ids=[-1], pad_id=0)
    else:  # batch: the evaluation path, real stops
        from midalign.generate import generate
        from midalign.tokenizer import ChatTokenizer

        tok = ChatTokenizer(folder)
        peer = peer_model(folder, dtype) if job.get("tree") == "peer" else None
        decode = (lambda ps: peer_generate(peer, ps, 64, tok.eos_ids, tok.pad_id, job["batch"])) if peer else \
            (lambda ps: generate(model, ps, 64, tok.eos_ids, tok.pad_id, job["batch"]))
        step, warm = lambda: decode(prompts), lambda: decode(prompts[:job["batch"]])  # warm-up: one batch
    times = []
    with torch.inference_mode(), amp():
        (warm if job["kind"] == "batch" else step)()
        for _ in range(job["reps"]):
            start = time.perf_counter()
            out = step()
            times.append(time.perf_counter() - start)
    result = {"seconds": statistics.median(times), "times": times}
    if job["kind"] == "batch":
        result["outputs"] = out
    return result


def peer_model(folder: Path, dtype):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()


def peer_generate(model, prompts: list[list[int]], new: int, eos_ids: list[int], pad_id: int, batch: int) -> list:
    """transformers' greedy `generate` on midalign's length-sorted, left-padded batches; the tokens before EOS."""
    from midalign.batching import left_pad, length_sorted_batches

    outputs: list = [None] * len(prompts)
    for rows in length_sorted_batches([len(p) for p in prompts], batch):
        ids, mask = left_pad([prompts[i] for i in rows], pad_id)
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                             eos_token_id=eos_ids, pad_token_id=pad_id)[:, ids.shape[1]:].tolist()
        for i, row in zip(rows, out):
            outputs[i] = next((row[:k] for k, t in enumerate(row) if t in eos_ids), row)
    return outputs


def align_profile(model, batches: list[list[list[list[int]]]], reps: int) -> dict:
    """Seconds of one alignment micro-batch (forward and backward, LoRA r 8) per batch of pairs (the median
    over `reps` passes through all of them, after a warm-up on the first), and a 1024³ bf16 matmul's rate."""
    import torch

    from midalign.align import AlignConfig, alignment_loss
    from midalign.lora import LoRAConfig, apply_lora

    apply_lora(model, LoRAConfig())
    model.train()
    config = AlignConfig(12, 0.1, "mean-skip-first")
    run = lambda pairs: alignment_loss(model, [s for s, _ in pairs], [e for _, e in pairs], config, 0).backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        run(batches[0])
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            for pairs in batches:
                run(pairs)
            times.append((time.perf_counter() - start) / len(batches))
    a = torch.full((1024, 1024), 0.5, dtype=torch.bfloat16)
    a @ a
    start = time.perf_counter()
    for _ in range(5):
        a @ a
    return {"seconds": statistics.median(times), "matmul_flops": 5 * 2 * 1024 ** 3 / (time.perf_counter() - start)}


def massive_pairs(massive: Path, model: str, n: int, size: int) -> list:
    """n micro-batches of `size` (utterance, English utterance) token-id pairs: MASSIVE test utterances of cy,
    ja and sw with the English utterance of the same id (MASSIVE is parallel), in a fixed random order."""
    from midalign.checkpoint import resolve_model_dir
    from midalign.tokenizer import ChatTokenizer

    read = lambda locale: {r["id"]: r["utt"] for r in map(json.loads, (massive / f"{locale}.jsonl").open(encoding="utf-8"))
                           if r["partition"] == "test"}
    en = read("en-US")
    pairs = [(u, en[i]) for locale in LOCALES[:3] for i, u in read(locale).items() if i in en]
    pairs = random.Random(0).sample(pairs, n * size)
    tok = ChatTokenizer(resolve_model_dir(model))
    src, eng = tok.encode_batch([p[0] for p in pairs]), tok.encode_batch([p[1] for p in pairs])
    return [list(zip(src[i * size:(i + 1) * size], eng[i * size:(i + 1) * size])) for i in range(n)]


def step_profile(model, prompts: list[list[int]], reps: int) -> dict:
    """ms of one decoding step of len(prompts) rows after their prefill (median of `reps`), and of the step's
    weight products alone: every weight matrix of the model applied once to that many rows, in order (unlike
    `gemm`, which repeats one layer's matrices, so each is read from the cache, not from memory)."""
    import torch

    from midalign.generate import prefill
    from midalign.model import KVCache

    rows = len(prompts)
    cache = KVCache(model.config, rows, max(map(len, prompts)) + reps + 2, "cpu", model.lm_head.weight.dtype)
    logits, mask = prefill(model, prompts, cache, pad_id=0)
    ids = logits[:, -1].argmax(-1)[:, None]
    times = []
    for _ in range(reps + 1):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        start = time.perf_counter()
        model(ids, mask, cache=cache, logits_to_keep=1)
        times.append(1e3 * (time.perf_counter() - start))
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]  # every layer's and the head
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1], dtype=w.dtype) for w in weights}
    products = []
    for _ in range(reps + 1):  # each weight read once from memory, in the step's order, as the step reads them
        start = time.perf_counter()
        for w in weights:
            torch.nn.functional.linear(inputs[w.shape[1]], w)
        products.append(1e3 * (time.perf_counter() - start))
    step = statistics.median(times[1:])
    return {"seconds": step / 1e3, "step_ms": step, "products_ms": statistics.median(products[1:])}


def gemm_profile(model, reps: int) -> dict:
    """ms per product of each weight matrix of layer 0 and the LM head with `rows` inputs, in the model's dtype."""
    import torch
    import torch.nn.functional as F

    weights = {n.removeprefix("model.layers.0.").removesuffix(".weight"): p for n, p in model.named_parameters()
               if n.startswith("model.layers.0.") and p.ndim == 2}
    weights["lm_head"] = model.lm_head.weight
    out = {}
    for rows in BATCHES:
        for name, w in weights.items():
            x = torch.randn(rows, w.shape[1], dtype=w.dtype)
            F.linear(x, w)
            start = time.perf_counter()
            for _ in range(reps):
                F.linear(x, w)
            out[f"{rows} {name}"] = 1e3 * (time.perf_counter() - start) / reps
        layer = sum(out[f"{rows} {n}"] for n in weights if n != "lm_head")
        out[f"{rows} step"] = model.config.num_hidden_layers * layer + out[f"{rows} lm_head"]
    return {"seconds": out[f"{BATCHES[0]} step"] / 1e3, "ms": out, "matrices": list(weights)}


def merge_profile(model) -> dict:
    """Seconds of the first and a second `merge_lora` of a random rank-8 adapter, and of its arithmetic: each
    module's B·A into one buffer (the products alone) and one W += buffer pass (the memory traffic alone)."""
    import torch

    from midalign.lora import LoRAConfig, apply_lora, lora_modules, merge_lora, unmerge_lora

    apply_lora(model, LoRAConfig())
    modules = list(lora_modules(model).values())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in modules:
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.01)
    def clock(f) -> float:
        start = time.perf_counter()
        f()
        return time.perf_counter() - start

    first = clock(lambda: merge_lora(model))
    clock(lambda: unmerge_lora(model))
    second = clock(lambda: merge_lora(model))
    buf = torch.empty(max(m.weight.numel() for m in modules))
    with torch.no_grad():
        products = clock(lambda: [torch.mm(m.lora_B, m.lora_A, out=buf[:m.weight.numel()].view(m.weight.shape))
                                  for m in modules])
        low = buf.to(modules[0].weight.dtype)
        add = clock(lambda: [m.weight.add_(low[:m.weight.numel()].view(m.weight.shape), alpha=0) for m in modules])
    return {"seconds": first, "first": first, "second": second, "products": products, "pass": add,
            "weights": sum(m.weight.numel() for m in modules)}


def retrieve_time(tree: Path, model: str, adapter: Path | None) -> float:
    """Wall time of one retrieve.py command from `tree` (4 languages, layer 12)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, str(tree / "retrieve.py"), "--model", model, "--langs", "en", "de", "cy", "sw",
               "--layers", "12", "--out", out, *(["--adapter", str(adapter)] if adapter else [])]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=tree)
        seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    print(f"retrieve {tree.name} {'adapter' if adapter else 'base'}: {seconds:.1f} s", file=sys.stderr, flush=True)
    return seconds


def random_adapter(model: str, folder: Path) -> Path:
    """A rank-8 adapter of `model` with random B (a trained adapter's size), saved in PEFT format."""
    sys.path.insert(0, str(ROOT))
    import torch

    from midalign.adapters import adapter_from_model, save_adapter
    from midalign.checkpoint import load_model
    from midalign.lora import LoRAConfig, apply_lora, lora_modules

    m = load_model(model, device="cpu")
    apply_lora(m, LoRAConfig())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in lora_modules(m).values():
            module.lora_B.copy_(torch.randn(module.lora_B.shape, generator=g) * 0.01)
    save_adapter(adapter_from_model(m, LoRAConfig()), folder)
    return folder


def measure(tree: Path, job: dict) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    cmd = [sys.executable, __file__, "--child", str(tree), f.name]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tree)
    Path(f.name).unlink()
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{job['kind']:8s} {job.get('variant', job.get('tree', ''))} {job['dtype']} {job.get('batch', '')}: "
          f"{result['seconds']:.2f} s", file=sys.stderr, flush=True)
    return result


def worktree(ref: str):
    """(label, tree) for the earlier commit `ref` (checked out in a temporary git worktree while it is
    measured) and then this tree."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "ref"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), ref], cwd=ROOT, check=True)
        try:
            yield ref, tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=True)
    yield "this tree", ROOT


def slot_prompts(massive: Path, model: str, n: int) -> list[list[int]]:
    """n random MASSIVE test utterances of LOCALES (fixed seed) as the slot task's chat prompts."""
    sys.path.insert(0, str(ROOT))
    from midalign.checkpoint import resolve_model_dir
    from midalign.data.tasks import load_massive
    from midalign.tokenizer import ChatTokenizer

    examples = [ex for locale in LOCALES for ex in load_massive(massive / f"{locale}.jsonl", "test")]
    examples = random.Random(0).sample(examples, n)
    return ChatTokenizer(resolve_model_dir(model)).chat_ids_batch([ex.messages() for ex in examples])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--massive", type=Path, help="prepared MASSIVE folder (python -m midalign.data fetch massive)")
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    p.add_argument("--ref", default="6999310", help="the earlier commit to compare decoding with")
    p.add_argument("--prefill-ref", default="1fae5c0",
                   help="the earlier commit to compare decoding with an adapter with (before the LM head's input "
                        "was made contiguous)")
    p.add_argument("--refill-ref", default="d3e1027",
                   help="the earlier commit to compare evaluation decoding with (static batches, before refilling)")
    p.add_argument("--merge-ref", default="2b08906",
                   help="the earlier commit to compare merging an adapter with (before the shared product buffer)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions after one warm-up")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which measurements (default all)")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), json.loads(Path(args.child[1]).read_text()))))
        return
    if args.massive is None:
        p.error("--massive is required")
    prompts = slot_prompts(args.massive, args.model, 128)
    job = lambda **kw: {"model": args.model, "reps": args.reps, "dtype": "fp32", **kw}
    lines: list[str] = []
    if "adapter" in args.parts:
        adapter = {v: measure(ROOT, job(kind="adapter", variant=v, prompts=prompts[:16]))["seconds"]
                   for v in ("base", "unmerged", "merged")}
        lines += ["| adapter (forward, 16 prompts, every layer, fp32) | seconds | against the base model |",
                  "|---|---|---|", *(f"| {v} | {s:.2f} | {s / adapter['base']:.3f}× |" for v, s in adapter.items()),
                  ""]
    if "prefill" in args.parts:
        pre = {(t, v): measure(tree, job(kind="prefill", variant=v, dtype="bf16", tree=t, prompts=prompts[:16]))
               ["seconds"] for t, tree in worktree(args.prefill_ref) for v in ("base", "merged")}
        lines += ["| decoding, 16 prompts × 16 new tokens, bf16 | base model (s) | merged adapter (s) | "
                  "adapter against base |", "|---|---|---|---|",
                  *(f"| {t} | {pre[t, 'base']:.2f} | {pre[t, 'merged']:.2f} | "
                    f"{pre[t, 'merged'] / pre[t, 'base']:.2f}× |" for t in (args.prefill_ref, "this tree")), ""]
    if "decode" in args.parts:
        decode = {t: measure(tree, job(kind="decode", tree=t, prompts=prompts[:8]))["seconds"]
                  for t, tree in worktree(args.ref)}
        decode["this tree, bf16"] = measure(ROOT, job(kind="decode", tree="this", dtype="bf16",
                                                      prompts=prompts[:8]))["seconds"]
        before, tps = decode[args.ref], lambda s: 8 * 64 / s
        lines += ["| decoding (8 prompts × 64 new tokens) | seconds | new tokens/s | against the earlier commit |",
                  "|---|---|---|---|",
                  *(f"| {t}{', fp32' if 'bf16' not in t else ''} | {s:.2f} | {tps(s):.1f} | "
                    f"**{before / s:.2f}×** |" for t, s in decode.items()), ""]
    if "batch" in args.parts:
        runs = {}
        for t, tree in itertools.chain(worktree(args.refill_ref), [("peer", ROOT)]):  # each worktree lives while used
            for d in ("bf16",) if t == "peer" else ("fp32", "bf16"):  # the peer in the studies' precision
                for b in REFILL_BATCHES:
                    runs[t, d, b] = measure(tree, job(kind="batch", dtype=d, batch=b, tree=t, prompts=prompts, reps=1))
        lines += [f"| evaluation of {len(prompts)} slot prompts | precision | batch | answers/s | new tokens | against "
                  f"{args.refill_ref} | answers equal to {args.refill_ref}'s |", "|---|---|---|---|---|---|---|"]
        for (t, d, b), r in runs.items():
            before = runs[args.refill_ref, d, b]
            same = sum(x == y for x, y in zip(r["outputs"], before["outputs"]))
            lines.append(f"| {t} | {d} | {b} | {len(prompts) / r['seconds']:.2f} | "
                         f"{sum(map(len, r['outputs']))} | **{before['seconds'] / r['seconds']:.2f}×** | "
                         f"{same} of {len(prompts)} |")
        lines.append("")
    if "align" in args.parts:
        from midalign.checkpoint import resolve_model_dir
        from midalign.config import ModelConfig
        from midalign.cost import pass_flops

        batches = massive_pairs(args.massive, args.model, 6, 16)
        tokens = statistics.mean(sum(len(s) + len(e) for s, e in pairs) for pairs in batches)
        flops = pass_flops(ModelConfig.from_hf(resolve_model_dir(args.model)), tokens, layers=12)
        al = {t: measure(tree, job(kind="align", dtype="bf16", tree=t, prompts=[], pairs=batches))
              for t, tree in worktree(args.refill_ref)}
        lines += [f"| alignment micro-batch (16 pairs, {tokens:.0f} real tokens, layer 12, bf16) | seconds | MFU | "
                  f"against {args.refill_ref} |", "|---|---|---|---|",
                  *(f"| {t} | {r['seconds']:.2f} | {flops / r['seconds'] / r['matmul_flops']:.0%} "
                    f"(matmul {r['matmul_flops'] / 1e12:.2f} TFLOP/s) | **{al[args.refill_ref]['seconds'] / r['seconds']:.2f}×** |"
                    for t, r in al.items()), ""]
    if "step" in args.parts:
        step = {(t, b): measure(tree, job(kind="step", dtype="bf16", tree=t, prompts=prompts[:b], reps=40))
                for t, tree in worktree(args.refill_ref) for b in REFILL_BATCHES}
        lines += ["| one bf16 decoding step (ms) | rows | step | weight products | the rest | the rest against "
                  f"{args.refill_ref} |", "|---|---|---|---|---|---|",
                  *(f"| {t} | {b} | {r['step_ms']:.0f} | {r['products_ms']:.0f} | "
                    f"{r['step_ms'] - r['products_ms']:.0f} | "
                    f"{(r['step_ms'] - r['products_ms']) / (step[args.refill_ref, b]['step_ms'] - step[args.refill_ref, b]['products_ms']):.2f}× |"
                    for (t, b), r in step.items()), ""]
    if "gemm" in args.parts:
        gemm = {d: measure(ROOT, job(kind="gemm", dtype=d, prompts=[], reps=20)) for d in ("fp32", "bf16")}
        lines += ["| one decoding step's matrix products (ms) | " + " | ".join(
                      f"{d}, {b} rows" for d in ("fp32", "bf16") for b in BATCHES) + " |",
                  "|---" * (1 + 2 * len(BATCHES)) + "|",
                  *(f"| {name} | " + " | ".join(f"{gemm[d]['ms'][f'{b} {name}']:.2f}" for d in ("fp32", "bf16")
                                                for b in BATCHES) + " |"
                    for name in [*gemm["fp32"]["matrices"], "step"])]
    if "merge" in args.parts:
        merge = {(t, d): measure(tree, job(kind="merge", dtype=d, tree=t, prompts=[]))
                 for t, tree in worktree(args.merge_ref) for d in ("fp32", "bf16")}
        lines += ["| merging a rank-8 adapter into the default model | first merge (s) | second merge (s) | "
                  "products alone (s) | one W += Δ pass (s) | arithmetic / first merge |", "|---|---|---|---|---|---|",
                  *(f"| {t}, {d} | {r['first']:.2f} | {r['second']:.2f} | {r['products']:.2f} | {r['pass']:.2f} | "
                    f"{(r['products'] + r['pass']) / r['first']:.0%} |" for (t, d), r in merge.items()), ""]
    if "retrieve" in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            adapter = random_adapter(args.model, Path(tmp) / "adapter")
            seconds: dict = {}
            for t, tree in worktree(args.merge_ref):
                for _ in range(args.reps):  # alternating: base, adapter, base, adapter, …
                    for a in (None, adapter):
                        seconds.setdefault((t, a is not None), []).append(retrieve_time(tree, args.model, a))
        med = {k: statistics.median(v) for k, v in seconds.items()}
        lines += ["| `retrieve.py --langs en de cy sw --layers 12` (fp32; median of "
                  f"{args.reps}, alternating) | base model (s) | with an adapter (s) | adapter against base |",
                  "|---|---|---|---|", *(f"| {t} | {med[t, False]:.1f} | {med[t, True]:.1f} | "
                                         f"{med[t, True] / med[t, False]:.2f}× |" for t in (args.merge_ref, "this tree")),
                  ""]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
