#!/usr/bin/env bash
# The prepared GPU check of the CUDA path (one command, < 10 minutes on one H100/H200, no network, nothing
# beyond this repository):
#   1. the device-aware tests on CUDA in bf16 (tests/test_bf16.py: parity with transformers + peft), the
#      model parity tests (tests/test_model.py) and refill decoding against static batches (tests/test_generate.py);
#   2. random-init Llama-3-8B and Qwen2.5-7B shapes (tests/fixtures/*-config.json), bf16, midalign vs
#      transformers + peft side by side: LoRA task step (batch 32 x 128 tokens, r 8 on 7 projections),
#      alignment step at the middle layer (32 pairs), greedy generation (batch 32, 128 new tokens), with
#      tokens/s, peak memory vs midalign.memory's estimate, MFU against a bf16 matmul measured in the
#      same run, and decoding's share of the copy bandwidth. Tables: stdout and $OUT_DIR/gpu_*.md.
#
#   bash bench/gpu_check.sh          # on the GPU machine (python3 there holds torch, transformers, peft)
#   bash bench/gpu_check.sh --dry    # anywhere: every step at tiny size on CPU (CI runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT_DIR:-bench}
export PYTHONUNBUFFERED=1
if [ "${1:-}" = "--dry" ]; then
  device=cpu; sizes=(--shrink --reps 1 --batch 2 --seq 16 --pairs 4 --new-tokens 4 --gen-batch 2)
  tests=(tests/test_bf16.py tests/test_generate.py -k "precision_sensitive or generation_and_retrieval or static_batches")
else
  device=cuda; sizes=(--reps 3 --batch 32 --seq 128 --pairs 32 --new-tokens 128 --gen-batch 32)
  tests=(tests/test_bf16.py tests/test_model.py tests/test_generate.py)
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
fi
echo "== 1. tests on $device"
MIDALIGN_TEST_DEVICE=$device "$PY" -m pytest -q -p no:cacheprovider "${tests[@]}"
for model in llama-3-8b qwen2.5-7b; do
  echo "== 2. $model shape, random init, $device"
  "$PY" bench/run.py --config "tests/fixtures/$model-config.json" --device "$device" --dtypes bf16 --workloads task align generate \
    "${sizes[@]}" --out "$OUT_DIR/gpu_$model.md"
done
