#!/usr/bin/env bash
# The cost of running as separate processes: training tokens/s of g2p-small
# with 1 server and 1 worker under mpirun (scheduler, server and worker
# processes; tensors over ZeroMQ on loopback) against the same steps in one
# process. The two alternate ROUNDS times in one run (one process, then
# mpirun, ...); it prints each pair's ratio and their median with its range.
# SETTING... (key=value) go to the processes' side only, e.g. cluster.wire=bf16.
#   bench/e2e_overhead.sh [BUILD_DIR] [STEPS] [ROUNDS] [SETTING...]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
BUILD=${1:-$ROOT/build}
STEPS=${2:-100}
ROUNDS=${3:-5}
EXTRA=()
for setting in "${@:4}"; do EXTRA+=(--set "$setting"); done
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
short_g2p_job "$STEPS"
ratios=()
for ((r = 1; r <= ROUNDS; ++r)); do
  "$BUILD/bin/pst" train "${JOB[@]}" --set train.output="$TMP/one$r" >"$TMP/one$r.log" 2>&1
  mpirun --oversubscribe --bind-to none -np 3 "$BUILD/bin/pst" train "${JOB[@]}" --servers 1 "${EXTRA[@]}" \
    --set train.output="$TMP/mpi$r" >"$TMP/mpi$r.log" 2>&1
  one=$(rate "$TMP/one$r.log")
  mpi=$(rate "$TMP/mpi$r.log")
  ratio=$(awk -v a="$mpi" -v b="$one" 'BEGIN {printf "%.3f", a / b}')
  ratios+=("$ratio")
  echo "round $r: one process $one tokens/s; mpirun 1 scheduler + 1 server + 1 worker $mpi tokens/s; ratio $ratio"
done
printf '%s\n' "${ratios[@]}" | median_min_max | awk '{
  printf "processes / one process: median %.3f [%.3f-%.3f] over %d rounds (overhead %.1f%%)\n", $1, $2, $3, $4, 100 * (1 - $1)
}'
