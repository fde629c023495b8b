#!/usr/bin/env bash
# Training tokens/s of pst against PyTorch 1.13 (Debian's python3-torch) on
# the same decoder-only model, with 1 and 2 threads: the two alternated
# (pst, PyTorch, pst, ...) ROUNDS times, each pair's ratio printed, then the
# median ratio with its min-max. PyTorch gets OMP_WAIT_POLICY=PASSIVE (its
# 2-thread run is ~1.3x faster with it on these machines); pst runs as
# shipped. Each pst run also measures its GEMM share (bench/train_throughput.cc):
# the median of the rounds' is printed beside the ratio, and so is its
# replay of the step's products through OpenBLAS against oneDNN's fp32 matmul
# (openblas/onednn: above 1, oneDNN is the faster library here). Both load the same
# OpenBLAS, whose kernels an OPENBLAS_CORETYPE in the environment forces (some
# machines set one): the script names the kernels pst ran. Without one, pst
# starts again with kernels that fit the CPU where OpenBLAS's own choice does
# not (core/cpus.h), and PyTorch gets the same kernels: the script sets
# OPENBLAS_CORETYPE to those pst ran, after pst's first run. MATMUL bf16 runs
# both sides' products in bf16: pst's train.matmul = "bf16" (oneDNN), and
# PyTorch's CPU autocast to bfloat16 (its oneDNN products). BLAS onednn
# trains pst with train.blas = "onednn" (its float32 products in oneDNN);
# PyTorch is unchanged. It also prints where the cores' limit lies: the
# step's products as a fraction of their measured float32 FMA peak (bf16
# dot-product peak with bf16 products), and the pst/PyTorch ratio pst would
# reach were its products done at that peak (no library of that precision can
# do better on this CPU).
#   bench/compare_torch.sh [BUILD_DIR] [STEPS] [ROUNDS] [MATMUL: fp32|bf16] [BLAS: openblas|onednn]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
BUILD=${1:-$ROOT/build}
STEPS=${2:-10}
ROUNDS=${3:-5}
MATMUL=${4:-fp32}
BLAS=${5:-openblas}
BIN=$BUILD/bin/train_throughput
if [[ ! -x /usr/bin/python3 ]] || ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo "needs Debian's python3-torch: scripts/setup --torch" >&2
  exit 1
fi
field() { grep -o "$1=[0-9.]*" | head -1 | cut -d= -f2; }
# median [min-max] of the numbers on stdin, one a line
spread() { median_min_max | awk '{printf "%.3f [%.3f-%.3f]", $1, $2, $3}'; }
for threads in 1 2; do
  ratios=() shares=() efficiencies=() libraries=() bounds=() of_peak=()
  for ((r = 1; r <= ROUNDS; r++)); do
    pst=$(OMP_NUM_THREADS=$threads "$BIN" --threads "$threads" --steps "$STEPS" --warmup 2 --matmul "$MATMUL" \
      --blas "$BLAS")
    [[ -n ${OPENBLAS_CORETYPE:-} ]] || export OPENBLAS_CORETYPE=$(grep -o 'openblas=[A-Za-z0-9]*' <<<"$pst" | cut -d= -f2)
    torch=$(OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 "$ROOT/bench/torch_train.py" \
      --threads "$threads" --steps "$STEPS" --warmup 2 --matmul "$MATMUL")
    echo "$pst"
    echo "$torch"
    p=$(field tokens/s <<<"$pst")
    t=$(field tokens/s <<<"$torch")
    ratios+=("$(awk -v p="$p" -v t="$t" 'BEGIN {printf "%.4f", p / t}')")
    shares+=("$(field share <<<"$pst")")
    efficiencies+=("$(field efficiency <<<"$pst")")
    libraries+=("$(field openblas/onednn <<<"$pst")")
    b=$(field bound_tokens/s <<<"$pst" || true)  # (none where no peak was measured)
    if [[ -n $b ]]; then
      bounds+=("$(awk -v b="$b" -v t="$t" 'BEGIN {printf "%.4f", b / t}')")
      of_peak+=("$(field products_at <<<"$pst")")
    fi
    echo "threads=$threads matmul=$MATMUL blas=$BLAS round $r: pst/torch tokens/s = ${ratios[-1]}"
  done
  echo "threads=$threads matmul=$MATMUL blas=$BLAS pst/torch tokens/s: median $(printf '%s\n' "${ratios[@]}" | spread) over $ROUNDS rounds;" \
    "GEMM share $(printf '%s\n' "${shares[@]}" | spread), GEMM efficiency $(printf '%s\n' "${efficiencies[@]}" | spread)," \
    "products through OpenBLAS / oneDNN fp32 $(printf '%s\n' "${libraries[@]}" | spread)"
  if ((${#bounds[@]})); then
    echo "threads=$threads matmul=$MATMUL blas=$BLAS products at $(printf '%s\n' "${of_peak[@]}" | spread) of the cores'" \
      "$([[ $MATMUL == bf16 ]] && echo "bf16 dot-product" || echo "float32 FMA") peak;" \
      "pst/torch with them at the peak (the rest of pst's step as measured):" \
      "$(printf '%s\n' "${bounds[@]}" | spread)"
  fi
done
echo "OpenBLAS kernels: $(grep -o 'openblas=[A-Za-z0-9]*' <<<"$pst" | cut -d= -f2) (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} at the end)"
