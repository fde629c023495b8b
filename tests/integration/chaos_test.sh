#!/usr/bin/env bash
# Chaos (docs/design.md, Membership): a --role job of g2p-tiny (1 scheduler,
# 2 servers, 3 workers on loopback, a checkpoint every 25 steps, a liveness
# window of 0.5 s x 6) meets, in a seeded random order and at random
# moments, three kill -9s of a worker (each followed by a new worker, which
# joins), a SIGSTOP of a worker past the window (continued once removed: it
# is told so and exits non-zero; a new worker joins in its place) and one
# kill -9 of a server (a replacement started at once; the job re-forms from
# its newest checkpoint). Then SIGTERM to the scheduler stops the job at a
# step S with a checkpoint. Checked: every process but the stopped worker
# exits 0, and none is left; the scheduler logs each removal, join and the
# re-form once; every checkpoint left verifies; the model's validation loss
# is within 10% of an undisturbed threads job of 3 workers trained S steps
# with the same seed (both measured by pst eval).
# Usage: chaos_test.sh PATH_TO_PST [SEED] (the order and moments of the faults; 1)
set -uo pipefail
PST=$(realpath "$1")
SEED=${2:-1}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
unset OMP_NUM_THREADS
source "$(dirname "$0")/check.sh"
echo "chaos_test: seed $SEED (chaos_test.sh PST $SEED repeats this order)"
RANDOM=$SEED

"$PST" keygen --out "$TMP/job.key" >/dev/null
JOB=(--config "$ROOT/configs/g2p-tiny.toml" --set security.key_file="$TMP/job.key"
     --set train.eval_every=0 --set train.test_at_end=false --set data.batch_size=16 --set train.threads=1
     --set cluster.chunk_bytes=4096 --set cluster.servers=2 --set cluster.workers=3)
ARGS=("${JOB[@]}" --set train.steps=1000000 --set train.log_every=1 --set cluster.timeout_s=20
      --set cluster.heartbeat_s=0.5 --set cluster.heartbeat_misses=6 --set checkpoint.every_steps=25
      --set train.output="$TMP/chaos")
SOCK="ipc://$TMP/chaos.sock"
LOG="$TMP/chaos.scheduler.log"
n=0
# start ROLE: a process of the job; its PID in STARTED, its log chaos.N.log.
start() {
  (cd "$TMP" && exec "$PST" train "${ARGS[@]}" --role "$1" --scheduler "$SOCK") >"$TMP/chaos.$n.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
  n=$((n + 1))
}
start scheduler
SCHED=$STARTED
SERVERS=()
WORKERS=()
for _ in 1 2; do start server && SERVERS+=("$STARTED"); done
for _ in 1 2 3; do start worker && WORKERS+=("$STARTED"); done
mv "$TMP/chaos.0.log" "$LOG" && ln -s "$LOG" "$TMP/chaos.0.log"

count() { grep -c -- "$1" "$LOG"; }
# await N PATTERN: waits (up to 60 s) until the scheduler has logged PATTERN N times.
await() {
  for _ in $(seq 1 300); do (($(count "$2") >= $1)) && return 0; sleep 0.2; done
  echo "the scheduler logged '$2' $(count "$2") times, not $1"
  return 1
}
# step: the highest step a worker has logged.
step() { { echo 0; grep -ho "step [0-9]*/" "$TMP"/chaos.*.log 2>/dev/null | tr -dc '0-9\n'; } | sort -n | tail -1; }
# later STEPS: waits until the job has trained STEPS more steps (up to 60 s).
later() {
  local target=$(($(step) + $1))
  for _ in $(seq 1 300); do (($(step) >= target)) && return 0; sleep 0.2; done
  return 1
}
# a live worker other than the one stopped, picked at random
victim() {
  local live=()
  for p in "${WORKERS[@]}"; do [[ $p != "${STOPPED:-}" ]] && kill -0 "$p" 2>/dev/null && live+=("$p"); done
  echo "${live[$((RANDOM % ${#live[@]}))]}"
}
KILLED=()
REMOVED="removed from the job; "
JOINS="joins the job at step"
REFORMS="the job re-forms: every node"
removals=0
joins=0
join_new_worker() {
  start worker
  WORKERS+=("$STARTED")
  joins=$((joins + 1))
  check "a new worker joins ($joins)" await "$joins" "$JOINS"
}

