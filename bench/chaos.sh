#!/usr/bin/env bash
# Worker faults in a --role job (docs/design.md, Membership): 1 scheduler, 2
# servers and W workers of g2p-tiny on loopback, run once undisturbed and once
# with N faults at random moments (seeded): kill -9, or SIGSTOP of a worker
# that is continued once it has been removed (a hang). Never worker 0, which
# writes the model. For each fault it prints the time from the fault to the
# first update without that worker (the heartbeat window, then the step), and
# at the end the steps lost (rounds the servers did not apply, which BSP
# should keep at 0) and the wall time against the undisturbed run (with
# fewer workers the steps are smaller and quicker on a shared machine).
# With REJOIN = 1, a new worker process starts after each fault's removal and
# joins the job in the free place: it prints the time from that start to the
# step the new worker trains first (its data loading, then the next step).
# With SERVER = 1, one server is killed (kill -9) after the workers' faults
# and a replacement started once the scheduler says the job re-forms: it
# prints the time from the kill to the re-form, from the replacement's start
# to training again (the re-formed job's start), and the steps trained again
# (those since the newest checkpoint, at most CHECKPOINT_STEPS).
# CONFIG (configs/g2p-tiny.toml) and BATCH (16) in the environment choose the model.
#   bench/chaos.sh [BUILD_DIR] [WORKERS] [FAULTS] [STEPS] [HEARTBEAT_S] [MISSES] [SEED] [REJOIN] [SERVER]
#                  [CHECKPOINT_STEPS]
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
BUILD=${1:-$ROOT/build}
WORKERS=${2:-4}
FAULTS=${3:-3}
STEPS=${4:-1500}
HEARTBEAT=${5:-1}
MISSES=${6:-5}
RANDOM=${7:-1}
REJOIN=${8:-0}
SERVER=${9:-0}
CHECKPOINT_STEPS=${10:-50}
PST=$(realpath "$BUILD/bin/pst")
((FAULTS < WORKERS)) || { echo "FAULTS must leave a worker: at most $((WORKERS - 1))"; exit 2; }
((WORKERS >= 2)) || { echo "WORKERS: at least 2 (worker 0 is never a victim)"; exit 2; }
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
"$PST" keygen --out "$TMP/job.key" >/dev/null
JOB=(--config "$ROOT/${CONFIG:-configs/g2p-tiny.toml}" --set security.key_file="$TMP/job.key" --set train.eval_every=0
     --set train.test_at_end=false --set data.batch_size="${BATCH:-16}" --set train.threads=1 --set train.log_every=10
     --set cluster.servers=2 --set cluster.workers="$WORKERS" --set train.steps="$STEPS"
     --set cluster.heartbeat_s="$HEARTBEAT" --set cluster.heartbeat_misses="$MISSES"
     --set checkpoint.every_steps="$CHECKPOINT_STEPS")

# run NAME: starts the job's processes; their PIDs in SCHED, SERVERS, WORKERS.
run() {
  local sock="ipc://$TMP/$1.sock" args=("${JOB[@]}" --set train.output="$TMP/$1")
  cd "$TMP" || exit 1
  "$PST" train "${args[@]}" --role scheduler --scheduler "$sock" >"$1.scheduler.log" 2>&1 &
  SCHED=$!
  SERVERS=()
  WORKERS_PIDS=()
  for i in 0 1; do
    "$PST" train "${args[@]}" --role server --scheduler "$sock" >"$1.server$i.log" 2>&1 &
    SERVERS+=($!)
  done
  for ((i = 0; i < WORKERS; i++)); do
    "$PST" train "${args[@]}" --role worker --scheduler "$sock" >"$1.worker$i.log" 2>&1 &
    WORKERS_PIDS+=($!)
  done
  PIDS+=("$SCHED" "${SERVERS[@]}" "${WORKERS_PIDS[@]}")
  cd - >/dev/null || exit 1
}
# index NAME I: the worker index the scheduler gave the I-th worker started.
index() { grep -o '\[worker [0-9]*\]' "$TMP/$1.worker$2.log" | head -1 | tr -dc '0-9'; }
seconds() { awk -F: '{printf "%.3f\n", $1 * 3600 + $2 * 60 + $3}' <<<"$1"; }
now() { seconds "$(date +%H:%M:%S.%N)"; }
# elapsed LINE AT: seconds from AT to the time stamp of the log line LINE.
elapsed() { awk -v t="$(seconds "$(cut -c2-13 <<<"$1")")" -v a="$2" 'BEGIN {printf "%.2f", t - a}'; }
# await CMD...: CMD's output once it is not empty (every 0.1 s, at most 60 s).
await() {
  local out=""
  for _ in $(seq 1 600); do
    out=$("$@")
    [[ -n $out ]] && break
    sleep 0.1
  done
  echo "$out"
}
# update_without W AT: the chaos job's first update at or after AT that leaves worker W out.
update_without() {
  grep "takes the pushes of" "$TMP/chaos.server0.log" | grep -v "[(, ]$1[,)]" | while read -r l; do
    awk -v t="$(seconds "$(cut -c2-13 <<<"$l")")" -v a="$2" 'BEGIN {exit !(t >= a)}' && echo "$l" && break
  done
}
# nth_join N: the scheduler's log line of the chaos job's N-th join.
nth_join() { grep "joins the job at step" "$TMP/chaos.scheduler.log" | sed -n "$1p"; }

start=$(now)
run calm
wait "$SCHED" "${SERVERS[@]}" "${WORKERS_PIDS[@]}"
calm=$(awk -v a="$(now)" -v b="$start" 'BEGIN {printf "%.3f", a - b}')

