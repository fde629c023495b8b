#!/usr/bin/env bash
# The cost of running a job as an operator would: training tokens/s of
# g2p-small with 1 server and 1 worker under mpirun, with Prometheus metrics
# on (every process serving /metrics and scraped every SCRAPE seconds by a
# loop of curl requests, as Prometheus would; monitoring/prometheus/
# prometheus.yml scrapes every 15 s) and a checkpoint every EVERY steps,
# against metrics.enabled = false and no checkpoints; alternating runs in
# one invocation, printed as a ratio, with each checkpoint's size and write
# time.
#   bench/ops_overhead.sh [BUILD_DIR] [STEPS] [ROUNDS] [EVERY] [SCRAPE]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
BUILD=${1:-$ROOT/build}
STEPS=${2:-60}
ROUNDS=${3:-2}
EVERY=${4:-200}
SCRAPE=${5:-15}
TMP=$(mktemp -d)
SCRAPER=
trap '[[ -n $SCRAPER ]] && kill $SCRAPER 2>/dev/null; rm -rf "$TMP"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
short_g2p_job "$STEPS"
run() {  # run NAME ARGS...: tokens/s of one mpirun job
  local name=$1
  shift
  mpirun --oversubscribe --bind-to none -np 3 "$BUILD/bin/pst" train "${JOB[@]}" --servers 1 \
    --set train.output="$TMP/$name" "$@" >"$TMP/$name.log" 2>&1
  rate "$TMP/$name.log"
}
on_sum=0 off_sum=0
for r in $(seq 1 "$ROUNDS"); do
  # Scrape every endpoint of the file_sd file every SCRAPE s while the job runs.
  ( while true; do
      if [[ -f $TMP/targets.json ]]; then
        for ep in $(grep -o '"[0-9.]*:[0-9]*"' "$TMP/targets.json" | tr -d '"'); do
          curl -s -o /dev/null --max-time 1 "http://$ep/metrics" || true
        done
      fi
      sleep "$SCRAPE"
    done ) &
  SCRAPER=$!
  on=$(run "on$r" --set metrics.file_sd="$TMP/targets.json" --set checkpoint.every_steps="$EVERY")
  grep -o "checkpoint of step .*" "$TMP/on$r.log" | sed 's/^/  /'
  kill $SCRAPER; wait $SCRAPER 2>/dev/null || true; SCRAPER=
  rm -f "$TMP/targets.json"
  off=$(run "off$r" --set metrics.enabled=false)
  echo "round $r: metrics and checkpoints on $on tokens/s, both off $off tokens/s"
  on_sum=$((on_sum + on)) off_sum=$((off_sum + off))
done
awk -v a="$on_sum" -v b="$off_sum" 'BEGIN {printf "on / off = %.3f (overhead %.1f%%)\n", a / b, 100 * (1 - a / b)}'