check "the job trains" later 20
events=(kill kill kill stop server)
for ((i = ${#events[@]} - 1; i > 0; i--)); do  # a seeded shuffle
  j=$((RANDOM % (i + 1)))
  t=${events[$i]} && events[$i]=${events[$j]} && events[$j]=$t
done
for e in "${events[@]}"; do
  later $((5 + RANDOM % 40)) || true
  case $e in
    kill)
      v=$(victim)
      echo "kill -9 of worker process $v at step $(step)"
      kill -9 "$v"
      KILLED+=("$v")
      removals=$((removals + 1))
      check "the killed worker is removed ($removals)" await "$removals" "$REMOVED"
      join_new_worker
      ;;
    stop)
      STOPPED=$(victim)
      echo "SIGSTOP of worker process $STOPPED at step $(step)"
      kill -STOP "$STOPPED"
      removals=$((removals + 1))
      check "the stopped worker is removed ($removals)" await "$removals" "$REMOVED"
      kill -CONT "$STOPPED"
      join_new_worker
      ;;
    server)
      k=$((RANDOM % 2))
      echo "kill -9 of server process ${SERVERS[$k]} at step $(step)"
      kill -9 "${SERVERS[$k]}"
      KILLED+=("${SERVERS[$k]}")
      start server
      SERVERS[$k]=$STARTED
      check "the job re-forms" await 1 "$REFORMS"
      check "and starts again" await 2 "the job starts"
      ;;
  esac
done
check "the job trains on after the faults" later 30
kill -TERM "$SCHED"
# Every process ends (none is left) with status 0, but the stopped worker,
# which was told it was removed, and those killed.
for p in "${PIDS[@]}"; do
  for _ in $(seq 1 600); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$p" 2>/dev/null; then
    check "process $p ends" false
    continue
  fi
  wait "$p"
  status=$?
  if [[ $p == "${STOPPED:-}" ]]; then
    check "the stopped worker exits non-zero ($status)" test "$status" -ne 0
  elif [[ " ${KILLED[*]} " != *" $p "* ]]; then
    check "process $p exits 0 ($status)" test "$status" = 0
  fi
done
stopped_log=$(grep -l "was removed from the job" "$TMP"/chaos.[0-9]*.log | head -1)
check "the stopped worker is told it was removed" test -n "$stopped_log"
check "4 removals, logged once each" test "$(count "$REMOVED")" = 4
check "4 joins, logged once each" test "$(count "$JOINS")" = 4
check "1 re-form, logged once" test "$(count "$REFORMS")" = 1
S=$(grep -ho "stopped after step [0-9]*" "$TMP"/chaos.[0-9]*.log | sort -u | awk '{print $4}')
check "every worker stopped after the same step ($S)" test "$(wc -w <<<"$S")" = 1
check "a complete checkpoint of step $S" test -f "$TMP/chaos/checkpoints/$(printf 'step-%09d' "${S:-0}")/manifest.json"
check "every checkpoint left verifies" "$PST" checkpoint inspect "$TMP/chaos/checkpoints" >"$TMP/inspect.log" 2>&1
check "none is incomplete or corrupt" bash -c "! grep -v 'complete, verified' '$TMP/inspect.log' | grep -q '^step-'"
check "reference: 3 workers, $S steps, undisturbed" timeout 300 "$PST" train "${JOB[@]}" --set train.steps="$S" \
  --set train.output="$TMP/calm" >"$TMP/calm.log" 2>&1
valid_loss() { "$PST" eval --model "$1" --split valid --threads 1 2>/dev/null | grep -o "valid: loss [0-9.]*" | awk '{print $3}'; }
chaos=$(valid_loss "$TMP/chaos/model.safetensors")
calm=$(valid_loss "$TMP/calm/model.safetensors")
echo "validation loss after $S steps: $chaos with the faults, $calm undisturbed"
check "within 10% of the undisturbed run's" awk -v a="$chaos" -v b="$calm" 'BEGIN {exit !(a > 0 && b > 0 && (a - b) ^ 2 <= (0.1 * b) ^ 2)}'

echo "$passes passed, $failures failed"
if [[ $failures -ne 0 ]]; then
  for f in "$TMP"/chaos.*.log; do echo "== $f"; tail -n 4 "$f"; done
fi
[[ $failures -eq 0 ]]
