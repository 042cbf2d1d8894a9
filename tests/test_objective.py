"""The alignment objective as records (midalign/align.py: POOLS, LOSSES, AlignConfig): each pooling against
hand-computed vectors, several layers against the mean of one-layer losses, unknown names as one-line
errors, and a pooling and a loss defined in this file alone that train (train.py) and retrieve
(retrieve.py) without editing the package."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_args, write_tiny_data
from midalign.align import LOSSES, POOLS, AlignConfig, alignment_loss, encode_pairs
from midalign.checkpoint import load_model
from midalign.errors import SettingsError
from midalign.retrieval import margin_retrieval

# two sequences of hidden states (B 2, T 4, d 2): one left-padded (2 real tokens), one full
HIDDEN = torch.tensor([[[9.0, 9.0], [9.0, 9.0], [1.0, 2.0], [3.0, 4.0]],
                       [[5.0, 6.0], [7.0, 8.0], [1.0, 0.0], [0.0, 1.0]]])
LEFT = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
RIGHT = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])


def test_each_pooling_equals_its_hand_computed_vector():
    assert POOLS["bos"](HIDDEN, LEFT).tolist() == [[1.0, 2.0], [5.0, 6.0]]  # first real token
    assert POOLS["last"](HIDDEN, LEFT).tolist() == [[3.0, 4.0], [0.0, 1.0]]  # last real token
    assert POOLS["bos"](HIDDEN, RIGHT).tolist() == [[9.0, 9.0], [5.0, 6.0]]  # right padding: position 0 is real
    assert POOLS["last"](HIDDEN, RIGHT).tolist() == [[9.0, 9.0], [0.0, 1.0]]
    assert POOLS["mean"](HIDDEN, LEFT).tolist() == [[2.0, 3.0], [13 / 4, 15 / 4]]
    assert POOLS["mean-skip-first"](HIDDEN, LEFT).tolist() == [[3.0, 4.0], pytest.approx([8 / 3, 9 / 3])]
    assert all(POOLS[p](HIDDEN.bfloat16(), LEFT).dtype == torch.float32 for p in POOLS)  # pooled in fp32


def test_unknown_pooling_or_loss_is_an_error_naming_the_choices():
    with pytest.raises(SettingsError, match=r"unknown pooling 'max': choose from mean, mean-skip-first, bos, last"):
        AlignConfig(12, 0.1, pool="max")
    with pytest.raises(SettingsError, match=r"unknown alignment loss 'mse': choose from infonce, infonce-symmetric"):
        AlignConfig(12, 0.1, loss="mse")
    for tau in (0, -1.5, float("nan")):
        with pytest.raises(SettingsError, match="τ must be a positive number"):
            AlignConfig(12, tau)
    with pytest.raises(SettingsError, match="counted from 1"):
        AlignConfig((12, 0), 0.1)


def test_two_layer_alignment_is_the_mean_of_the_one_layer_losses(tiny_chat_checkpoint):
    model = load_model(tiny_chat_checkpoint, device="cpu")
    g = torch.Generator().manual_seed(0)
    src = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (5, 9, 7, 4)]
    en = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (6, 8, 3, 9)]
    with torch.no_grad():
        one = [alignment_loss(model, src, en, AlignConfig(layer, 0.5, "mean-skip-first")).item() for layer in (1, 3)]
        both = alignment_loss(model, src, en, AlignConfig((1, 3), 0.5, "mean-skip-first")).item()
        symmetric = alignment_loss(model, src, en, AlignConfig(3, 0.5, loss="infonce-symmetric")).item()
        forward = alignment_loss(model, src, en, AlignConfig(3, 0.5)).item()
        backward = alignment_loss(model, en, src, AlignConfig(3, 0.5)).item()
    assert both == pytest.approx(sum(one) / 2, rel=1e-6) and abs(one[0] - one[1]) > 1e-4
    assert symmetric == pytest.approx((forward + backward) / 2, rel=1e-6)


def max_pool(hidden, mask):
    """A toy pooling: the element-wise maximum over real tokens."""
    return hidden.float().masked_fill(~mask.bool()[..., None], float("-inf")).amax(1)


def mse(src, en, config):
    """A toy loss: the mean squared distance of the pooled translations."""
    return (src - en).pow(2).mean()


def test_a_new_pooling_and_loss_are_one_entry_each(tiny_chat_checkpoint, tmp_path, monkeypatch):
    import retrieve
    import train

    from midalign.data.assemble import group_pairs
    from midalign.data.tasks import load_pairs
    from midalign.schedule import alignment_batch
    from midalign.tokenizer import ChatTokenizer

    monkeypatch.setitem(POOLS, "max", max_pool)
    monkeypatch.setitem(LOSSES, "mse", mse)
    data = write_tiny_data(tmp_path / "data")
    out = tmp_path / "run"
    train.main(tiny_args(tiny_chat_checkpoint, data, out, "--align-only", "--pool", "max", "--align-loss", "mse",
                         "--max-steps", "2", "--lora-dropout", "0"))
    first = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    # update 1 runs the base model (LoRA B = 0): its loss is the toy loss of the toy pooling of the first batches
    model, tok = load_model(tiny_chat_checkpoint, device="cpu"), ChatTokenizer(tiny_chat_checkpoint)
    expected = []
    for index in (0, 1):  # --grad-accum 2: two alignment micro-batches in update 1
        pairs = alignment_batch(group_pairs(load_pairs(data["pairs"])), 4, index, 0)
        s, e = encode_pairs(tok, pairs, 128)
        with torch.no_grad():
            pooled = [max_pool(*states) for states in (layer_states(model, s), layer_states(model, e))]
        expected.append(mse(*pooled, None).item())
    assert first["align_loss"] == pytest.approx(sum(expected) / 2, rel=1e-5)

    sentences = tmp_path / "multiway.jsonl"
    rows = [{"de": f"Alle Menschen {i} sind frei", "fr": f"Tous les êtres {i} naissent libres"} for i in range(6)]
    sentences.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    retrieve.main(["--model", str(tiny_chat_checkpoint), "--data", str(sentences), "--langs", "de", "fr", "--layers",
                   "2", "--pool", "max", "--margin", "cosine", "--out", str(tmp_path / "ret")])
    result = json.loads((tmp_path / "ret" / "results.json").read_text())
    # brute force: max-pooled layer-2 states, nearest neighbour by cosine, share retrieved correctly
    x, y = (max_pool(*layer_states(model, tok.encode_batch([r[l] for r in rows]))) for l in ("de", "fr"))
    brute = (margin_retrieval(x, y, margin="cosine") == torch.arange(6)).float().mean().item()
    assert result["pools"]["max"]["per_direction"]["de-fr"] == [pytest.approx(brute)]


def layer_states(model, token_ids, layer: int = 2):
    """Hidden states of `layer` and the mask of a left-padded batch (the tiny model's middle layer)."""
    from midalign.batching import left_pad

    ids, mask = left_pad(token_ids, 0, torch.device("cpu"))
    with torch.no_grad():
        return model(ids, mask, output_hidden_states=[layer]).hidden_states[layer], mask


def test_fit_with_an_unknown_pooling_or_loss_stops_before_writing_anything(tiny_chat_checkpoint, tmp_path):
    from midalign.training import TrainSettings, fit

    data = write_tiny_data(tmp_path / "data")
    for field, value, message in (("pool", "max", "pool = 'max' .* must be one of mean, mean-skip-first"),
                                  ("align_loss", "mse", "align_loss = 'mse' .* must be one of infonce"),
                                  ("temperature", -1.0, "temperature = -1.0 .* must be a finite number > 0")):
        out = tmp_path / field
        settings = TrainSettings(model=str(tiny_chat_checkpoint), train_data=[data["train"]], align_data=[data["pairs"]],
                                 align_layer=2, max_steps=1, out=out, **{field: value})
        with pytest.raises(SettingsError, match=message):
            fit(settings)
        assert not out.exists()
