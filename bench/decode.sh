#!/usr/bin/env bash
# `pst eval` of a G2P model's split as pst runs it (the key/value cache, and
# with greedy decoding the words whose output the teacher-forced pass shows
# not decoded again) against `--decode-all` (every word decoded with the
# cache) and `--no-cache` (the decoder that re-runs the whole prefix at every
# step), and, when BASE_PST names one, against another pst binary run plainly
# (e.g. one built from a commit before the cache, in a git worktree). The
# sides alternate ROUNDS times; the predictions of all must be the same, and
# the median ratio (min-max) to pst's own is printed for the whole command,
# its decoding phase and its teacher-forced scoring.
# Without a MODEL it first trains g2p-small for 400 steps (about 10 minutes
# on 2 cores) in a temporary folder: an untrained model decodes every word
# to its length limit, unlike a trained one.
#   bench/decode.sh [BUILD_DIR] [MODEL] [ROUNDS] [SPLIT] [BEAM] [BASE_PST]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
BUILD=${1:-$ROOT/build}
MODEL=${2:-}
ROUNDS=${3:-5}
SPLIT=${4:-test}
BEAM=${5:-1}
BASE=${6:-}
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
# The sides: a name, the binary and its extra arguments to eval.
SIDES=(pst "$PST" "" all "$PST" --decode-all uncached "$PST" --no-cache)
[[ -n $BASE ]] && SIDES+=(base "$BASE" "")
# One evaluation: prints "wall scoring decoding" in seconds (the base's
# scoring and decoding when its log gives them, else 0).
run() {
  local out=$1 bin=$2 flags=$3 log=${1%.txt}.log start end
  start=$(date +%s.%N)
  # shellcheck disable=SC2086  # flags: none or one
  timeout 1800 "$bin" eval --model "$MODEL" --split "$SPLIT" --beam "$BEAM" --predictions "$out" $flags \
    >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
  end=$(date +%s.%N)
  { sed -nE 's/.*scoring took ([0-9.]+) s, decoding ([0-9.]+) s.*/\1 \2/p' "$log"; echo 0 0; } |
    awk -v s="$start" -v e="$end" 'NR == 1 {print e - s, $1, $2}'
}
for ((i = 1; i <= ROUNDS; i++)); do
  line="round $i"
  for ((k = 0; k < ${#SIDES[@]}; k += 3)); do
    name=${SIDES[k]}
    t=$(run "$TMP/$name.txt" "${SIDES[k + 1]}" "${SIDES[k + 2]}")
    echo "$t" >>"$TMP/$name.times"
    read -r wall scoring decoding <<<"$t"
    line+="  $name: wall $wall scoring $scoring decoding $decoding"
    [[ $name == pst ]] || cmp -s "$TMP/pst.txt" "$TMP/$name.txt" || {
      echo "round $i: the predictions of $name differ from pst's:"
      diff "$TMP/pst.txt" "$TMP/$name.txt" | head -10
    }
  done
  echo "$line"
done
grep -c . "$TMP/pst.txt" | xargs echo "words per run:"
grep -o '[0-9]* of [0-9]* words decoded' "$TMP/pst.log" | sed 's/^/pst: /' || true
# Ratios side / pst per round; median and range.
for ((k = 3; k < ${#SIDES[@]}; k += 3)); do
  name=${SIDES[k]}
  paste -d' ' "$TMP/$name.times" "$TMP/pst.times" | awk '{print $1 / $4, ($3 > 0 ? $3 / $6 : 0), ($2 > 0 ? $2 / $5 : 0)}' >"$TMP/ratios"
  for col in 1 2 3; do
    what=$(echo "whole-eval decoding scoring" | cut -d' ' -f$col)
    cut -d' ' -f$col "$TMP/ratios" | median_min_max | awk -v name="$name" -v what="$what" '$1 > 0 {
      printf "%-11s %s/pst = %.2fx median (%.2f-%.2f over %d rounds)\n", what, name, $1, $2, $3, $4}'
  done
done
