#!/usr/bin/env bash
# Decoding with the key/value cache against re-running the decoder over the
# whole prefix at every step (`pst eval --no-cache`, the decoder before the
# cache), on a G2P model's split: `pst eval` A B A B ... ROUNDS times, the
# predictions of both compared, and the median ratio (min-max) printed for
# the whole command, its decoding phase and its teacher-forced scoring.
# Without a MODEL it first trains g2p-small for 400 steps (about 10 minutes
# on 2 cores) in a temporary folder: an untrained model decodes every word
# to its length limit, unlike a trained one.
#   bench/decode.sh [BUILD_DIR] [MODEL] [ROUNDS] [SPLIT] [BEAM]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
BUILD=${1:-$ROOT/build}
MODEL=${2:-}
ROUNDS=${3:-5}
SPLIT=${4:-test}
BEAM=${5:-1}
PST=$BUILD/bin/pst
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if [[ -z $MODEL ]]; then
  echo "training g2p-small for 400 steps in $TMP/run"
  timeout 3600 "$PST" train --config "$ROOT/configs/g2p-small.toml" --no-progress --set train.steps=400 \
    --set schedule.warmup_steps=100 --set train.eval_every=0 --set train.test_at_end=false \
    --set train.output="$TMP/run" >"$TMP/train.log" 2>&1 || { tail -5 "$TMP/train.log"; exit 1; }
  MODEL=$TMP/run/model.safetensors
fi
# One evaluation: prints "wall scoring decoding" in seconds.
run() {
  local out=$1
  shift
  local start end
  start=$(date +%s.%N)
  timeout 1800 "$PST" eval --model "$MODEL" --split "$SPLIT" --beam "$BEAM" --predictions "$out" "$@" \
    >"$TMP/eval.log" 2>&1 || { cat "$TMP/eval.log"; exit 1; }
  end=$(date +%s.%N)
  sed -nE 's/.*scoring took ([0-9.]+) s, decoding ([0-9.]+) s.*/\1 \2/p' "$TMP/eval.log" |
    awk -v s="$start" -v e="$end" '{print e - s, $1, $2}'
}
: >"$TMP/times"
for ((i = 1; i <= ROUNDS; i++)); do
  cached=$(run "$TMP/cached.txt")
  uncached=$(run "$TMP/uncached.txt" --no-cache)
  cmp -s "$TMP/cached.txt" "$TMP/uncached.txt" || {
    echo "round $i: the predictions differ:"
    diff "$TMP/cached.txt" "$TMP/uncached.txt" | head -10
  }
  echo "round $i  cached: wall ${cached// / scoring }  uncached: wall ${uncached// / scoring }" |
    sed -E 's/scoring ([0-9.]+) scoring ([0-9.]+)/scoring \1 decoding \2/g'
  echo "$cached $uncached" >>"$TMP/times"
done
grep -c . "$TMP/cached.txt" | xargs echo "words decoded per run:"
# Ratios uncached / cached per round; median and range.
awk '{print $4 / $1, $6 / $3, $5 / $2}' "$TMP/times" >"$TMP/ratios"
for col in 1 2 3; do
  name=$(echo "whole-eval decoding scoring" | cut -d' ' -f$col)
  cut -d' ' -f$col "$TMP/ratios" | median_min_max | awk -v name="$name" '{
    printf "%-11s uncached/cached = %.2fx median (%.2f-%.2f over %d rounds)\n", name, $1, $2, $3, $4}'
done
