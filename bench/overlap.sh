#!/usr/bin/env bash
# What cluster.overlap does where the job's CPU processes share this host's
# cores (the case cluster.overlap = auto leaves it off): training tokens/s of
# g2p-small under mpirun, 1 server and WORKERS workers, with overlap off and
# on. The two alternate ROUNDS times in one run (off, then on, ...); it prints
# each pair's on/off ratio and their median with its range.
#   bench/overlap.sh [BUILD_DIR] [STEPS] [ROUNDS] [WORKERS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
BUILD=${1:-$ROOT/build}
STEPS=${2:-40}
ROUNDS=${3:-5}
WORKERS=${4:-1}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
short_g2p_job "$STEPS"
run() {
  mpirun --oversubscribe --bind-to none -np $((2 + WORKERS)) "$BUILD/bin/pst" train "${JOB[@]}" --servers 1 \
    --set cluster.overlap="$1" --set train.output="$TMP/$1$2" >"$TMP/$1$2.log" 2>&1
  rate "$TMP/$1$2.log"
}
ratios=()
for ((r = 1; r <= ROUNDS; ++r)); do
  off=$(run off "$r")
  on=$(run on "$r")
  ratio=$(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.3f", a / b}')
  ratios+=("$ratio")
  echo "round $r: 1 server + $WORKERS workers, overlap off $off tokens/s, on $on tokens/s; on/off $ratio"
done
printf '%s\n' "${ratios[@]}" | median_min_max | awk '{
  printf "overlap on / off: median %.3f [%.3f-%.3f] over %d rounds\n", $1, $2, $3, $4
}'
