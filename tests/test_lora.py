"""LoRA layer, PEFT-format adapters (peft as the oracle) and merging (against the closed-form math)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import hf_model, write_tiny_checkpoint
from midalign.adapters import (Adapter, AdapterError, adapter_from_model, load_adapter, merge_adapters, read_adapter,
                               save_adapter)
from midalign.checkpoint import load_model
from midalign.config import ModelConfig
from midalign.lora import (DEFAULT_TARGETS, LoRAConfig, apply_lora, lora_modules, merge_lora, trainable_parameters,
                           unmerge_lora)
from midalign.model import CausalLM

peft = pytest.importorskip("peft")
FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize("fixture, expected", [("llama-3-8b-config.json", 20_971_520),
                                               ("qwen2.5-7b-config.json", 20_185_088)])
def test_trainable_parameter_counts_match_the_paper(fixture, expected):
    with torch.device("meta"):
        model = CausalLM(ModelConfig.from_hf(FIXTURES / fixture))
        apply_lora(model, LoRAConfig(r=8, alpha=16))
    assert trainable_parameters(model) == expected
    assert all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())


def randomise_lora(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.1)
            m.lora_A.copy_(torch.randn(m.lora_A.shape, generator=g) * 0.1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_checkpoint("qwen2", tmp_path_factory.mktemp("tiny-lora"))


def test_init_keeps_checkpoint_keys_and_starts_at_the_base_model(tiny):
    model = load_model(tiny, device="cpu")
    keys_before = set(model.state_dict())
    ids = torch.randint(3, 128, (2, 9))
    with torch.no_grad():
        before = model(ids).logits
    apply_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.0))
    base_keys = {k for k in model.state_dict() if ".lora_" not in k}
    assert base_keys == keys_before
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before, atol=0, rtol=0)  # B = 0
    m = lora_modules(model)["model.layers.0.self_attn.q_proj"]
    bound = 1 / m.in_features ** 0.5  # kaiming_uniform(a=√5) on [r, in] gives U(-1/√in, 1/√in)
    assert m.lora_A.abs().max() <= bound and m.lora_A.std() > bound / 3 and (m.lora_B == 0).all()


def test_merge_and_unmerge_are_exact_inverses_of_the_lora_branch(tiny):
    model = load_model(tiny, device="cpu")
    apply_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.0))
    randomise_lora(model)
    ids = torch.randint(3, 128, (2, 9))
    with torch.no_grad():
        unmerged = model(ids).logits
        for m in lora_modules(model).values():
            m.merge()
        merged = model(ids).logits
        for m in lora_modules(model).values():
            m.unmerge()
        again = model(ids).logits
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)
    torch.testing.assert_close(again, unmerged, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merge_lora_writes_w_plus_the_rounded_update_bit_for_bit(tiny, dtype):
    """merge_lora (one shared product buffer) = W + (s·(B A)).to(dtype), written out per module."""
    model = load_model(tiny, device="cpu", dtype=dtype)
    apply_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.0))
    randomise_lora(model)
    modules = lora_modules(model)
    # an fp32 checkpoint loaded as fp32 stays on the file's pages (merged out of place); bf16 was converted
    assert all(m.weight.file_backed == (dtype == torch.float32) for m in modules.values())
    before = {n: m.weight.detach().clone() for n, m in modules.items()}
    expected = {n: before[n] + (m.scaling * (m.lora_B @ m.lora_A)).detach().to(dtype) for n, m in modules.items()}
    merge_lora(model)
    for n, m in modules.items():
        assert m.merged and torch.equal(m.weight.detach(), expected[n]), n
    unmerge_lora(model)
    for n, m in modules.items():
        assert not m.merged
        torch.testing.assert_close(m.weight.detach(), before[n], atol=1e-2 if dtype == torch.bfloat16 else 1e-6, rtol=0)


def test_gradients_reach_only_lora_parameters(tiny):
    model = load_model(tiny, device="cpu")
    apply_lora(model, LoRAConfig(r=4, alpha=8))
    randomise_lora(model)
    model.train()
    model(torch.randint(3, 128, (2, 9))).logits.sum().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == ("lora_" in name), name


def test_midalign_adapter_loads_in_peft_with_the_same_logits(tiny, tmp_path):
    model = load_model(tiny, device="cpu")
    config = LoRAConfig(r=4, alpha=8, dropout=0.0, use_rslora=True)
    apply_lora(model, config)
    randomise_lora(model)
    save_adapter(adapter_from_model(model, config), tmp_path / "ad")
    ref = peft.PeftModel.from_pretrained(hf_model(tiny), tmp_path / "ad").eval()
    ids = torch.randint(3, 128, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(input_ids=ids).logits, atol=1e-5, rtol=0)


def test_merged_inference_equals_the_unmerged_adapter_and_leaves_its_files(tiny, tmp_path):
    """evaluate.py / retrieve.py load adapters merged (the base model's cost): same outputs as the unmerged
    adapter (midalign's and peft's) within fp32 rounding, same greedy tokens; the adapter's files untouched."""
    from midalign.generate import greedy_generate

    cfg = peft.LoraConfig(r=4, lora_alpha=16, lora_dropout=0.1, target_modules=list(DEFAULT_TARGETS),
                          init_lora_weights=False, task_type="CAUSAL_LM")
    torch.manual_seed(2)
    ref = peft.get_peft_model(hf_model(tiny), cfg).eval()
    ref.save_pretrained(tmp_path / "ad")
    files = {p.name: p.read_bytes() for p in (tmp_path / "ad").iterdir()}
    unmerged, merged = load_model(tiny, device="cpu"), load_model(tiny, device="cpu")
    load_adapter(unmerged, tmp_path / "ad", check_base=False)
    load_adapter(merged, tmp_path / "ad", check_base=False, merge=True)
    assert all(m.merged for m in lora_modules(merged).values())
    assert not any(m.merged for m in lora_modules(unmerged).values())
    ids = torch.randint(3, 128, (3, 13))
    with torch.no_grad():
        ours = merged(ids).logits
        assert (ours - load_model(tiny, device="cpu")(ids).logits).abs().max() > 1e-2  # the adapter matters
        torch.testing.assert_close(ours, unmerged(ids).logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours, ref(input_ids=ids).logits, atol=1e-5, rtol=0)
    prompts = [ids[0, :5].tolist(), ids[1].tolist(), ids[2, :9].tolist()]
    assert greedy_generate(merged, prompts, 8, [2], 0) == greedy_generate(unmerged, prompts, 8, [2], 0)
    assert {p.name: p.read_bytes() for p in (tmp_path / "ad").iterdir()} == files


def test_peft_adapter_loads_in_midalign_with_the_same_logits(tiny, tmp_path):
    cfg = peft.LoraConfig(r=4, lora_alpha=16, lora_dropout=0.1, target_modules=list(DEFAULT_TARGETS),
                          init_lora_weights=False, task_type="CAUSAL_LM")  # random B: a non-trivial adapter
    torch.manual_seed(1)
    ref = peft.get_peft_model(hf_model(tiny), cfg).eval()
    ref.save_pretrained(tmp_path / "peft")
    model = load_model(tiny, device="cpu")
    loaded = load_adapter(model, tmp_path / "peft", check_base=False)
    assert loaded.r == 4 and loaded.scaling == 4.0
    ids = torch.randint(3, 128, (2, 11))
    with torch.no_grad():
        ours, theirs = model(ids).logits, ref(input_ids=ids).logits
        base = load_model(tiny, device="cpu")(ids).logits
    assert (ours - base).abs().max() > 1e-3  # the adapter is not a no-op
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_adapter_that_does_not_fit_is_a_clear_error(tiny, tmp_path):
    other = write_tiny_checkpoint("qwen2", tmp_path / "other", hidden_size=32)
    small = load_model(other, device="cpu")
    config = LoRAConfig(r=4, alpha=8)
    apply_lora(small, config)
    save_adapter(adapter_from_model(small, config), tmp_path / "small")
    with pytest.raises(AdapterError, match=r"adapter was trained on '.*other'"):
        load_adapter(load_model(tiny, device="cpu"), tmp_path / "small")
    with pytest.raises(AdapterError, match="do not fit the model"):
        load_adapter(load_model(tiny, device="cpu"), tmp_path / "small", check_base=False)
    attn_only = LoRAConfig(r=4, alpha=8, targets=("q_proj", "v_proj"))
    model = load_model(tiny, device="cpu")
    apply_lora(model, attn_only)
    save_adapter(adapter_from_model(model, attn_only), tmp_path / "qv")
    full = load_model(tiny, device="cpu")
    apply_lora(full, LoRAConfig(r=4, alpha=8))
    with pytest.raises(AdapterError, match="do not match the model's LoRA layers"):
        load_adapter(full, tmp_path / "qv")
    with pytest.raises(ValueError, match=r"LoRA targets \['wq'\] match no linear layer"):
        apply_lora(load_model(tiny, device="cpu"), LoRAConfig(targets=("wq",)))
    (tmp_path / "qv" / "adapter_config.json").write_text('{"peft_type": "LORA",\n "r": }')
    with pytest.raises(AdapterError, match=r"adapter_config.json:2: not valid JSON"):
        read_adapter(tmp_path / "qv")


def random_adapter(seed: int, r: int, names=("model.layers.0.mlp.up_proj", "model.layers.1.self_attn.q_proj"),
                   alpha: float = 16.0) -> Adapter:
    g = torch.Generator().manual_seed(seed)
    weights = {n: (torch.randn(r, 6, generator=g), torch.randn(5, r, generator=g)) for n in names}
    return Adapter(LoRAConfig(r=r, alpha=alpha, targets=("q_proj", "up_proj")), "base", weights)


def delta(adapter: Adapter, name: str) -> torch.Tensor:
    a, b = adapter.weights[name]
    return adapter.config.scaling * b @ a


def test_cat_merge_is_the_exact_weighted_sum_of_updates_and_linear_is_not():
    a1, a2 = random_adapter(0, r=4, alpha=8.0), random_adapter(1, r=4, alpha=16.0)  # scalings 2 and 4
    cat = merge_adapters([a1, a2], [0.9, 0.1], "cat")
    lin = merge_adapters([a1, a2], [0.9, 0.1], "linear")
    assert cat.config.r == 8 and cat.config.scaling == lin.config.scaling == 1.0 and lin.config.r == 4
    for name in a1.weights:
        exact = 0.9 * delta(a1, name) + 0.1 * delta(a2, name)
        torch.testing.assert_close(delta(cat, name), exact, atol=1e-5, rtol=1e-6)
        (A1, B1), (A2, B2) = a1.weights[name], a2.weights[name]
        k1, k2 = 0.9 * 2.0, 0.1 * 4.0  # wᵢsᵢ
        cross = (k1 * k2) ** 0.5 * (B1 @ A2 + B2 @ A1)  # what linear adds to the exact sum
        torch.testing.assert_close(delta(lin, name), k1 * B1 @ A1 + k2 * B2 @ A2 + cross, atol=1e-4, rtol=1e-5)
        assert (delta(lin, name) - exact).abs().max() > 1e-2
    # different ranks: fine for cat, refused by linear (as peft)
    a3 = random_adapter(2, r=2, alpha=4.0)
    mixed = merge_adapters([a1, a3], [0.5, 0.5], "cat")
    for name in a1.weights:
        torch.testing.assert_close(delta(mixed, name), 0.5 * delta(a1, name) + 0.5 * delta(a3, name), atol=1e-5, rtol=1e-6)
    with pytest.raises(AdapterError, match="equal ranks"):
        merge_adapters([a1, a3], [0.5, 0.5], "linear")
    # same targets (q_proj, up_proj) on a model with more layers: the modules that differ are named
    deeper = random_adapter(3, 4, names=(*a1.weights, "model.layers.2.self_attn.q_proj"))
    with pytest.raises(AdapterError, match=r"only in adapter 1: none; only in adapter 2: model.layers.2.self_attn.q_proj"):
        merge_adapters([a1, deeper], [0.5, 0.5], "cat")
    with pytest.raises(AdapterError, match="adapter 2 was trained on 'other', adapter 1 on 'base'"):
        merge_adapters([a1, Adapter(deeper.config, "other", deeper.weights)], [0.5, 0.5], "cat")


@pytest.mark.parametrize("method, ranks", [("linear", (4, 4)), ("cat", (4, 2))])
def test_merges_equal_peft_add_weighted_adapter(tiny, tmp_path, method, ranks):
    """Adapters made by peft (unequal alphas/scalings), merged by both libraries with the paper's 0.9 / 0.1:
    the same tensors and the same logits of the merged model."""
    torch.manual_seed(0)
    base = hf_model(tiny)
    configs = [peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(DEFAULT_TARGETS), lora_dropout=0.0,
                               init_lora_weights=False) for r, alpha in zip(ranks, (16, 4))]
    model = peft.get_peft_model(base, configs[0], adapter_name="task")
    model.add_adapter("align", configs[1])
    for name in ("task", "align"):
        model.save_pretrained(tmp_path / "peft", selected_adapters=[name])
    model.add_weighted_adapter(["task", "align"], [0.9, 0.1], "merged", combination_type=method)
    model.set_adapter("merged")
    ids = torch.randint(3, 128, (2, 9))
    with torch.no_grad():
        expected = model(input_ids=ids).logits

    ours = merge_adapters([read_adapter(tmp_path / "peft" / n) for n in ("task", "align")], [0.9, 0.1], method)
    theirs = {k.replace("base_model.model.", "").replace(".lora_A.merged.weight", ""): v
              for k, v in model.state_dict().items() if ".lora_A.merged." in k}
    for name, (a, b) in ours.weights.items():
        torch.testing.assert_close(a, theirs[name], atol=1e-6, rtol=1e-6)
    save_adapter(ours, tmp_path / "merged")
    mid = load_model(tiny, device="cpu")
    load_adapter(mid, tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(mid(ids).logits, expected, atol=1e-5, rtol=1e-5)


def test_merge_cli_into_base_gives_base_plus_adapter_logits_in_both_libraries(tiny, tmp_path):
    paths = []
    for seed, r in ((0, 4), (1, 2)):
        model = load_model(tiny, device="cpu")
        config = LoRAConfig(r=r, alpha=2 * r, dropout=0.0)
        apply_lora(model, config)
        randomise_lora(model, seed)
        save_adapter(adapter_from_model(model, config), tmp_path / f"ad{seed}")
        paths.append(str(tmp_path / f"ad{seed}"))
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / "merge.py"), *a], capture_output=True, text=True, cwd=ROOT)
    res = run("--adapters", *paths, "--weights", "0.9", "0.1", "--method", "cat", "--out", str(tmp_path / "cat"))
    assert res.returncode == 0, res.stderr
    res = run("--adapters", *paths, "--weights", "0.9", "0.1", "--method", "cat", "--into-base",
              "--out", str(tmp_path / "full"))
    assert res.returncode == 0, res.stderr
    ids = torch.randint(3, 128, (2, 10))
    with_adapter = load_model(tiny, device="cpu")
    load_adapter(with_adapter, tmp_path / "cat")
    merged = load_model(tmp_path / "full", device="cpu")
    assert not lora_modules(merged)
    with torch.no_grad():
        expected = with_adapter(ids).logits
        torch.testing.assert_close(merged(ids).logits, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(hf_model(tmp_path / "full")(ids).logits, expected, atol=1e-5, rtol=0)
    res = run("--adapters", *paths, "--method", "linear", "--out", str(tmp_path / "lin"))
    assert res.returncode != 0 and "equal ranks" in res.stderr and not (tmp_path / "lin").exists()


def test_merge_never_destroys_what_it_did_not_make_nor_writes_nan(tiny, tmp_path):
    """--out holding a stranger's file, an input adapter as --out, a file as --out: refused before any work,
    everything left as it was; an earlier merge output is replaced only with --overwrite; NaN weights and a
    NaN adapter on disk are errors (they were written and scored 0.0 with exit 0 before)."""
    paths = []
    for seed in (0, 1):
        model = load_model(tiny, device="cpu")
        config = LoRAConfig(r=2, alpha=4, dropout=0.0)
        apply_lora(model, config)
        randomise_lora(model, seed)
        save_adapter(adapter_from_model(model, config), tmp_path / f"ad{seed}")
        paths.append(str(tmp_path / f"ad{seed}"))
    before = {p: {f.name: f.read_bytes() for f in Path(p).iterdir()} for p in paths}
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / "merge.py"), "--adapters", *paths, *a],
                                    capture_output=True, text=True, cwd=ROOT)
    stranger = tmp_path / "notes"
    stranger.mkdir()
    (stranger / "thesis.tex").write_text("months of work")
    res = run("--out", str(stranger))
    assert res.returncode == 1 and "holds files this command did not make (thesis.tex)" in res.stderr
    assert (stranger / "thesis.tex").read_text() == "months of work" and len(list(stranger.iterdir())) == 1
    res = run("--out", paths[0])
    assert res.returncode == 1 and "inputs are never outputs" in res.stderr
    (tmp_path / "file").write_text("x")
    res = run("--out", str(tmp_path / "file"))
    assert res.returncode == 1 and "is a file" in res.stderr and (tmp_path / "file").read_text() == "x"
    assert {p: {f.name: f.read_bytes() for f in Path(p).iterdir()} for p in paths} == before
    assert run("--out", str(tmp_path / "m")).returncode == 0
    res = run("--out", str(tmp_path / "m"))
    assert res.returncode == 1 and "pass --overwrite" in res.stderr
    assert run("--out", str(tmp_path / "m"), "--weights", "0.9", "0.1", "--overwrite").returncode == 0
    record = json.loads((tmp_path / "m" / "provenance.json").read_text())  # which merge survived is on record
    assert record["weights"] == [0.9, 0.1] and record["adapters"] == paths and record["method"] == "linear"
    trained = tmp_path / "trained"  # a run's adapter: the same file names, but not a merge output
    shutil.copytree(paths[1], trained)
    res = run("--out", str(trained), "--overwrite")
    assert res.returncode == 1 and "no provenance.json: not this command's earlier output" in res.stderr
    assert {f.name: f.read_bytes() for f in trained.iterdir()} == before[paths[1]]

    adapters = [read_adapter(p) for p in paths]
    with pytest.raises(AdapterError, match="NaN or inf"):
        merge_adapters(adapters, [float("inf"), 0.1], "linear")
    broken = adapters[0]
    name = next(iter(broken.weights))
    broken.weights[name][1][0, 0] = float("nan")
    save_adapter(broken, tmp_path / "nan")
    with pytest.raises(AdapterError, match=r"NaN or inf in 1 modules"):
        read_adapter(tmp_path / "nan")


