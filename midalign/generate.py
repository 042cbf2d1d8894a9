"""Batched greedy decoding with a KV cache (paper §3: greedy, left padding, stop at any EOS id)."""

from __future__ import annotations

from typing import Sequence

import torch

from midalign.batching import left_pad, length_sorted_batches
from midalign.cli import run
from midalign.errors import MidalignError
from midalign.model import CausalLM, KVCache


MIN_SHARED_PREFIX = 8  # tokens: below this, prefilling the prefix separately saves nothing


class GenerationError(MidalignError, RuntimeError):
    """Decoding met NaN or inf logits: an argmax over them is no answer, so none is returned."""


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens that every prompt starts with, leaving each prompt at least one token of its own."""
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for i in range(n):
        if any(p[i] != first[i] for p in prompts):
            return i
    return max(n, 0)


def prefill(model: CausalLM, prompts: Sequence[Sequence[int]], cache: KVCache, pad_id: int,
            share_prefix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the prompts into `cache`; returns (last-position logits (B, 1, V), attention mask (B, S)).

    The tokens all prompts start with (a task's system prompt: ~100 of the slot prompts' ~120 tokens) are
    computed once, at batch 1, and their keys and values copied to every row; the rest of each prompt is
    left-padded after them. Positions count real tokens only, so every row sees exactly what it would
    alone: the same computation as prefilling the whole prompts, without repeating the shared part."""
    device = model.lm_head.weight.device
    shared = common_prefix_length(prompts) if share_prefix and len(prompts) > 1 else 0
    if shared < MIN_SHARED_PREFIX:
        ids, mask = left_pad(prompts, pad_id, device)
        return model(ids, mask, cache=cache, logits_to_keep=1).logits, mask
    head = KVCache(model.config, 1, shared, device, cache.k.dtype)
    model(torch.tensor([list(prompts[0][:shared])], device=device), cache=head, logits_to_keep=None)
    cache.k[:, :, :, :shared] = head.k  # broadcast over the batch
    cache.v[:, :, :, :shared] = head.v
    cache.advance(shared)
    ids, mask = left_pad([p[shared:] for p in prompts], pad_id, device)
    mask = torch.cat([torch.ones(len(prompts), shared, dtype=mask.dtype, device=device), mask], dim=1)
    return model(ids, mask, cache=cache, logits_to_keep=1).logits, mask


@torch.inference_mode()
def greedy_generate(model: CausalLM, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                    eos_ids: Sequence[int], pad_id: int, share_prefix: bool = True) -> list[list[int]]:
    """New tokens for each prompt (one batch), stopping at the first EOS id, which is not returned."""
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt: every prompt needs at least one token")
    device = model.lm_head.weight.device
    B, T = len(prompts), max(len(p) for p in prompts)
    cache = KVCache(model.config, B, T + max_new_tokens, device, model.lm_head.weight.dtype)
    eos = torch.tensor(list(eos_ids), device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    out = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logits, mask = prefill(model, prompts, cache, pad_id, share_prefix)
    broken = torch.zeros(B, dtype=torch.bool, device=device)  # rows that met non-finite logits (checked once, at the end)
    for step in range(max_new_tokens):
        broken |= ~done & ~torch.isfinite(logits[:, -1]).all(-1)
        nxt = logits[:, -1].argmax(-1)  # (B,)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        out[:, step] = nxt
        done |= torch.isin(nxt, eos)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # finished rows feed pad; never read
        logits = model(nxt[:, None], mask, cache=cache, logits_to_keep=1).logits
    if bool(broken.any()):
        raise GenerationError(f"NaN or inf logits while decoding {int(broken.sum())} of {B} prompts: the model's or "
                              f"adapter's weights hold non-finite values, or its precision overflowed (try --dtype fp32)")
    results = []
    for row in out.tolist():
        stop = next((i for i, t in enumerate(row) if t in set(eos_ids)), len(row))
        results.append(row[:stop])
    return results


def generate(model: CausalLM, prompts: Sequence[Sequence[int]], max_new_tokens: int, eos_ids: Sequence[int],
             pad_id: int, batch_size: int = 8, progress: bool = False) -> list[list[int]]:
    """Greedy outputs for any number of prompts, in input order, batched by length."""
    from tqdm import tqdm

    results: list[list[int]] = [[] for _ in prompts]
    batches = list(length_sorted_batches([len(p) for p in prompts], batch_size))
    for batch in tqdm(batches, desc="generate", unit="batch", disable=not progress):
        for i, new in zip(batch, greedy_generate(model, [prompts[i] for i in batch], max_new_tokens, eos_ids, pad_id)):
            results[i] = new
    return results


def main(argv: list[str] | None = None) -> None:
    """A short generation demo: translate a few real sentences to English with a chat model."""
    import argparse
    import time

    from midalign.checkpoint import load_model_and_tokenizer
    from midalign.registry import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="python -m midalign.generate", description=main.__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="offline alias, local HF folder or hub id")
    parser.add_argument("--system", default="Translate the following sentences from {lang} to English.",
                        help="system prompt ({lang} is filled in)")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="per prompt")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts decoded together")
    args = parser.parse_args(argv)
    sentences = {  # UDHR Article 1, first sentence
        "German": "Alle Menschen sind frei und gleich an Würde und Rechten geboren.",
        "French": "Tous les êtres humains naissent libres et égaux en dignité et en droits.",
        "Spanish": "Todos los seres humanos nacen libres e iguales en dignidad y derechos.",
        "Russian": "Все люди рождаются свободными и равными в своем достоинстве и правах.",
        "Chinese": "人人生而自由，在尊严和权利上一律平等。",
        "Welsh": "Genir pawb yn rhydd ac yn gydradd â'i gilydd mewn urddas a hawliau.",
        "Icelandic": "Hver maður er borinn frjáls og jafn öðrum að virðingu og réttindum.",
        "Swahili": "Watu wote wamezaliwa huru, hadhi na haki zao ni sawa.",
    }
    model, tok = load_model_and_tokenizer(args.model)
    prompts = [tok.chat_ids([{"role": "system", "content": args.system.format(lang=lang)},
                             {"role": "user", "content": text}]) for lang, text in sentences.items()]
    start = time.perf_counter()
    outputs = generate(model, prompts, args.max_new_tokens, tok.eos_ids, tok.pad_id, args.batch_size)
    seconds = time.perf_counter() - start
    for (lang, text), out in zip(sentences.items(), outputs):
        print(f"{lang:10s} {text}\n{'':10s} → {tok.decode(out)}")
    n = sum(len(o) for o in outputs)
    print(f"\n{n} tokens in {seconds:.1f} s ({n / seconds:.1f} tokens/s, batch {args.batch_size}, "
          f"{model.lm_head.weight.dtype}, {model.lm_head.weight.device})")


if __name__ == "__main__":
    run(main)
