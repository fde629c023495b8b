#!/usr/bin/env bash
# The cost of running as separate processes: training tokens/s of g2p-small
# with 1 server and 1 worker under mpirun (scheduler, server and worker
# processes; tensors over ZeroMQ on loopback) against the same steps in one
# process, measured in one run and printed as a ratio.
#   bench/e2e_overhead.sh [BUILD_DIR] [STEPS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
STEPS=${2:-100}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
JOB=(--config "$ROOT/configs/g2p-small.toml" --set train.steps="$STEPS" --set train.eval_every=0
     --set train.test_at_end=false --set train.log_every="$STEPS" --set data.eval_max_examples=50)
rate() { grep -o '[0-9]* tokens/s$' "$1" | tail -1 | cut -d' ' -f1; }
"$BUILD/bin/pst" train "${JOB[@]}" --set train.output="$TMP/one" >"$TMP/one.log" 2>&1
mpirun --oversubscribe --bind-to none -np 3 "$BUILD/bin/pst" train "${JOB[@]}" --servers 1 \
  --set train.output="$TMP/mpi" >"$TMP/mpi.log" 2>&1
one=$(rate "$TMP/one.log")
mpi=$(rate "$TMP/mpi.log")
echo "one process: $one tokens/s; mpirun 1 scheduler + 1 server + 1 worker: $mpi tokens/s"
awk -v a="$mpi" -v b="$one" 'BEGIN {printf "processes / one process = %.3f (overhead %.1f%%)\n", a / b, 100 * (1 - a / b)}'
