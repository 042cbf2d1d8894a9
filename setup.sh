#!/usr/bin/env bash
# Create .venv with midalign's runtime and test dependencies. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
constraints=()
if ! command -v nvidia-smi >/dev/null 2>&1; then
  constraints=(-c constraints-cpu.txt)
fi
.venv/bin/python -m pip install -q -r requirements-dev.txt "${constraints[@]}"
echo "midalign environment ready: .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
