"""The CUDA precision path — bf16 weights, bf16 autocast, fp32 LoRA factors and optimizer state — run on
CPU (`--dtype bf16`) and compared with transformers + peft run the same way (bf16 weights, bf16 autocast,
peft's fp32 adapter weights). bf16 keeps ~3 significant digits, so results agree to about 1e-2 of their
scale, not bit for bit. MIDALIGN_TEST_DEVICE=cuda runs the same tests on a GPU (bench/gpu_check.sh)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import TEST_DEVICE, hf_model, tiny_args, write_tiny_data
from midalign.adapters import adapter_from_model, merge_adapters, read_adapter, save_adapter, load_adapter
from midalign.align import AlignConfig, alignment_loss, contrastive_loss, mean_pool
from midalign.batching import left_pad
from midalign.checkpoint import load_model
from midalign.lora import LoRAConfig, apply_lora, lora_modules
from midalign.precision import autocast
from midalign.retrieval import embed_layers
from midalign.sft import task_loss

peft = pytest.importorskip("peft")
ROOT = Path(__file__).parent.parent
BF16 = torch.bfloat16
AMP = autocast(TEST_DEVICE, BF16)


def close(ours: torch.Tensor, theirs: torch.Tensor, tol: float = 3e-2) -> None:
    """Agreement to `tol` of the reference's scale (bf16 has 8 bits of mantissa)."""
    err = (ours.float() - theirs.float()).abs().max().item()
    assert err <= tol * max(theirs.float().abs().max().item(), 1e-3), (err, theirs.float().abs().max().item())


def lora_pair(folder: Path, tmp_path: Path, seed: int = 0):
    """midalign and transformers + peft, both bf16 with the same random fp32 LoRA (r 4, dropout 0)."""
    ours = load_model(folder, TEST_DEVICE, BF16)
    config = LoRAConfig(r=4, alpha=8, dropout=0.0)
    apply_lora(ours, config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora_modules(ours).values():
            m.lora_A.copy_(torch.randn(m.lora_A.shape, generator=g) * 0.1)
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.1)
    save_adapter(adapter_from_model(ours, config), tmp_path / f"adapter{seed}")
    base = hf_model(folder).to(TEST_DEVICE, BF16)
    theirs = peft.PeftModel.from_pretrained(base, tmp_path / f"adapter{seed}", is_trainable=True)
    return ours, theirs


def lora_grads(model) -> dict[str, torch.Tensor]:
    return {n.replace("base_model.model.", "").replace(".default", "").removesuffix(".weight"): p.grad
            for n, p in model.named_parameters() if p.requires_grad}


def test_lora_factors_stay_fp32_on_a_bf16_model(tiny_checkpoint, tmp_path):
    ours, theirs = lora_pair(tiny_checkpoint, tmp_path)
    assert ours.lm_head.weight.dtype == BF16
    assert {p.dtype for p in ours.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in theirs.parameters() if p.requires_grad} == {torch.float32}  # peft's choice too


