#!/usr/bin/env bash
# bench/scaling.sh end to end at a small size, so that the benchmark behind
# docs/scaling.md keeps working: g2p-tiny, S x W in {1x1, 2x2, 1x3}, over
# loopback and over links shaped to 100 Mbit/s, 5 steps each. It asserts
# what the run must show whatever the machine's speed (never a time):
#  - a row for every point, with the baseline's time and the model's;
#  - the workers moved the gradient of `pst params`'s parameter count;
#  - every server applied every step and rejected no message (each having
#    started itself again to wait passively in OpenMP);
#  - the shaped links' drops were counted; the model was calibrated from
#    the baselines and predicts the clusters' rows; the plot is a PNG;
#  - with cluster.wire = bf16 (2x2 on loopback), the same, at 2 bytes a
#    parameter.
#   tests/integration/scaling_test.sh BUILD_DIR
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(readlink -f "${1:?usage: scaling_test.sh BUILD_DIR}")
source "$ROOT/tests/integration/check.sh"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
STEPS=5

# The benchmark bounds its own run (SCALING_LIMIT_S) and cleans up after
# itself: its namespace, hosts and processes go when it ends. Without
# OMP_WAIT_POLICY, as a user's shell starts them, every --role process
# starts itself again with it set (core/cpus.h) and must still do its part.
check "bench/scaling.sh runs" env -u OMP_WAIT_POLICY SCALING_LIMIT_S=500 bash "$ROOT/bench/scaling.sh" --build "$BUILD" \
  --config "$ROOT/configs/g2p-tiny.toml" --grid "1x1 2x2 1x3" --links "loopback 100mbit" --steps "$STEPS" \
  --warmup 1 --calibrate "100mbit:1x3 loopback:1x3" --out "$OUT" >"$OUT/bench.log" 2>&1 ||
  tail -n 20 "$OUT/bench.log"
report=$OUT/scaling.txt
for link in loopback 100mbit; do
  for sw in 1x1 2x2 1x3; do
    check "a row for $link $sw" grep -Eq "^$link +${sw} +[0-9.]+ +[0-9]+ .* [0-9.]+ +[+-][0-9.]+%" "$report"
    dir=$OUT/runs/$link/$sw
    for f in "$dir"/server*.log "$dir"/scheduler.log; do
      contains "$f" "started again with OMP_WAIT_POLICY=PASSIVE" ||
        check "$link $sw: $(basename "$f") started again to wait passively" false
    done
    for f in "$dir"/server*.log; do
      contains "$f" "server [0-9]: $STEPS steps (.*), 0 messages rejected" ||
        check "$link $sw: $(basename "$f") applied $STEPS steps and rejected nothing" false
    done
    expect "$link $sw: baseline steps" "$(grep -h '^step' "$dir"/raw-worker0.log | wc -l)" "$STEPS"
  done
  [[ $link == loopback ]] || check "drops counted on $link" test -s "$OUT/runs/$link/1x3/drops"
done
params=$("$BUILD/bin/pst" params --config "$ROOT/configs/g2p-tiny.toml" | awk '$1 == "total" {print $2}')
for f in "$OUT"/runs/*/*/worker*.log; do
  contains "$f" "^parameters $params bytes $((4 * params))$" ||
    check "$(basename "$(dirname "$f")") $(basename "$f") moved $params parameters" false
done
check "the model is calibrated from both kinds of link" grep -Eq 'host capacity loopback [0-9]+ MB/s, shaped [0-9]+ MB/s' "$report"
check "the model predicts 64 workers with 16 servers" grep -Eq '^ +64 +16 +25G/s +fp32 +[0-9.]+ ' "$report"
check "the plot is a PNG" test "$(head -c 8 "$OUT/scaling.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a

# cluster.wire = bf16 between the real processes: every server takes every
# step's bfloat16 pushes (a push in another format would be rejected), and
# each worker moves 2 bytes a parameter, which the baseline moves too.
check "bench/scaling.sh --wire bf16 runs" env SCALING_LIMIT_S=300 bash "$ROOT/bench/scaling.sh" --build "$BUILD" \
  --config "$ROOT/configs/g2p-tiny.toml" --grid "2x2" --links "loopback" --steps "$STEPS" --warmup 1 \
  --calibrate "loopback:2x2" --wire bf16 --out "$OUT/bf16" >"$OUT/bf16.log" 2>&1 || tail -n 20 "$OUT/bf16.log"
for f in "$OUT"/bf16/runs/loopback/2x2/server*.log; do
  contains "$f" "server [0-9]: $STEPS steps (.*), 0 messages rejected" ||
    check "bf16: $(basename "$f") applied $STEPS steps and rejected nothing" false
done
for f in "$OUT"/bf16/runs/loopback/2x2/worker*.log; do
  contains "$f" "^parameters $params bytes $((2 * params))$" || check "bf16: $(basename "$f") moved 2 bytes a parameter" false
done
check "bf16: a row for loopback 2x2" grep -Eq "^loopback +2x2 +[0-9.]+ +[0-9]+ " "$OUT/bf16/scaling.txt"

echo "scaling_test: $passes passed, $failures failed"
((failures == 0))