@pytest.mark.slow
def test_real_model_adapter_parity_with_peft(tmp_path):
    """midalign LoRA vs peft on the real SmolLM2 (converted offline model): same logits."""
    from midalign.registry import ensure_registry_model

    folder = ensure_registry_model("smollm2-135m-instruct")
    model = load_model(folder, device="cpu")
    config = LoRAConfig(r=8, alpha=16, dropout=0.0)
    apply_lora(model, config)
    randomise_lora(model, seed=3)
    save_adapter(adapter_from_model(model, config), tmp_path / "ad")
    ref = peft.PeftModel.from_pretrained(hf_model(folder), tmp_path / "ad").eval()
    from midalign.tokenizer import ChatTokenizer
    from multilingual import UDHR_ARTICLE_1
    ids = torch.tensor([ChatTokenizer(folder).encode(UDHR_ARTICLE_1["en"])])
    with torch.no_grad():
        ours, theirs = model(ids).logits, ref(input_ids=ids).logits
    assert (ours - hf_model(folder)(ids).logits).abs().max() > 1e-2  # the adapter changes the output
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_gradient_checkpointing_gives_identical_gradients(tiny):
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = load_model(tiny, device="cpu")
        apply_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.1))  # dropout: the recomputation must replay the RNG
        randomise_lora(model)
        model.gradient_checkpointing = ckpt
        model.train()
        calls = []
        model.model.layers[0].register_forward_pre_hook(lambda *a: calls.append(1))
        torch.manual_seed(1)
        model(torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(0))).logits.pow(2).mean().backward()
        assert len(calls) == (2 if ckpt else 1)  # checkpointing recomputes the layer in the backward pass
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-6, rtol=1e-5)


