#!/usr/bin/env bash
# The cost of running as separate processes: training tokens/s of g2p-small
# with 1 server and 1 worker under mpirun (scheduler, server and worker
# processes; tensors over ZeroMQ on loopback) against the same steps in one
# process. The two alternate ROUNDS times in one run (one process, then
# mpirun, ...); it prints each pair's ratio and their median with its range.
# Each run's line also gives its step time and worker 0's phases per step,
# read from its /metrics at the end (kept up by metrics.linger_s). Forward
# and backward swing by 10-20% between runs on these shared machines, more
# than the whole overhead, so the script also splits each pair's difference:
# the compute ratio (forward + backward, processes over one process) and the
# rest of the step (push, pull, waits, data), whose difference over the one
# process's step is the part of the overhead that is not the compute's swing.
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
trap 'end_scraped_run; rm -rf "$TMP"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
short_g2p_job "$STEPS"
JOB+=(--set metrics.linger_s=60)
ratios=() computes=() rests=()
for ((r = 1; r <= ROUNDS; ++r)); do
  scraped_run "$TMP/one$r.log" "$STEPS" "$BUILD/bin/pst" train "${JOB[@]}" --set train.output="$TMP/one$r"
  one=$SCRAPED
  scraped_run "$TMP/mpi$r.log" "$STEPS" mpirun --oversubscribe --bind-to none -np 3 "$BUILD/bin/pst" train "${JOB[@]}" \
    --servers 1 "${EXTRA[@]}" --set train.output="$TMP/mpi$r"
  mpi=$SCRAPED
  read -r ratio compute rest < <(awk -v one="$one" -v mpi="$mpi" 'BEGIN {
    split(one, a, " "); split(mpi, b, " ")
    printf "%.3f %.3f %.4f\n", b[1] / a[1], (b[3] + b[4]) / (a[3] + a[4]),
      ((b[2] - b[3] - b[4]) - (a[2] - a[3] - a[4])) / a[2] }')
  ratios+=("$ratio") computes+=("$compute") rests+=("$rest")
  echo "round $r: one process $(phases_text "$one")"
  echo "round $r: mpirun 1 scheduler + 1 server + 1 worker $(phases_text "$mpi")"
  echo "round $r: tokens/s ratio $ratio; forward + backward, processes / one process $compute;" \
    "the rest of the step, processes minus one process, over one process's step $rest"
done
printf '%s\n' "${ratios[@]}" | median_min_max | awk '{
  printf "processes / one process: median %.3f [%.3f-%.3f] over %d rounds (overhead %.1f%%)\n", $1, $2, $3, $4, 100 * (1 - $1)
}'
printf '%s\n' "${computes[@]}" | median_min_max | awk '{
  printf "forward + backward, processes / one process: median %.3f [%.3f-%.3f]\n", $1, $2, $3
}'
printf '%s\n' "${rests[@]}" | median_min_max | awk '{
  printf "the rest of the step, processes minus one process: median %.1f%% [%.1f%%-%.1f%%] of one process'"'"'s step\n", 100 * $1, 100 * $2, 100 * $3
}'
