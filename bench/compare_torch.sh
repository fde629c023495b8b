#!/usr/bin/env bash
# Training tokens/s of pst against PyTorch 1.13 (Debian's python3-torch) on
# the same decoder-only model, with 1 and 2 threads, measured in one run and
# printed as ratios. PyTorch gets OMP_WAIT_POLICY=PASSIVE (its 2-thread run is
# ~1.3x faster with it on these machines); pst runs as shipped.
#   bench/compare_torch.sh [BUILD_DIR] [STEPS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
STEPS=${2:-10}
BIN=$BUILD/bin/train_throughput
if [[ ! -x /usr/bin/python3 ]] || ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo "needs Debian's python3-torch: scripts/setup --torch" >&2
  exit 1
fi
for threads in 1 2; do
  pst=$(OMP_NUM_THREADS=$threads "$BIN" --threads "$threads" --steps "$STEPS" --warmup 2)
  torch=$(OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 "$ROOT/bench/torch_train.py" \
          --threads "$threads" --steps "$STEPS" --warmup 2)
  echo "$pst"
  echo "$torch"
  p=$(sed -E 's/.*tokens\/s=([0-9.]+).*/\1/' <<<"$pst")
  t=$(sed -E 's/.*tokens\/s=([0-9.]+).*/\1/' <<<"$torch")
  awk -v p="$p" -v t="$t" -v n="$threads" 'BEGIN {printf "threads=%d  pst/torch tokens/s ratio = %.3f\n", n, p / t}'
done
