"""Data parallel training under torchrun: 2 CPU processes with gloo against one process (issue 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_args, write_tiny_data

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))
NO_DROPOUT = ("--lora-dropout", "0")  # dropout masks cannot match between 1 and 2 processes


def train(*args: str, processes: int = 1) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([*launcher, str(ROOT / "train.py"), *args], capture_output=True, text=True, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def steps(run_dir: Path) -> list[dict]:
    return [json.loads(l) for l in (run_dir / "log.jsonl").read_text().splitlines() if "eval" not in json.loads(l)]


@pytest.fixture(scope="module")
def runs(tiny_chat_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    data = write_tiny_data(folder / "data")
    args = lambda name, *extra: tiny_args(tiny_chat_checkpoint, data, folder / name, *NO_DROPOUT, *extra)
    train(*args("one", "--align-gather"))
    train(*args("two-gather", "--align-gather"), processes=2)
    train(*args("two-per-rank"), processes=2)
    return data, folder


def test_two_processes_with_gathered_negatives_equal_one_process(runs):
    _, folder = runs
    one, two = steps(folder / "one"), steps(folder / "two-gather")
    assert [r["step"] for r in two] == [1, 2, 3, 4, 5, 6]  # one log, written by rank 0 only
    for a, b in zip(one, two):
        for key in ("task_loss", "align_loss", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
    for which in ("last", "best"):
        x = load_file(folder / "one" / which / "adapter_model.safetensors")
        y = load_file(folder / "two-gather" / which / "adapter_model.safetensors")
        assert x.keys() == y.keys()
        for k in x:
            torch.testing.assert_close(y[k], x[k], rtol=1e-4, atol=1e-6)
    config = json.loads((folder / "two-gather" / "config.json").read_text())
    assert config["world_size"] == 2


def test_per_rank_negatives_average_each_ranks_own_contrastive_loss(runs, tiny_chat_checkpoint):
    import train as trainer

    from midalign.align import alignment_loss
    from midalign.checkpoint import load_model
    from midalign.align import encode_pairs
    from midalign.data.assemble import group_pairs
    from midalign.data.tasks import load_pairs
    from midalign.schedule import alignment_batch
    from midalign.align import AlignConfig
    from midalign.tokenizer import ChatTokenizer

    data, folder = runs
    args = trainer.parse_args(tiny_args(tiny_chat_checkpoint, data, folder / "x"))
    model, tok = load_model(tiny_chat_checkpoint, device="cpu"), ChatTokenizer(tiny_chat_checkpoint)
    batch = alignment_batch(group_pairs(load_pairs(data["pairs"])), args.align_batch_size, 0, args.seed)
    config = AlignConfig(args.align_layer, args.temperature, args.pool)  # one layer: train.py records a number
    with torch.no_grad():  # update 1 runs the base model (LoRA B = 0, no dropout)
        per_rank = [alignment_loss(model, *encode_pairs(tok, batch[r::2], args.align_max_length), config,
                                   tok.pad_id).item() for r in range(2)]
        whole = alignment_loss(model, *encode_pairs(tok, batch, args.align_max_length), config, tok.pad_id).item()
    logged = steps(folder / "two-per-rank")[0]["align_loss"]
    assert logged == pytest.approx(sum(per_rank) / 2, rel=1e-5)
    assert steps(folder / "two-gather")[0]["align_loss"] == pytest.approx(whole, rel=1e-5)
    assert abs(logged - whole) > 1e-3  # the two modes differ: fewer negatives per rank


def test_task_loss_shards_add_up_to_the_global_mean(tiny_chat_checkpoint):
    from midalign.checkpoint import load_model
    from midalign.sft import answer_tokens, collate, task_loss

    model = load_model(tiny_chat_checkpoint, device="cpu")
    batch = [([1, 5, 6, 7], [8, 9, 2]), ([1, 5], [10, 11, 12, 13, 2]), ([1, 7, 7], [9, 2]), ([1], [5, 6, 2])]
    n = answer_tokens(collate(batch, 0)[2])
    assert n == 3 + 5 + 2 + 3
    with torch.no_grad():
        whole = task_loss(model, *collate(batch, 0))
        shards = sum(task_loss(model, *collate(batch[r::2], 0), num_tokens=n) for r in range(2))
    torch.testing.assert_close(shards, whole, rtol=1e-6, atol=1e-6)
