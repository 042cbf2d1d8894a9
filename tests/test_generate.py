"""Refill (continuous-batching) decoding against static-batch decoding and transformers, token for token."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from conftest import TEST_DEVICE, hf_model
from midalign.batching import left_pad
from midalign.checkpoint import load_model
from midalign.generate import GenerationError, RefillDecoder, generate, greedy_generate

MAX_NEW = 16


def mixed_prompts(vocab: int, n: int, system: int, seed: int = 0) -> list[list[int]]:
    """`n` prompts behind a shared `system` prefix (none if 0), with own parts of very different lengths."""
    rng = random.Random(seed)
    prefix = [rng.randrange(3, vocab) for _ in range(system)]
    return [prefix + [rng.randrange(3, vocab) for _ in range(rng.choice([1, 2, 5, 13, 31]))] for _ in range(n)]


def early_stops(model, prompts) -> list[int]:
    """End-of-answer ids that end answers at as many different lengths as possible, some never: up to three
    of the tokens the model emits, added one at a time, each spreading the first stops the most."""
    free = [greedy_generate(model, [p], MAX_NEW, [-1], 0)[0] for p in prompts]
    ends = lambda ids: [next((i for i, t in enumerate(row) if t in ids), MAX_NEW) for row in free]
    eos: list[int] = []
    for _ in range(3):
        fits = [t for t in {t for row in free for t in row} - set(eos) if MAX_NEW in ends(eos + [t])]
        eos.append(max(fits, key=lambda t: len(set(ends(eos + [t])))))
    return eos


@pytest.fixture
def compactions(monkeypatch) -> list[int]:
    """Counts RefillDecoder.compact calls (the cache's rows moved together when full)."""
    calls: list[int] = []
    original = RefillDecoder.compact

    def counted(self):
        calls.append(self.cache.length)
        original(self)

    monkeypatch.setattr(RefillDecoder, "compact", counted)
    return calls


@pytest.mark.parametrize("system", [12, 0])
def test_refill_decoding_equals_each_prompt_decoded_alone_and_in_static_batches(tiny_checkpoint, compactions, system):
    model = load_model(tiny_checkpoint, device=TEST_DEVICE)  # bench/gpu_check.sh runs it on CUDA
    prompts = mixed_prompts(model.config.vocab_size, 21, system)
    eos = early_stops(model, prompts)
    alone = [greedy_generate(model, [p], MAX_NEW, eos, 0)[0] for p in prompts]
    lengths = Counter(len(a) for a in alone)
    assert lengths[MAX_NEW] and len(lengths) >= 3, lengths  # rows end at different steps
    static = [row for i in range(0, 21, 8) for row in greedy_generate(model, prompts[i:i + 8], MAX_NEW, eos, 0)]
    assert static == alone
    for batch, refill_at in ((1, 1), (4, 1), (4, 3), (8, 2), (32, 1)):
        assert generate(model, prompts, MAX_NEW, eos, 0, batch_size=batch, refill_at=refill_at) == alone, (batch, refill_at)
    assert compactions  # the full cache was compacted at least once along the way


def test_refill_decoding_equals_transformers_generate(tiny_checkpoint):
    model, ref = load_model(tiny_checkpoint, device="cpu"), hf_model(tiny_checkpoint)
    prompts = mixed_prompts(model.config.vocab_size, 9, 10, seed=1)
    eos = early_stops(model, prompts)
    ours = generate(model, prompts, MAX_NEW, eos, 0, batch_size=3, refill_at=1)
    expected = []
    for p in prompts:
        ids, mask = left_pad([p], pad_id=0)
        with torch.no_grad():
            row = ref.generate(ids, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=eos,
                               pad_token_id=0)[0, ids.shape[1]:].tolist()
        expected.append(next((row[:i] for i, t in enumerate(row) if t in eos), row))
    assert ours == expected
    assert any(len(r) < MAX_NEW for r in expected) and any(len(r) == MAX_NEW for r in expected)


def test_refill_decoding_edges(tiny_checkpoint):
    model = load_model(tiny_checkpoint, device="cpu")
    prompts = mixed_prompts(model.config.vocab_size, 3, 9, seed=2)
    assert generate(model, [], MAX_NEW, [5], 0) == []
    assert generate(model, prompts, 0, [5], 0) == [[], [], []]
    assert generate(model, prompts[:1], 3, [-1], 0) == greedy_generate(model, prompts[:1], 3, [-1], 0)
    with pytest.raises(ValueError, match="empty prompt"):
        generate(model, [prompts[0], []], 4, [5], 0)
    with pytest.raises(ValueError, match="batch_size 0 and refill_at None must be at least 1"):
        generate(model, prompts, 4, [5], 0, batch_size=0)
    with torch.no_grad():
        model.lm_head.weight[7, 0] = float("nan")  # every position's logit 7 is NaN
    with pytest.raises(GenerationError, match="NaN or inf logits while decoding 3 of 3 prompts"):
        generate(model, prompts, 4, [5], 0, batch_size=2)
