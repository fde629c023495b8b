#!/usr/bin/env bash
# Two sets of settings against each other under mpirun: training tokens/s of
# g2p-small with 1 server and WORKERS workers, run with the settings A and
# with B in alternation ROUNDS times in one run (A, then B, ...). Each run's
# line gives its tokens/s, its step time and, from worker 0's /metrics at the
# end (kept up by metrics.linger_s), its forward, backward, push, pull and
# wait time per step (bench/lib.sh, scraped_run): on these shared machines
# compute alone swings by 10-20% between runs, while the communication
# phases, which the settings usually change, show their difference through
# it. Prints each pair's B/A ratio of tokens/s
# and their median with its range. A and B are comma-separated key=value
# settings. Two builds against each other: BUILD_B=DIR runs B's jobs with
# DIR's pst (A's with BUILD_DIR's). CONFIG=NAME trains configs/NAME.toml
# instead of g2p-small.
#   bench/settings_ab.sh [BUILD_DIR] [STEPS] [ROUNDS] [WORKERS] A B
#   e.g. bench/settings_ab.sh build 40 5 1 cluster.stream_bytes=1073741824 cluster.stream_bytes=262144
#   CONFIG=g2p-modern BUILD_B=/tmp/new/build bench/settings_ab.sh build 60 5 1 train.matmul=bf16 train.matmul=bf16
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
BUILD=${1:-$ROOT/build}
STEPS=${2:-40}
ROUNDS=${3:-5}
WORKERS=${4:-1}
A=${5:?usage: settings_ab.sh BUILD STEPS ROUNDS WORKERS A B}
B=${6:?usage: settings_ab.sh BUILD STEPS ROUNDS WORKERS A B}
BUILD_B=${BUILD_B:-$BUILD}
TMP=$(mktemp -d)
trap 'end_scraped_run; rm -rf "$TMP"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
short_g2p_job "$STEPS" "${CONFIG:-g2p-small}"
# run SETTINGS NAME BUILD: one job; sets SCRAPED (scraped_run).
run() {
  local settings=() s x
  IFS=, read -ra s <<<"$1"
  for x in "${s[@]}"; do settings+=(--set "$x"); done
  scraped_run "$TMP/$2.log" "$STEPS" mpirun --oversubscribe --bind-to none -np $((2 + WORKERS)) "$3/bin/pst" \
    train "${JOB[@]}" --servers 1 "${settings[@]}" --set metrics.linger_s=60 --set train.output="$TMP/$2"
}
ratios=()
for ((r = 1; r <= ROUNDS; ++r)); do
  run "$A" "a$r" "$BUILD"
  a=$SCRAPED
  run "$B" "b$r" "$BUILD_B"
  b=$SCRAPED
  ratio=$(awk -v x="${b%% *}" -v y="${a%% *}" 'BEGIN {printf "%.3f", x / y}')
  ratios+=("$ratio")
  echo "round $r: 1 server + $WORKERS workers; A ($A) $(phases_text "$a")"
  echo "round $r: B ($B) $(phases_text "$b"); B/A $ratio"
done
printf '%s\n' "${ratios[@]}" | median_min_max | awk -v a="$A" -v b="$B" '{
  printf "%s / %s: median %.3f [%.3f-%.3f] over %d rounds\n", b, a, $1, $2, $3, $4
}'
