"""Batched greedy decoding with a KV cache (paper §3: greedy, left padding, stop at any EOS id)."""

from __future__ import annotations

from collections import deque
from typing import Sequence

import torch

from midalign.batching import left_pad
from midalign.cli import run
from midalign.errors import MidalignError
from midalign.model import CausalLM, KVCache


MIN_SHARED_PREFIX = 8  # tokens: below this, prefilling the prefix separately saves nothing


class GenerationError(MidalignError, RuntimeError):
    """Decoding met NaN or inf logits: an argmax over them is no answer, so none is returned."""

    @classmethod
    def of(cls, broken: int, total: int) -> "GenerationError":
        return cls(f"NaN or inf logits while decoding {broken} of {total} prompts: the model's or adapter's weights "
                   "hold non-finite values, or its precision overflowed (try --dtype fp32)")


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
        raise GenerationError.of(int(broken.sum()), B)
    results = []
    for row in out.tolist():
        stop = next((i for i, t in enumerate(row) if t in set(eos_ids)), len(row))
        results.append(row[:stop])
    return results


class RefillDecoder:
    """Greedy decoding of many prompts in `batch_size` rows, each row refilled with the next waiting prompt as
    soon as its answer ends (continuous batching).

    The rows share one KV cache whose time axis is global: every step appends one position to all rows, a
    row's own tokens are where its key mask is 1, and the holes left by earlier occupants are masked out.
    Positions count a row's real tokens only (`CausalLM.forward`), so each row computes what it would alone.
    The prompts' common prefix (a task's system prompt) is run once and kept at positions [0, P) of every
    row. Waiting prompts are taken longest first, so a newly admitted prompt always fits behind the rows'
    current end; when the cache is full its rows are compacted (real tokens moved together, in order)."""

    HEADROOM = 32  # positions beyond the longest prompt + answer: decoding steps between compactions

    def __init__(self, model: CausalLM, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 eos_ids: Sequence[int], pad_id: int, batch_size: int, refill_at: int):
        self.model, self.prompts, self.max_new, self.pad = model, prompts, max_new_tokens, pad_id
        self.eos = set(eos_ids)
        device, cfg = model.lm_head.weight.device, model.config
        shared = common_prefix_length(prompts) if len(prompts) > 1 else 0
        self.P = shared if shared >= MIN_SHARED_PREFIX else 0
        self.queue = deque(sorted(range(len(prompts)), key=lambda i: -len(prompts[i])))
        self.B = min(batch_size, len(prompts))
        self.refill_at = max(1, min(refill_at, self.B))
        longest = len(prompts[self.queue[0]]) - self.P
        self.cache = KVCache(cfg, self.B, self.P + longest + max_new_tokens + self.HEADROOM, device,
                             model.lm_head.weight.dtype)
        self.key_mask = torch.zeros(self.B, self.cache.k.shape[3], dtype=torch.long, device=device)
        self.logits = torch.zeros(self.B, cfg.vocab_size, device=device)
        self.row: list[int | None] = [None] * self.B  # the prompt each row decodes
        self.answer: list[list[int]] = [[] for _ in range(self.B)]
        self.results: list[list[int] | None] = [None] * len(prompts)
        self.broken: set[int] = set()
        if self.P:  # run once at batch 1, copied to every row
            head = KVCache(cfg, 1, self.P, device, self.cache.k.dtype)
            model(torch.tensor([list(prompts[0][:self.P])], device=device), cache=head, logits_to_keep=None)
            self.cache.k[:, :, :, :self.P], self.cache.v[:, :, :, :self.P] = head.k, head.v
            self.cache.advance(self.P)
            self.key_mask[:, :self.P] = 1

    def admit(self, rows: list[int]) -> None:
        """Prefill the next waiting prompts (one batch, left-padded) and move their keys and values into `rows`."""
        group = [self.queue.popleft() for _ in rows]
        P, cache, device = self.P, self.cache, self.key_mask.device
        T = max(len(self.prompts[i]) - P for i in group)
        if cache.length < P + T:  # only before the first admission and after every row emptied
            self.key_mask[:, cache.length:P + T] = 0
            cache.advance(P + T - cache.length)
        rows_t = torch.tensor(rows, device=device)
        fresh = KVCache(self.model.config, len(rows), P + T, device, cache.k.dtype)
        fresh.k[:, :, :, :P], fresh.v[:, :, :, :P] = cache.k[:, :1, :, :P], cache.v[:, :1, :, :P]
        fresh.advance(P)
        ids, mask = left_pad([self.prompts[i][P:] for i in group], self.pad, device)
        full = torch.cat([torch.ones(len(rows), P, dtype=mask.dtype, device=device), mask], dim=1)
        logits = self.model(ids, full, cache=fresh, logits_to_keep=1).logits[:, -1]
        start, end = cache.length - T, cache.length
        cache.k[:, rows_t, :, start:end] = fresh.k[:, :, :, P:]
        cache.v[:, rows_t, :, start:end] = fresh.v[:, :, :, P:]
        self.key_mask[rows_t, P:] = 0
        self.key_mask[rows_t, start:end] = mask
        self.logits[rows_t] = logits.to(self.logits.dtype)
        for r, i in zip(rows, group):
            self.row[r], self.answer[r] = i, []

    def compact(self) -> None:
        """Move each row's real tokens after the prefix together (in order, ending at one shared position)."""
        P, cache, mask = self.P, self.cache, self.key_mask
        real = [mask[b, P:cache.length].nonzero().squeeze(1) + P for b in range(self.B)]
        m = max(len(r) for r in real)
        for b, src in enumerate(real):
            start = P + m - len(src)
            cache.k[:, b, :, start:P + m] = cache.k[:, b, :, src]
            cache.v[:, b, :, start:P + m] = cache.v[:, b, :, src]
            mask[b, P:] = 0
            mask[b, start:P + m] = 1
        cache.length = P + m

    def finish(self, r: int) -> None:
        self.results[self.row[r]] = self.answer[r]
        self.row[r] = None
        self.key_mask[r, self.P:] = 0

    def run(self, progress) -> list[list[int]]:
        cache, device = self.cache, self.key_mask.device
        while True:
            free = [r for r in range(self.B) if self.row[r] is None]
            if self.queue and (len(free) >= min(self.refill_at, len(self.queue)) or len(free) == self.B):
                self.admit(free[:len(self.queue)])
            running = [r for r in range(self.B) if self.row[r] is not None]
            if not running:
                return self.results
            bad = (~torch.isfinite(self.logits).all(-1)).tolist()
            nxt = self.logits.argmax(-1)
            for r, t in zip(running, nxt[running].tolist()):
                if bad[r]:
                    self.broken.add(self.row[r])
                if t not in self.eos:
                    self.answer[r].append(t)
                if t in self.eos or len(self.answer[r]) == self.max_new:
                    self.finish(r)
                    progress.update(1)
            going = torch.tensor([self.row[r] is not None for r in range(self.B)], device=device)
            if not bool(going.any()):
                continue
            if cache.length == self.key_mask.shape[1]:
                self.compact()
            self.key_mask[:, cache.length] = going.long()
            ids = torch.where(going, nxt, torch.full_like(nxt, self.pad))[:, None]
            out = self.model(ids, self.key_mask[:, :cache.length + 1], cache=cache, logits_to_keep=1).logits
            self.logits = out[:, -1].to(self.logits.dtype)


