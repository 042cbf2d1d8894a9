"""The hand-written decoder against transformers on tiny random Llama (GQA, llama3 RoPE) and Qwen2 (bias)."""

from __future__ import annotations


import pytest
import torch

from conftest import hf_model, read_config, write_tiny_checkpoint
from midalign.checkpoint import load_model
from midalign.errors import CheckpointError
from midalign.config import ConfigError, ModelConfig
from midalign.batching import left_pad
from midalign.generate import greedy_generate

ATOL = 1e-5


def random_ids(batch: int, length: int, seed: int = 0, vocab: int = 128) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=g)


def test_logits_and_every_hidden_state_match_transformers(tiny_checkpoint):
    ours, ref = load_model(tiny_checkpoint, device="cpu"), hf_model(tiny_checkpoint)
    ids = random_ids(2, 17)
    L = ours.config.num_hidden_layers
    with torch.no_grad():
        out = ours(ids, output_hidden_states=range(L + 1))
        hf = ref(ids, output_hidden_states=True)
    torch.testing.assert_close(out.logits, hf.logits, atol=ATOL, rtol=0)
    assert len(hf.hidden_states) == L + 1
    for i in range(L + 1):  # 0 = embeddings, i = output of layer i; L after the final norm (as transformers)
        torch.testing.assert_close(out.hidden_states[i], hf.hidden_states[i], atol=ATOL, rtol=0)
    torch.testing.assert_close(out.last_hidden_state, hf.hidden_states[L], atol=ATOL, rtol=0)
    with torch.no_grad():  # a pass that stops at L (no LM head) gives the same, normed, last state
        early = ours(ids, output_hidden_states=[L], stop_after_layer=L, logits_to_keep=None)
    torch.testing.assert_close(early.hidden_states[L], hf.hidden_states[L], atol=ATOL, rtol=0)


def test_the_last_positions_reach_the_lm_head_contiguous_when_the_weights_are_frozen(tiny_checkpoint):
    # torch's matmul of a strided (B, n, d) slice with a weight that needs no grad (every base weight under
    # LoRA) copies the whole (vocab × d) weight once per row: on a real vocabulary, seconds per prefill
    model = load_model(tiny_checkpoint, device="cpu").requires_grad_(False)
    seen = []
    model.lm_head.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
    ids = random_ids(3, 11)
    with torch.inference_mode():
        last, every = model(ids, logits_to_keep=2).logits, model(ids).logits
    assert seen == [True, True]
    torch.testing.assert_close(last, every[:, -2:], atol=ATOL, rtol=0)