def test_task_micro_batch_in_bf16_equals_transformers_peft(tiny_checkpoint, tmp_path):
    ours, theirs = lora_pair(tiny_checkpoint, tmp_path)
    ids = torch.randint(3, 128, (3, 12), generator=torch.Generator().manual_seed(1)).to(TEST_DEVICE)
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :5] = -100
    with AMP():
        loss = task_loss(ours, ids, mask, labels)
        ref = theirs(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert loss.dtype == torch.float32  # the cross-entropy runs in fp32
    close(loss, ref, 1e-2)
    loss.backward()
    ref.backward()
    theirs_grads = lora_grads(theirs)
    for name, grad in lora_grads(ours).items():
        assert grad.dtype == torch.float32
        close(grad, theirs_grads[name], 5e-2)


def test_alignment_micro_batch_in_bf16_equals_transformers_peft(tiny_checkpoint, tmp_path):
    ours, theirs = lora_pair(tiny_checkpoint, tmp_path)
    g = torch.Generator().manual_seed(2)
    src = [torch.randint(3, 128, (n,), generator=g).tolist() for n in (5, 9, 7, 4)]
    en = [torch.randint(3, 128, (n,), generator=g).tolist() for n in (6, 8, 3, 9)]
    layer = 2
    with AMP():
        loss = alignment_loss(ours, src, en, AlignConfig(layer, temperature=0.1))
        ids, mask = left_pad(src + en, 0, TEST_DEVICE)
        hidden = theirs(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
        # the reference: masked mean and InfoNCE written out in fp32 from transformers' hidden states
        m = mask.float()[..., None]
        pooled = (hidden.float() * m).sum(1) / m.sum(1)
        with torch.autocast(TEST_DEVICE.type, enabled=False):
            sims = F.normalize(pooled[:4], dim=-1) @ F.normalize(pooled[4:], dim=-1).T / 0.1
            ref = F.cross_entropy(sims, torch.arange(4, device=TEST_DEVICE))
    assert loss.dtype == torch.float32
    close(loss, ref, 2e-2)
    loss.backward()
    ref.backward()
    theirs_grads = lora_grads(theirs)
    ours_grads = {n: g for n, g in lora_grads(ours).items() if g is not None}
    assert ours_grads and all(int(n.split(".")[2]) < layer for n in ours_grads)  # layers above i get no gradient
    for name, grad in ours_grads.items():
        close(grad, theirs_grads[name], 8e-2)


def test_precision_sensitive_parts_run_in_fp32_under_autocast():
    h = torch.randn(2, 5, 8, dtype=BF16)
    mask = torch.ones(2, 5, dtype=torch.long)
    with torch.autocast("cpu", dtype=BF16):
        pooled = mean_pool(h, mask)
        a, b = torch.randn(4, 8), torch.randn(4, 8)
        loss = contrastive_loss(a, b, 0.1)
        with torch.autocast("cpu", enabled=False):
            exact = F.cross_entropy(F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / 0.1, torch.arange(4))
    assert pooled.dtype == torch.float32 and loss.dtype == torch.float32
    torch.testing.assert_close(loss, exact, atol=1e-6, rtol=1e-6)  # fp32 to the last digits, not bf16's 1e-2


def test_generation_and_retrieval_states_in_bf16_equal_transformers(tiny_checkpoint):
    ours = load_model(tiny_checkpoint, TEST_DEVICE, BF16)
    ref = hf_model(tiny_checkpoint).to(TEST_DEVICE, BF16)
    seqs = [torch.randint(3, 128, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in (6, 11, 8)]
    ids, mask = left_pad(seqs, 0, TEST_DEVICE)
    with torch.no_grad():
        close(ours(ids, mask, logits_to_keep=1).logits, ref(input_ids=ids, attention_mask=mask).logits[:, -1:])
        L = ours.config.num_hidden_layers
        embedded = embed_layers(ours, seqs, list(range(L + 1)))["mean"]  # (L + 1, N, d), fp32
        hf_states = ref(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert embedded.dtype == torch.float32
    for layer in range(L + 1):
        close(embedded[layer].to(TEST_DEVICE), mean_pool(hf_states[layer], mask))


@pytest.mark.parametrize("method", ["linear", "cat"])
def test_merged_adapter_on_a_bf16_model_equals_peft(tiny_checkpoint, tmp_path, method):
    ours, theirs = lora_pair(tiny_checkpoint, tmp_path, seed=0)
    lora_pair(tiny_checkpoint, tmp_path, seed=1)  # writes adapter1
    theirs.load_adapter(tmp_path / "adapter1", adapter_name="align")
    theirs.add_weighted_adapter(["default", "align"], [0.9, 0.1], "merged", combination_type=method)
    theirs.set_adapter("merged")
    save_adapter(merge_adapters([read_adapter(tmp_path / f"adapter{s}") for s in (0, 1)], [0.9, 0.1], method),
                 tmp_path / "merged")
    mid = load_model(tiny_checkpoint, TEST_DEVICE, BF16)
    load_adapter(mid, tmp_path / "merged")
    ids = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(3)).to(TEST_DEVICE)
    with torch.no_grad(), AMP():
        close(mid(ids).logits, theirs(input_ids=ids).logits)


def test_train_cli_bf16_evaluates_and_resumes_exactly(tiny_chat_checkpoint, tmp_path):
    """A bf16 run with dev evaluation, killed (SIGKILL) in update 5 and resumed, ends with the same adapters
    and log as one without a stop."""
    data = write_tiny_data(tmp_path / "data")
    args = lambda out: [*tiny_args(tiny_chat_checkpoint, data, out), "--device", TEST_DEVICE.type, "--dtype", "bf16"]
    run = lambda *cmd: subprocess.run([sys.executable, *map(str, cmd)], capture_output=True, text=True, cwd=ROOT)
    whole = run(ROOT / "train.py", *args(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    killed = run(ROOT / "tests" / "faults.py", "kill-mid-step", *args(tmp_path / "resumed"))
    assert killed.returncode == -9
    resumed = run(ROOT / "train.py", *args(tmp_path / "resumed"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "whole" / "config.json").read_text())["dtype"] == "torch.bfloat16"
    logs = [[{k: v for k, v in json.loads(l).items() if k != "elapsed_s"} for l in (tmp_path / r / "log.jsonl")
             .read_text().splitlines()] for r in ("whole", "resumed")]
    assert logs[0] == logs[1] and [r["step"] for r in logs[0] if "eval" in r] == [2, 4, 6]
    for name in ("best", "last"):
        a, b = read_adapter(tmp_path / "whole" / name), read_adapter(tmp_path / "resumed" / name)
        assert all(torch.equal(A, b.weights[k][0]) and torch.equal(B, b.weights[k][1]) for k, (A, B) in a.weights.items())
