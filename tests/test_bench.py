"""The prepared GPU check runs end to end in its dry mode (every workload at tiny size on CPU), so that the
script handed to a GPU machine is known to work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_gpu_check_dry_run_builds_every_workload(tmp_path):
    env = {**os.environ, "OUT_DIR": str(tmp_path), "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for model in ("llama-3-8b", "qwen2.5-7b"):
        table = (tmp_path / f"gpu_{model}.md").read_text()
        assert "Machine limits measured in the same run" in table and "(shrunk)" in table
        rows = [l for l in table.splitlines() if l.startswith(("| task", "| align", "| generate"))]
        assert len(rows) == 3 and all("failed" not in r and "×**" in r for r in rows), table
        assert "MFU" in rows[0] and "estimate" in rows[0] and "weight streaming" in rows[2]


def test_model_costs_count_every_projection_of_a_lora_model(tiny_checkpoint):
    """The FLOPs behind the MFU column: 4 × (decoder projections, counted from the config) × tokens +
    attention + the head on the answer half — with LoRA-wrapped projections counted too."""
    sys.path.insert(0, str(ROOT / "bench"))
    import run as bench

    from midalign.checkpoint import load_model
    from midalign.lora import LoRAConfig, apply_lora

    model = load_model(tiny_checkpoint, device="cpu")
    apply_lora(model, LoRAConfig())
    c = model.config
    hd = c.hidden_size // c.num_attention_heads
    per_layer = (2 * c.hidden_size * c.num_attention_heads * hd + 2 * c.hidden_size * c.num_key_value_heads * hd
                 + 3 * c.hidden_size * c.intermediate_size)
    sizes = {"batch": 2, "seq": 8}
    costs = bench.model_costs(model, sizes)
    B, T, L, d, V = 2, 8, c.num_hidden_layers, c.hidden_size, c.vocab_size
    assert costs["task_flops"] == 4 * L * per_layer * B * T + 12 * B * T * T * d * L + 4 * V * d * B * T // 2
    assert costs["decode_weight_bytes"] == (L * per_layer + V * d) * 4