def test_stop_after_layer_runs_only_the_needed_layers(tiny_checkpoint):
    model = load_model(tiny_checkpoint, device="cpu")
    ids = random_ids(2, 9)
    calls = []
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
             for i, layer in enumerate(model.model.layers)]
    head = model.lm_head.register_forward_hook(lambda m, a, o: calls.append("head"))
    with torch.no_grad():
        early = model(ids, output_hidden_states=[1, 2], stop_after_layer=2)
    assert calls == [0, 1] and early.logits is None and early.last_hidden_state is None
    for h in hooks + [head]:
        h.remove()
    with torch.no_grad():
        full = model(ids, output_hidden_states=[2])
    torch.testing.assert_close(early.hidden_states[2], full.hidden_states[2], atol=0, rtol=0)
    with pytest.raises(ValueError, match="out of range"):
        model(ids, stop_after_layer=model.config.num_hidden_layers + 1)
    with pytest.raises(ValueError, match="stops after layer 1"):
        model(ids, output_hidden_states=[2], stop_after_layer=1)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_each_sequence_alone(tiny_checkpoint, side):
    model = load_model(tiny_checkpoint, device="cpu")
    seqs = [random_ids(1, n, seed=n)[0].tolist() for n in (5, 11, 8)]
    if side == "left":
        ids, mask = left_pad(seqs, pad_id=0)
    else:
        T = max(map(len, seqs))
        ids = torch.tensor([s + [0] * (T - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in seqs])
    with torch.no_grad():
        batched = model(ids, mask, output_hidden_states=[2])
        for b, s in enumerate(seqs):
            alone = model(torch.tensor([s]), output_hidden_states=[2])
            rows = slice(ids.shape[1] - len(s), None) if side == "left" else slice(0, len(s))
            torch.testing.assert_close(batched.logits[b, rows], alone.logits[0], atol=ATOL, rtol=0)
            torch.testing.assert_close(batched.hidden_states[2][b, rows], alone.hidden_states[2][0], atol=ATOL, rtol=0)
    # and transformers gives the same padded logits on real positions
    with torch.no_grad():
        ref = hf_model(tiny_checkpoint)(ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(batched.logits[real], ref[real], atol=ATOL, rtol=0)


def test_greedy_generation_is_token_identical_to_transformers(tiny_checkpoint):
    model, ref = load_model(tiny_checkpoint, device="cpu"), hf_model(tiny_checkpoint)
    prompts = [random_ids(1, n, seed=10 + n)[0].tolist() for n in (3, 9, 6)]
    eos = [5, 7]
    ours = greedy_generate(model, prompts, max_new_tokens=12, eos_ids=eos, pad_id=0)
    ids, mask = left_pad(prompts, pad_id=0)
    with torch.no_grad():
        hf = ref.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=eos,
                          pad_token_id=0)[:, ids.shape[1]:].tolist()
    expected = []
    for row in hf:  # HF keeps the EOS and pads after it; midalign returns the tokens before the EOS
        stop = next((i for i, t in enumerate(row) if t in eos), len(row))
        expected.append(row[:stop])
    assert ours == expected
    assert any(len(r) < 12 for r in expected) or all(len(r) == 12 for r in expected)


def test_prompts_sharing_a_prefix_generate_as_transformers_does_on_the_whole_prompts(tiny_checkpoint):
    """The shared prefix (a task's system prompt) is prefilled once and copied to every row: the same
    tokens as transformers generating from the whole left-padded prompts, and the same first logits."""
    from midalign.generate import MIN_SHARED_PREFIX, common_prefix_length, prefill
    from midalign.model import KVCache

    model, ref = load_model(tiny_checkpoint, device="cpu"), hf_model(tiny_checkpoint)
    system = random_ids(1, 12, seed=3)[0].tolist()
    prompts = [system + random_ids(1, n, seed=20 + n)[0].tolist() for n in (1, 7, 4)]
    assert common_prefix_length(prompts) >= 12 >= MIN_SHARED_PREFIX
    assert common_prefix_length([[1, 2], [1, 2, 3]]) == 1  # each prompt keeps a token of its own
    ours = greedy_generate(model, prompts, max_new_tokens=10, eos_ids=[5], pad_id=0)
    assert ours == greedy_generate(model, prompts, max_new_tokens=10, eos_ids=[5], pad_id=0, share_prefix=False)
    ids, mask = left_pad(prompts, pad_id=0)
    with torch.no_grad():
        hf = ref.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, eos_token_id=[5],
                          pad_token_id=0)[:, ids.shape[1]:].tolist()
        first = ref(ids, attention_mask=mask).logits[:, -1]
    assert ours == [row[:row.index(5)] if 5 in row else row for row in hf]
    with torch.inference_mode():
        cache = KVCache(model.config, 3, ids.shape[1] + 1, "cpu", torch.float32)
        logits, _ = prefill(model, prompts, cache, pad_id=0)
    torch.testing.assert_close(logits[:, -1], first, atol=ATOL, rtol=0)


def test_non_finite_logits_while_decoding_are_an_error_not_an_answer(tiny_checkpoint):
    from midalign.generate import GenerationError

    model = load_model(tiny_checkpoint, device="cpu")
    prompts = random_ids(2, 5, seed=1).tolist()
    assert greedy_generate(model, prompts, max_new_tokens=4, eos_ids=[5], pad_id=0)  # finite: answers
    with torch.no_grad():
        model.lm_head.weight[7, 0] = float("nan")  # one vocabulary row: every position's logit 7 is NaN
    with pytest.raises(GenerationError, match="NaN or inf logits while decoding 2 of 2 prompts"):
        greedy_generate(model, prompts, max_new_tokens=4, eos_ids=[5], pad_id=0)