@torch.inference_mode()
def generate(model: CausalLM, prompts: Sequence[Sequence[int]], max_new_tokens: int, eos_ids: Sequence[int],
             pad_id: int, batch_size: int = 8, progress: bool = False, refill_at: int | None = None) -> list[list[int]]:
    """Greedy outputs (the tokens before the first EOS id) for any number of prompts, in input order.

    `batch_size` rows decode at once and a row whose answer has ended takes the next waiting prompt
    (`RefillDecoder`); it is refilled once `refill_at` rows are free (default a quarter of the batch: each
    refill is one prefill pass). The tokens are those of `greedy_generate` on any batch of the prompts."""
    from tqdm import tqdm

    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt: every prompt needs at least one token")
    if batch_size < 1 or (refill_at is not None and refill_at < 1):
        raise ValueError(f"batch_size {batch_size} and refill_at {refill_at} must be at least 1")
    if not prompts or max_new_tokens < 1:
        return [[] for _ in prompts]
    decoder = RefillDecoder(model, prompts, max_new_tokens, eos_ids, pad_id, batch_size,
                            refill_at or max(1, batch_size // 4))
    with tqdm(total=len(prompts), desc="generate", unit="answer", disable=not progress) as bar:
        results = decoder.run(bar)
    if decoder.broken:
        raise GenerationError.of(len(decoder.broken), len(prompts))
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