def test_adapter_base_check_accepts_an_alias_and_its_cache_folder(tmp_path, monkeypatch):
    from midalign.adapters import _same_model

    monkeypatch.setenv("MIDALIGN_CACHE", str(tmp_path))
    folder = tmp_path / "models" / "smollm2-135m-instruct"
    folder.mkdir(parents=True)
    assert _same_model("smollm2-135m-instruct", str(folder))
    assert not _same_model("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")
    assert not _same_model("smollm2-135m-instruct", str(tmp_path))


def test_merge_weight_search_keeps_the_best_on_dev_data(tiny_chat_checkpoint, tmp_path):
    """merge.py --search: each weight's dev score equals evaluate.py's score of that merged adapter, and
    the adapter kept is the merge with the best weight."""
    import json

    from conftest import write_tiny_data

    data = write_tiny_data(tmp_path / "data")
    paths = []
    for seed, alpha in ((0, 8.0), (1, 16.0)):
        model = load_model(tiny_chat_checkpoint, device="cpu")
        model.name_or_path = str(tiny_chat_checkpoint)
        apply_lora(model, LoRAConfig(r=4, alpha=alpha, dropout=0.0))
        randomise_lora(model, seed)
        paths.append(tmp_path / f"a{seed}")
        save_adapter(adapter_from_model(model, LoRAConfig(r=4, alpha=alpha, dropout=0.0)), paths[-1])
    run = lambda script, *a: subprocess.run([sys.executable, str(ROOT / script), *a], capture_output=True, text=True,
                                            cwd=ROOT)
    res = run("merge.py", "--adapters", *map(str, paths), "--search", "0.5", "0.9", "--task", "mt", "--dev-data",
              str(data["dev"]), "--max-new-tokens", "6", "--out", str(tmp_path / "best"))
    assert res.returncode == 0, res.stderr
    found = json.loads((tmp_path / "best" / "search.json").read_text())
    assert set(found["weights"]) == {"0.5", "0.9"}
    best = max(found["weights"], key=lambda w: found["weights"][w]["score"])
    assert found["best_weight"] == float(best)
    expected = merge_adapters([read_adapter(p) for p in paths], [float(best), 1 - float(best)], "linear")
    kept = read_adapter(tmp_path / "best")
    for name, (a, b) in expected.weights.items():
        torch.testing.assert_close(kept.weights[name][0], a)
        torch.testing.assert_close(kept.weights[name][1], b)
    for w in ("0.5", "0.9"):
        merge = run("merge.py", "--adapters", *map(str, paths), "--weights", w, str(1 - float(w)), "--out", str(tmp_path / w))
        assert merge.returncode == 0, merge.stderr
        ev = run("evaluate.py", "--model", str(tiny_chat_checkpoint), "--adapter", str(tmp_path / w), "--data",
                 str(data["dev"]), "--max-new-tokens", "6", "--out", str(tmp_path / f"eval{w}"))
        assert ev.returncode == 0, ev.stderr
        scores = json.loads((tmp_path / f"eval{w}" / "scores.json").read_text())["per_language"]
        assert found["weights"][w]["score"] == pytest.approx(sum(s["score"] for s in scores.values()) / len(scores))
        predicted = [json.loads(l)["prediction"] for l in (tmp_path / f"eval{w}" / "predictions.jsonl").open()]
        assert found["weights"][w]["predictions"] == predicted


def test_no_default_template_is_one_flag_that_merge_search_passes_on(tmp_path, monkeypatch):
    """train.py, evaluate.py and merge.py declare --no-default-template once (midalign.cli), and the weight
    search loads its tokenizer with it, as evaluate.py does."""
    import evaluate
    import merge
    import train

    from conftest import write_tiny_data

    assert train.parse_args(["--no-default-template"]).no_default_template
    assert evaluate.parse_args(["--no-default-template", "--out", str(tmp_path / "e")]).no_default_template
    data = write_tiny_data(tmp_path / "data")
    seen = {}

    class Stop(Exception):
        pass

    def loader(base, device, dtype, released_template=False):
        seen["released_template"] = released_template
        raise Stop

    monkeypatch.setattr(merge, "load_model_and_tokenizer", loader)
    args = merge.parse_args(["--adapters", "a", "b", "--search", "0.5", "--task", "mt", "--dev-data", str(data["dev"]),
                             "--model", "m", "--out", str(tmp_path / "o"), "--no-default-template"])
    with pytest.raises(Stop):
        merge.search(args, [])
    assert seen == {"released_template": True}