def test_sharded_checkpoint_loads(tmp_path):
    folder = tmp_path / "sharded"
    write_tiny_checkpoint("llama", tmp_path / "single")
    ref = hf_model(tmp_path / "single")
    ref.save_pretrained(folder, max_shard_size="100KB")
    assert (folder / "model.safetensors.index.json").is_file()
    ids = random_ids(1, 7)
    with torch.no_grad():
        torch.testing.assert_close(load_model(folder, device="cpu")(ids).logits, ref(ids).logits, atol=ATOL, rtol=0)


def test_strict_load_names_missing_unexpected_and_misshapen_tensors(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = write_tiny_checkpoint("llama", tmp_path / "m")
    state = load_file(folder / "model.safetensors")
    state.pop("model.layers.1.mlp.up_proj.weight")
    state["model.layers.0.extra.weight"] = torch.zeros(2)
    state["model.norm.weight"] = torch.zeros(3)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_model(folder, device="cpu")
    msg = str(e.value)
    assert "missing (1): model.layers.1.mlp.up_proj.weight" in msg
    assert "unexpected (1): model.layers.0.extra.weight" in msg
    assert "model.norm.weight: checkpoint (3,), model (64,)" in msg


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    folder = write_tiny_checkpoint("qwen2", tmp_path / "m")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(folder, device="cpu")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="weight file missing"):
        load_model(folder, device="cpu")


def test_config_reads_nested_rope_parameters_and_rejects_what_it_cannot_run(tmp_path):
    raw = read_config(write_tiny_checkpoint("llama", tmp_path / "m"))  # transformers 5 writes rope_parameters
    nested = ModelConfig.from_hf(raw)
    classic = {k: v for k, v in raw.items() if k != "rope_parameters"}
    classic["rope_theta"] = raw["rope_parameters"]["rope_theta"]
    classic["rope_scaling"] = {k: v for k, v in raw["rope_parameters"].items() if k != "rope_theta"}
    assert ModelConfig.from_hf(classic) == nested
    assert nested.rope_scaling["rope_type"] == "llama3" and nested.rope_theta == 500000.0
    with pytest.raises(ConfigError, match="model_type 'mistral' is not supported"):
        ModelConfig.from_hf({**raw, "model_type": "mistral"})
    with pytest.raises(ConfigError, match="rope_scaling type 'yarn' is not supported"):
        ModelConfig.from_hf({**raw, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    bad = tmp_path / "bad" / "config.json"
    bad.parent.mkdir()
    bad.write_text('{"model_type": "llama",\n "hidden_size": }')
    with pytest.raises(ConfigError, match=r"config.json:2: not valid JSON"):
        ModelConfig.from_hf(bad.parent)
    with pytest.raises(ConfigError, match="missing key 'vocab_size'"):
        ModelConfig.from_hf({k: v for k, v in raw.items() if k != "vocab_size"})


def test_model_name_that_is_neither_folder_alias_nor_hub_id(tmp_path):
    with pytest.raises(CheckpointError, match="neither a local model folder"):
        load_model(str(tmp_path / "does-not-exist"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path / "empty")


def test_hub_id_without_network_fails_fast_and_clearly(monkeypatch, tmp_path):
    import time

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="could not be fetched"):
        load_model("meta-llama/Llama-3.2-1B-Instruct")
    assert time.monotonic() - start < 30


def test_hub_id_with_unreachable_endpoint_fails_fast(monkeypatch, tmp_path):
    """No network: the endpoint refuses connections (a closed loopback port) — an error, never a hang."""
    import time

    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(c, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE", "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="could not be fetched"):
        load_model("Qwen/Qwen2.5-0.5B-Instruct")
    assert time.monotonic() - start < 60
