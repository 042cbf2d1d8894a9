"""Alignment and task objectives, schedule, and train.py end to end (tiny model; the real default is slow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import hf_model, tiny_args, write_tiny_data
from midalign.align import AlignConfig, alignment_loss, contrastive_loss, infonce_floor
from midalign.checkpoint import load_model
from midalign.data.tasks import Pair, slots_from_annotation
from midalign.lora import LoRAConfig, apply_lora
from midalign.schedule import GradientSplit, alignment_batch, inverse_sqrt_lr, micro_batch_kinds, task_batch
from midalign.sft import collate, task_loss

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))


def test_contrastive_loss_equals_hand_computation():
    a = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]])
    b = torch.tensor([[2.0, 0.1], [0.5, 0.5], [-0.2, 1.0]])
    tau = 0.5

    def cos(u, v):
        return sum(x * y for x, y in zip(u, v)) / math.sqrt(sum(x * x for x in u) * sum(y * y for y in v))

    def one_way(x, y):
        total = 0.0
        for k in range(3):
            scores = [cos(x[k].tolist(), y[j].tolist()) / tau for j in range(3)]
            total += -(scores[k] - math.log(sum(math.exp(s) for s in scores)))
        return total / 3

    assert contrastive_loss(a, b, tau).item() == pytest.approx(one_way(a, b), rel=1e-6)
    assert contrastive_loss(a, b, tau, symmetric=True).item() == pytest.approx((one_way(a, b) + one_way(b, a)) / 2, rel=1e-6)


def test_infonce_floor_is_the_loss_of_a_regular_simplex_and_nothing_reaches_below():
    n = 16
    # n unit vectors with pairwise cosine −1/(n−1): the centred basis of R^n, normalised
    simplex = torch.nn.functional.normalize(torch.eye(n, dtype=torch.float64) - 1 / n, dim=-1)
    for tau in (0.1, 1.0, 1.5, 2.0):
        assert infonce_floor(n, tau) == pytest.approx(contrastive_loss(simplex, simplex, tau).item(), rel=1e-4)
        # any other configuration (random, or a simplex with the positives moved off) lies above it
        for seed in range(3):
            x = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
            assert contrastive_loss(x, x + 0.3 * torch.randn_like(x), tau).item() > infonce_floor(n, tau)
    assert infonce_floor(n, 1.5) == pytest.approx(2.124, abs=1e-3) and infonce_floor(n, 0.1) < 1e-3
    assert math.log(n) > infonce_floor(n, 100.0) > math.log(n) - 0.01  # at large τ the range closes at chance
    with pytest.raises(ValueError, match="at least 2"):
        infonce_floor(1, 1.0)


def test_gradient_split_gives_each_objectives_gradient_norm_as_separate_autograd_does():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    params = list(net.parameters())
    xs = [torch.randn(4, 6) for _ in range(4)]
    losses = [lambda x: net(x).pow(2).mean(), lambda x: net(x).sin().sum()]  # "task", "align"
    kinds = ["task", "align", "task", "align"]
    # reference: each objective's summed gradient alone, from autograd.grad
    reference = {}
    for kind, f in zip(("task", "align"), losses):
        total = sum(f(x) for x, k in zip(xs, kinds) if k == kind) / len(kinds)
        reference[kind] = torch.cat([g.reshape(-1) for g in torch.autograd.grad(total, params)]).norm().item()
    split = GradientSplit(params)
    for _ in range(2):  # two updates: norms() starts each afresh
        for x, kind in zip(xs, kinds):
            ((losses[0] if kind == "task" else losses[1])(x) / len(kinds)).backward()
            split.add(kind)
        assert split.norms() == pytest.approx(reference, rel=1e-5)
        net.zero_grad(set_to_none=True)


def test_schedule_alternation_accumulation_and_learning_rate():
    assert micro_batch_kinds(4) == ["task", "align", "task", "align"]
    assert micro_batch_kinds(4, align=False) == ["task"] * 4
    assert micro_batch_kinds(2, task=False) == ["align"] * 2
    with pytest.raises(ValueError, match="must be even"):
        micro_batch_kinds(3)
    # lr·t/W in warmup, lr·√(W/t) after (W = 10)
    assert [inverse_sqrt_lr(t, 1.0, 10) for t in (1, 5, 10, 40, 90)] == pytest.approx([0.1, 0.5, 1.0, 0.5, 1 / 3])
    # task batches: each epoch a permutation, reproducible from the index alone
    epoch0 = sum((task_batch(10, 3, i, seed=1) for i in range(3)), [])
    assert len(set(epoch0)) == 9 and task_batch(10, 3, 1, seed=1) == task_batch(10, 3, 1, seed=1)
    assert sorted(sum((task_batch(9, 3, i, seed=1) for i in range(3, 6)), [])) == list(range(9))


def test_alignment_batches_never_repeat_an_english_sentence_and_spread_languages():
    by_lang = {lang: [Pair(lang, f"{lang}{i}", f"en{i}") for i in range(10)] for lang in ("a", "b", "c", "d")}
    counts = {lang: 0 for lang in by_lang}
    for i in range(200):
        batch = alignment_batch(by_lang, 8, i, seed=0)
        assert len(batch) == 8 and len({p.en for p in batch}) == 8
        for p in batch:
            counts[p.lang] += 1
    assert min(counts.values()) > 0.2 * 1600 and max(counts.values()) < 0.3 * 1600


def test_slot_answer_from_massive_annotation():
    assert slots_from_annotation("wake me up at [time : five am] [date : this week]") == "time: five am; date: this week"
    assert slots_from_annotation("hello there") == "None"


@pytest.fixture(scope="module")
def tiny_lora(tiny_chat_checkpoint):
    model = load_model(tiny_chat_checkpoint, device="cpu")
    apply_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return model


def test_alignment_step_updates_only_lora_of_layers_up_to_i(tiny_lora):
    model = tiny_lora
    model.zero_grad()
    ids = [[5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16]]
    loss = alignment_loss(model, ids, [s[::-1] for s in ids], AlignConfig(layer=2, temperature=0.1))
    loss.backward()
    for name, p in model.named_parameters():
        layer = int(name.split(".")[2]) if name.startswith("model.layers.") else None
        expect = "lora_" in name and layer is not None and layer < 2  # decoder layers 1..2 = indices 0, 1
        assert (p.grad is not None and p.grad.abs().sum() > 0) == expect, name


def test_task_loss_equals_transformers_loss_on_answer_tokens(tiny_chat_checkpoint):
    model = load_model(tiny_chat_checkpoint, device="cpu")
    batch = [([1, 5, 6, 7], [8, 9, 2]), ([1, 5], [10, 11, 12, 13, 2])]
    ids, mask, labels = collate(batch, pad_id=0)
    assert labels.tolist()[0] == [-100, -100, -100, -100, 8, 9, 2]
    with torch.no_grad():
        ours = task_loss(model, ids, mask, labels)
        theirs = hf_model(tiny_chat_checkpoint)(input_ids=ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def run_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, cwd=ROOT)


def test_train_cli_end_to_end_and_bad_input(tiny_chat_checkpoint, tmp_path):
    data = write_tiny_data(tmp_path / "data")
    res = run_train(*tiny_args(tiny_chat_checkpoint, data, tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    run = tmp_path / "run"
    for path in ("best/adapter_model.safetensors", "last/adapter_config.json", "state/optimizer.pt", "config.json"):
        assert (run / path).is_file(), path
    rows = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "eval" not in r]
    evals = [r for r in rows if "eval" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6] and all("task_loss" in r and "align_loss" in r for r in steps)
    for r in steps:  # each objective's gradient norm before clipping: the total lies between |a − b| and a + b
        a, b = r["task_grad_norm"], r["align_grad_norm"]
        assert a > 0 and b > 0 and abs(a - b) - 1e-6 <= r["grad_norm"] <= a + b + 1e-6
    assert [r["step"] for r in evals] == [2, 4, 6]
    assert all(abs(r["dev_loss"] - r["dev_task_loss"] - r["dev_align_loss"]) < 1e-9 for r in evals)
    # the time it will take, said at the start and again after the first updates (6 planned, 4 timed)
    assert "[cost] ≈ " in res.stderr and " per update × 6 updates" in res.stderr, res.stderr
    said = res.stdout + res.stderr  # the measured line is written above the progress bar
    assert "[cost] measured " in said and "(updates 2–4): 2 updates left" in said, said

    bad = tmp_path / "data" / "train.fr-en.jsonl"
    bad.write_text('{"translation": {"fr": "a", "en": "b"}}\n{"translation": {"fr": "a"}}\n')
    res = run_train(*tiny_args(tiny_chat_checkpoint, {**data, "train": bad}, tmp_path / "bad"))
    assert res.returncode != 0 and "train.fr-en.jsonl:2: translation has no 'en' sentence" in res.stderr
    res = run_train(*tiny_args(tiny_chat_checkpoint, data, tmp_path / "bad2"), "--align-layer", "9")
    assert res.returncode != 0 and "--align-layer 9 is out of range" in res.stderr
    res = run_train(*tiny_args(tiny_chat_checkpoint, data, tmp_path / "bad3"), "--align-langs", "xx")
    assert res.returncode != 0 and "no alignment pairs for xx" in res.stderr


def test_alignment_pair_formats_agree_and_bad_lines_are_named(tmp_path):
    from midalign.data.tasks import load_pairs
    from midalign.errors import DataError

    (tmp_path / "Tatoeba.cy-en.cy").write_text("Bore da.\n\nDiolch.\n")
    (tmp_path / "Tatoeba.cy-en.en").write_text("Good morning.\nEmpty.\nThank you.\n")
    (tmp_path / "p.tsv").write_text("cy\tBore da.\tGood morning.\ncy\tDiolch.\tThank you.\n")
    (tmp_path / "p.jsonl").write_text('{"lang": "cy", "text": "Bore da.", "en": "Good morning."}\n'
                                      '{"lang": "cy", "text": "Diolch.", "en": "Thank you."}\n')
    expected = [Pair("cy", "Bore da.", "Good morning."), Pair("cy", "Diolch.", "Thank you.")]
    for name in ("Tatoeba.cy-en.cy", "p.tsv", "p.jsonl"):
        assert load_pairs(tmp_path / name) == expected, name
    (tmp_path / "bad.tsv").write_text("cy\tBore da.\tGood morning.\ncy\tDiolch.\n")
    with pytest.raises(DataError, match=r"bad.tsv:2: expected 3 tab-separated fields"):
        load_pairs(tmp_path / "bad.tsv")
    (tmp_path / "Tatoeba.cy-en.en").write_text("Good morning.\n")
    with pytest.raises(DataError, match="must be line-aligned"):
        load_pairs(tmp_path / "Tatoeba.cy-en.cy")


def test_cost_counts_every_projection_and_says_when_settings_are_sized_for_a_gpu(tiny_chat_checkpoint):
    """pass_flops against the model's own weight matrices: 4 × their parameters × tokens (forward and the
    backward to the inputs of frozen weights), the LM head on the answer tokens only."""
    from midalign.checkpoint import load_model
    from midalign.cost import estimate_line, pass_flops

    model = load_model(tiny_chat_checkpoint, device="cpu")
    layers = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n]
    per_layer = sum(m.weight.numel() for m in layers) / model.config.num_hidden_layers
    head = model.lm_head.weight.numel()
    assert pass_flops(model.config, 10, head_tokens=3) == 4 * per_layer * model.config.num_hidden_layers * 10 + 4 * head * 3
    assert pass_flops(model.config, 10, layers=1) == 4 * per_layer * 10
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    slow = estimate_line(2e15, 5000, 1e11, cpu, torch.bfloat16, "paper")  # 2 PFLOP × 5,000 at 0.1 TFLOP/s
    assert "at least 27777.8 h" in slow and "sized for a GPU" in slow and "2315 days" in slow
    assert "sized for a GPU" not in estimate_line(2e15, 5000, 1e11, gpu, torch.bfloat16, "paper")
    assert "sized for a GPU" not in estimate_line(1e12, 200, 1e11, cpu, torch.bfloat16, "demo")
