#!/usr/bin/env bash
# Training tokens/s of the decoder-only benchmark model (bench/train_throughput.cc)
# on the CUDA backend against the CPU backend (all cores) and, where PyTorch
# with CUDA is installed, against PyTorch on the same GPU, for fp32, TF32 and
# bf16 matrix products and two batch sizes. All figures come from one run and
# are printed as ratios.
#   bench/gpu_throughput.sh [BUILD_DIR] [STEPS] [PYTHON]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
STEPS=${2:-20}
PY=${3:-python3}
BIN=$BUILD/bin/train_throughput
rate() { grep -o 'tokens/s=[0-9.]*' <<<"$1" | head -1 | cut -d= -f2; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

cpu=$("$BIN" --device cpu --threads 0 --steps 3 --warmup 1 --batch 8 2>/dev/null)
echo "$cpu"
have_torch=0
if "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  have_torch=1
fi
for batch in 8 64; do
  for matmul in fp32 tf32 bf16; do
    pst=$("$BIN" --device cuda --matmul "$matmul" --batch "$batch" --steps "$STEPS" --warmup 3 2>/dev/null | grep tokens/s)
    echo "$pst"
    line="batch=$batch matmul=$matmul  pst cuda/cpu(batch 8) = $(ratio "$(rate "$pst")" "$(rate "$cpu")")"
    if [[ $have_torch == 1 ]]; then
      torch=$("$PY" "$ROOT/bench/torch_train.py" --device cuda --matmul "$matmul" --batch "$batch" \
              --steps "$STEPS" --warmup 3)
      echo "$torch"
      line+="  pst/torch = $(ratio "$(rate "$pst")" "$(rate "$torch")")"
    fi
    echo "$line"
  done
done
