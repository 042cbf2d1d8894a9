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
