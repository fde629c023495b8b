#!/usr/bin/env bash
# Chaos (docs/design.md, Membership): a --role job of g2p-tiny (1 scheduler,
# 2 servers, 3 workers on loopback, a checkpoint every 25 steps, a liveness
# window of 0.5 s x 6) meets, in a seeded random order and at random
# moments, three kill -9s of a worker (each followed by a new worker, which
# joins), a SIGSTOP of a worker past the window (continued once removed: it
# is told so and exits non-zero; a new worker joins in its place) and one
# kill -9 of a server (a replacement started at once; the job re-forms from
# its newest checkpoint). The job then trains to its last step (S = 1000).
# Checked: every process but the stopped worker exits 0, and none is left;
# the scheduler logs each removal, join and the re-form once; every
# checkpoint left verifies, the last one of step S; the replacement server
# resumed from a checkpoint at most 2 intervals before the kill, and
# metrics.jsonl has a row for every step; the model's validation loss (pst eval,
# 1000 words) is within 10% of an undisturbed threads job of 3 workers
# trained S steps with the same seed (undisturbed seeds differ by 5%). Both
# take a cosine schedule to the end: at a constant rate the last step's
# model is one noisy point of the path, whose loss moved by 25% within 25
# steps.
# Usage: chaos_test.sh PATH_TO_PST [SEED] (the order and moments of the faults; 1)
set -uo pipefail
PST=$(realpath "$1")
SEED=${2:-1}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/check.sh"
scratch_and_processes
unset OMP_NUM_THREADS
echo "chaos_test: seed $SEED (chaos_test.sh PST $SEED repeats this order)"
RANDOM=$SEED

"$PST" keygen --out "$TMP/job.key" >/dev/null
# (All of CMUdict's training words, not g2p-tiny's 64: a model that has
# memorised 64 words has a validation loss too erratic to compare.)
JOB=(--config "$ROOT/configs/g2p-tiny.toml" --set security.key_file="$TMP/job.key" --set data.max_examples=0
     --set train.eval_every=0 --set train.test_at_end=false --set data.batch_size=16 --set train.threads=1
     --set cluster.chunk_bytes=4096 --set cluster.servers=2 --set cluster.workers=3 --set schedule.kind=cosine)
S=1000
ARGS=("${JOB[@]}" --set train.steps=$S --set train.log_every=1 --set cluster.timeout_s=20
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
# The scheduler's log has a name of its own; chaos.0.log, which start()'s
# background shell opens whenever it gets to run, links to it. (Moving the
# file after the start lost the log beside a CPU hog: the shell had not yet
# created it, and then wrote a new chaos.0.log nobody read.)
: >"$LOG"
ln -s "$LOG" "$TMP/chaos.0.log"
start scheduler
SCHED=$STARTED
SERVERS=()
WORKERS=()
for _ in 1 2; do start server && SERVERS+=("$STARTED"); done
for _ in 1 2 3; do start worker && WORKERS+=("$STARTED"); done

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
  # (On a machine fast enough to train S steps before the faults are done,
  # raise S.)
  if ! kill -0 "$SCHED" 2>/dev/null || grep -q "every node has finished" "$LOG"; then
    check "the job still runs at the $e fault (step $(step) of $S)" false
    break
  fi
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
      KILL_STEP=$(step)
      echo "kill -9 of server process ${SERVERS[$k]} at step $KILL_STEP"
      kill -9 "${SERVERS[$k]}"
      KILLED+=("${SERVERS[$k]}")
      REPLACEMENT_LOG="$TMP/chaos.$n.log"
      start server
      SERVERS[$k]=$STARTED
      check "the job re-forms" await 1 "$REFORMS"
      check "and starts again" await 2 "the job starts"
      ;;
  esac
done
echo "the faults are done at step $(step) of $S"
# Every process ends (none is left) with status 0, but the stopped worker,
# which was told it was removed, and those killed.
for p in "${PIDS[@]}"; do
  for _ in $(seq 1 1500); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
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
check "the scheduler says the job ended well" grep -q "every node has finished" "$LOG"
check "a complete checkpoint of step $S" test -f "$TMP/chaos/checkpoints/$(printf 'step-%09d' "${S:-0}")/manifest.json"
resumed=$(grep -o "resumed from .* (step [0-9]*" "${REPLACEMENT_LOG:-/dev/null}" | grep -o "[0-9]*$")
check "the replacement resumed from a checkpoint of step ${resumed:-?}, at most 50 before the kill (${KILL_STEP:-?})" \
  test "${resumed:-0}" -gt 0 -a "${resumed:-0}" -ge $((${KILL_STEP:-0} - 50))
rows=$(grep -o '"kind":"train","step":[0-9]*' "$TMP/chaos/metrics.jsonl" | grep -o "[0-9]*$")
# (A change of lead at an unlucky moment may log a step's row twice: seen
# once, under AddressSanitizer; a reader takes the last.)
got="$(sort -u <<<"$rows" | wc -l) steps, the last $(sort -n <<<"$rows" | tail -1)"
echo "metrics.jsonl: $(wc -l <<<"$rows") train rows"
check "metrics.jsonl has a row for each of the $S steps ($got)" test "$got" = "$S steps, the last $S"
check "every checkpoint left verifies" "$PST" checkpoint inspect "$TMP/chaos/checkpoints" >"$TMP/inspect.log" 2>&1
check "none is incomplete or corrupt" bash -c "! grep -v 'complete, verified' '$TMP/inspect.log' | grep -q '^step-'"
check "reference: 3 workers, $S steps, undisturbed" timeout 300 "$PST" train "${JOB[@]}" --set train.steps="$S" \
  --set train.output="$TMP/calm" >"$TMP/calm.log" 2>&1
valid_loss() { "$PST" eval --model "$1" --split valid --max-examples 1000 --threads 1 2>/dev/null | grep -o "valid: loss [0-9.]*" | awk '{print $3}'; }
chaos=$(valid_loss "$TMP/chaos/model.safetensors")
calm=$(valid_loss "$TMP/calm/model.safetensors")
echo "validation loss after $S steps: $chaos with the faults, $calm undisturbed"
# Undisturbed runs of train.seed 1 to 8 give 0.414 to 0.434 here, and the
# faults of seeds 1 to 8 beside stress-ng 0.420 to 0.430 against seed 1's
# 0.420: twice the undisturbed spread is well clear of the noise.
check "within 10% of the undisturbed run's" awk -v a="$chaos" -v b="$calm" 'BEGIN {exit !(a > 0 && b > 0 && (a - b) ^ 2 <= (0.1 * b) ^ 2)}'

echo "$passes passed, $failures failed"
if [[ $failures -ne 0 ]]; then
  for f in "$TMP"/chaos.*.log; do echo "== $f"; tail -n 4 "$f"; done
  # The job's membership over time, from every process's log: which workers
  # each step took, joins, removals and the re-form.
  echo "== membership"
  grep -h -E "takes the pushes|joins the job|removed|re-form|resumed from|skipped" "$TMP"/chaos.*.log | sort | cut -c1-220
fi
[[ $failures -eq 0 ]]