start=$(now)
run chaos
until grep -q "step 20/" "$TMP/chaos.worker0.log" "$TMP/chaos.worker1.log" 2>/dev/null; do sleep 0.2; done
victims=()
JOINERS=()
DETECT=()
JOINED=()
for ((i = 0; i < WORKERS; i++)); do [[ $(index chaos "$i") != 0 ]] && victims+=("$i"); done
stopped=()
for ((f = 0; f < FAULTS; f++)); do
  sleep "$(awk -v r="$RANDOM" -v h="$HEARTBEAT" -v m="$MISSES" 'BEGIN {printf "%.2f", 1 + (r % 100) / 100 * h * m}')"
  pick=$((RANDOM % ${#victims[@]}))
  i=${victims[$pick]}
  victims=("${victims[@]:0:$pick}" "${victims[@]:$((pick + 1))}")
  w=$(index chaos "$i")
  kind=$([[ $((RANDOM % 2)) == 0 ]] && echo "kill -9" || echo "SIGSTOP")
  if ! kill -0 "${WORKERS_PIDS[$i]}" 2>/dev/null; then
    echo "fault $((f + 1)): worker $w has ended already (the job trained its $STEPS steps first): no more faults; give more STEPS"
    break
  fi
  at=$(now)
  if [[ $kind == "kill -9" ]]; then kill -9 "${WORKERS_PIDS[$i]}"; else kill -STOP "${WORKERS_PIDS[$i]}" && stopped+=("$i"); fi
  # The first update after the fault that leaves worker w out.
  line=$(await update_without "$w" "$at")
  if [[ -z $line ]]; then
    echo "fault $((f + 1)): $kind of worker $w; no update without it within 60 s (the job may have ended: give more STEPS)"
    continue
  fi
  took=$(elapsed "$line" "$at")
  DETECT+=("$took")
  echo "fault $((f + 1)): $kind of worker $w; training without it after $took s"
  if [[ $REJOIN == 1 ]]; then
    at=$(now)
    (cd "$TMP" && exec "$PST" train "${JOB[@]}" --set train.output="$TMP/chaos" --role worker \
      --scheduler "ipc://$TMP/chaos.sock") >"$TMP/chaos.join$f.log" 2>&1 &
    JOINERS+=($!)
    PIDS+=($!)
    line=$(await nth_join $((f + 1)))
    took=$(elapsed "$line" "$at")
    JOINED+=("$took")
    echo "  a new worker started; it joined at step $(grep -o 'at step [0-9]*' <<<"$line" | awk '{print $3}') after $took s"
  fi
done
made=$f  # faults made: fewer when the job ended first
for i in "${stopped[@]}"; do kill -CONT "${WORKERS_PIDS[$i]}"; done
# nth_start N: the scheduler's N-th "the job starts" line (the second: after a re-form).
nth_start() { grep "the job starts" "$TMP/chaos.scheduler.log" | sed -n "$1p"; }
reform_line() { grep "the job re-forms: every node" "$TMP/chaos.scheduler.log" | head -1; }
REPLACEMENT=()
if [[ $SERVER == 1 ]]; then
  sleep "$(awk -v r="$RANDOM" -v h="$HEARTBEAT" -v m="$MISSES" 'BEGIN {printf "%.2f", 1 + (r % 100) / 100 * h * m}')"
  k=$((RANDOM % 2))
  at=$(now)
  kill -9 "${SERVERS[$k]}"
  detected=$(elapsed "$(await reform_line)" "$at")
  started=$(now)
  (cd "$TMP" && exec "$PST" train "${JOB[@]}" --set train.output="$TMP/chaos" --role server \
    --scheduler "ipc://$TMP/chaos.sock") >"$TMP/chaos.server2.log" 2>&1 &
  REPLACEMENT=($!)
  PIDS+=($!)
  line=$(await nth_start 2)
  gave_up=$(grep -ho "gave up step [0-9]*" "$TMP"/chaos.server[01].log | head -1 | awk '{print $4}')
  resumed=$(await grep -ho "resumed from .* (step [0-9]*" "$TMP/chaos.server2.log" | grep -o "[0-9]*$")
  echo "server fault: kill -9 of server $k; the job re-forms after $detected s; the replacement's start to" \
    "training again $(elapsed "$line" "$started") s (kill to training again $(elapsed "$line" "$at") s);" \
    "resumed from step $resumed, $((${gave_up:-0} - 1 - ${resumed:-0})) steps trained again"
fi
wait "$SCHED" "${SERVERS[@]}" "${WORKERS_PIDS[0]}" "${JOINERS[@]}" "${REPLACEMENT[@]}"
chaos=$(awk -v a="$(now)" -v b="$start" 'BEGIN {printf "%.3f", a - b}')
applied=$(grep -ho "server [0-9]*: [0-9]* steps" "$TMP"/chaos.server*.log | head -1 | awk '{print $3}')
echo "steps lost: $((STEPS - ${applied:-0})) of $STEPS (the servers applied ${applied:-0})"
# median and max of a list of seconds
summary() { printf '%s\n' "$@" | median_min_max | awk '{printf "median %.2f s, max %.2f s", $1, $3}'; }
[[ ${#DETECT[@]} -gt 0 ]] && echo "fault to training without the worker: $(summary "${DETECT[@]}") over ${#DETECT[@]} faults"
[[ ${#JOINED[@]} -gt 0 ]] && echo "a new worker's start to its first step: $(summary "${JOINED[@]}") over ${#JOINED[@]} joins"
awk -v c="$chaos" -v u="$calm" -v w="$WORKERS" -v f="$made" -v r="$REJOIN" 'BEGIN {
  printf "wall time: undisturbed %.1f s, with %d of %d workers lost%s %.1f s (ratio %.2f)\n", u, f, w,
    r == 1 ? " (and replaced)" : "", c, c / u }'
