#!/usr/bin/env bash
# A job whose processes start on their own, without MPI, as containers would
# run them (`pst train --role ... --scheduler ENDPOINT`), on loopback:
#  1. a scheduler, 2 servers and 2 workers, and a scheduler, 1 server and
#     1 worker, give the weights of one process playing the workers, bit for
#     bit (the servers sum their statistics through the scheduler; the
#     references compute with 1 thread, the role workers with 2 on any
#     machine, one with a single CPU too); a worker started after more than
#     cluster.timeout_s still joins (the rendezvous waits
#     cluster.start_timeout_s), and one more worker after the start is
#     refused by name while the job goes on;
#  2. kill -9 of a worker, and SIGSTOP of another past the liveness window:
#     the job goes on and ends well with the third, and its weights equal
#     the same membership sequence's (docs/design.md, Membership); when
#     worker 0 dies another writes the model; below cluster.min_workers the
#     job stops with a checkpoint; workers that start while the job trains
#     join it at a step (one in a removed worker's place), and its weights
#     equal that membership sequence's too;
#  3. kill -9 of a server: the job re-forms, a replacement server started
#     with the same command takes its place, every node resumes from the
#     newest checkpoint, and the job ends well with the weights of an
#     uninterrupted one, bit for bit; with cluster.max_restarts = 0 every
#     other process ends non-zero, and the scheduler names the dead server;
#     kill -9 of the scheduler: the
#     servers stop with a checkpoint of the last step all completed, from
#     which the job resumes bit for bit;
#  4. SIGTERM to the scheduler alone (docker compose stop): every process
#     ends with status 0 after the same step, a checkpoint of that step is
#     complete, and a job resumed from it equals an uninterrupted one.
# Usage: roles_test.sh PATH_TO_PST PATH_TO_MODEL_DIFF
set -uo pipefail
PST=$(realpath "$1")
DIFF=$(realpath "$2")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/check.sh"
scratch_and_processes
unset OMP_NUM_THREADS

# The job's keys: security.mode = secret (the default) admits only
# processes that prove its secret.
"$PST" keygen --out "$TMP/job.key" >/dev/null
"$PST" keygen --out "$TMP/other.key" >/dev/null
JOB=(--config "$ROOT/configs/g2p-tiny.toml" --set security.key_file="$TMP/job.key"
     --set train.eval_every=0 --set train.test_at_end=false
     --set data.batch_size=16 --set model.dropout=0.1 --set model.attention_dropout=0.1
     --set cluster.chunk_bytes=4096 --set cluster.servers=2 --set cluster.workers=2 --set train.threads=1)

# start_job NAME STEPS TIMEOUT [SERVERS WORKERS [WORKER_DELAY [EXTRA...]]]:
# starts the processes (2 servers and 2 workers unless told), the workers
# WORKER_DELAY seconds after the others; their PIDs go to SCHED, SERVERS and
# WORKERS (workers in order of start), their arguments to ARGS.
start_job() {
  local name=$1 steps=$2 timeout=$3 nservers=${4:-2} nworkers=${5:-2} delay=${6:-0} sock="ipc://$TMP/$1.sock"
  shift $(($# < 6 ? $# : 6))
  ARGS=("${JOB[@]}" --set train.steps="$steps" --set cluster.timeout_s="$timeout" --set train.log_every=1
        --set cluster.servers="$nservers" --set cluster.workers="$nworkers" --set train.output="$TMP/$name" "$@")
  local args=("${ARGS[@]}")
  cd "$TMP" || return 1  # (relative outputs are under $TMP)
  "$PST" train "${args[@]}" --role scheduler --scheduler "$sock" >"$TMP/$name.scheduler.log" 2>&1 &
  SCHED=$!
  SERVERS=()
  WORKERS=()
  for ((i = 0; i < nservers; i++)); do
    "$PST" train "${args[@]}" --role server --scheduler "$sock" >"$TMP/$name.server$i.log" 2>&1 &
    SERVERS+=($!)
  done
  sleep "$delay"
  for ((i = 0; i < nworkers; i++)); do
    "$PST" train "${args[@]}" --role worker --scheduler "$sock" >"$TMP/$name.worker$i.log" 2>&1 &
    WORKERS+=($!)
  done
  PIDS+=("$SCHED" "${SERVERS[@]}" "${WORKERS[@]}")
  cd - >/dev/null || return 1
}

# wait_all SECONDS PID...: waits for the processes to end; fails if one is
# still running after SECONDS. Exit codes go to CODES.
wait_all() {
  local limit=$1 start=$SECONDS
  shift
  CODES=()
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS - start < limit)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "process $pid still runs after $limit s"
      return 1
    fi
    wait "$pid"
    CODES+=($?)
  done
}

# 1. Equivalence with one process playing the workers, whatever the threads.
start_job eq 5 60 2 2 0 --set train.threads=2
check "the role job ends" wait_all 120 "$SCHED" "${SERVERS[@]}" "${WORKERS[@]}"
check "every process exits 0 (${CODES[*]})" test "${CODES[*]}" = "0 0 0 0 0"
check "reference" timeout 120 env OMP_NUM_THREADS=1 "$PST" train "${JOB[@]}" --set train.steps=5 \
  --set cluster.in_process=sequential --set train.output="$TMP/ref" >"$TMP/ref.log" 2>&1
check "2 servers + 2 workers equal one process, bit for bit" \
  "$DIFF" "$TMP/eq/model.safetensors" "$TMP/ref/model.safetensors" 0 0
check "the role workers computed with 2 threads" grep -q "worker: 2 compute threads (train.threads)" "$TMP/eq.worker0.log"

# The worker starts 6 s after the others, past cluster.timeout_s = 4; once
# the job runs, one more worker of the same job (as from another host: its
# train.output, relative, is another folder) registers and is refused. The
# job's 600 steps outlast that registration on a loaded machine (with 40, it
# once ended first under CI's load).
# While the scheduler waits for that worker, a worker of the same config with
# another job's keys tries to register: it is refused at the handshake,
# learns nothing, and says what to check.
mkdir -p "$TMP/elsewhere"
(cd "$TMP/elsewhere" && exec timeout 60 "$PST" train "${JOB[@]}" --set security.key_file="$TMP/other.key" \
  --set cluster.servers=1 --set cluster.workers=1 --set cluster.start_timeout_s=8 --role worker \
  --scheduler "ipc://$TMP/eq1.sock") >"$TMP/stranger.log" 2>&1 &
STRANGER=$!
start_job eq1 600 4 1 1 6 --set train.threads=0 --set train.output=eq1
for _ in $(seq 1 300); do grep -q "step 3/" "$TMP/eq1.worker0.log" 2>/dev/null && break; sleep 0.2; done
(cd "$TMP/elsewhere" && exec timeout 60 "$PST" train "${ARGS[@]}" --role worker --scheduler "ipc://$TMP/eq1.sock") \
  >"$TMP/late.log" 2>&1
late=$?
check "a worker past the rendezvous exits non-zero ($late)" test "$late" -ne 0
check "and is told the job has started" grep -q "the job has started" "$TMP/late.log"
wait "$STRANGER"
stranger=$?
check "a worker with another job's secret exits non-zero ($stranger)" test "$stranger" -ne 0
check "and is told to check its security settings" grep -q "security.key_file? The scheduler refuses" "$TMP/stranger.log"
check "the scheduler refused its connection" grep -q "refused a connection" "$TMP/eq1.scheduler.log"
(cd "$TMP/elsewhere" && exec timeout 60 "$PST" train "${ARGS[@]}" --set security.key_file= --role worker \
  --scheduler "ipc://$TMP/eq1.sock") >"$TMP/keyless.log" 2>&1
check "a --role process without keys is told what it needs" grep -q "need security.key_file" "$TMP/keyless.log"
check "the 1 + 1 + 1 job with a late worker ends" wait_all 180 "$SCHED" "${SERVERS[@]}" "${WORKERS[@]}"
check "every process exits 0 (${CODES[*]})" test "${CODES[*]}" = "0 0 0"
check "reference W=1" timeout 120 env OMP_NUM_THREADS=1 "$PST" train "${JOB[@]}" --set train.steps=600 \
  --set cluster.servers=1 --set cluster.workers=1 --set cluster.in_process=sequential --set train.output="$TMP/ref1" \
  >"$TMP/ref1.log" 2>&1
check "1 server + 1 worker equal one process, bit for bit" \
  "$DIFF" "$TMP/eq1/model.safetensors" "$TMP/ref1/model.safetensors" 0 0

# which_worker NAME PID: the index the scheduler gave the worker with that PID.
which_worker() {
  local i
  for i in "${!WORKERS[@]}"; do
    if [[ ${WORKERS[$i]} == "$2" ]]; then
      grep -o '\[worker [0-9]\]' "$TMP/$1.worker$i.log" | head -1 | tr -dc '0-9'
      return
    fi
  done
}
# worker_pid NAME INDEX: the PID of the worker the scheduler gave that index.
worker_pid() {
  local pid
  for pid in "${WORKERS[@]}"; do
    [[ $(which_worker "$1" "$pid") == "$2" ]] && echo "$pid"
  done
}
# wait_for_step LOG STEP: waits (up to 60 s) until LOG shows that step.
wait_for_step() {
  for _ in $(seq 1 300); do grep -q "step $2/" "$1" 2>/dev/null && return 0; sleep 0.2; done
  return 1
}

# 2. Workers leave and the job goes on. 2 servers and 3 workers; the
# liveness window is 0.5 s x 6. kill -9 of worker 2 once it trains, then
# SIGSTOP of worker 1 past the window and SIGCONT: the job trains to its
# end with worker 0; the stopped worker is told it was removed and exits
# non-zero; the scheduler logs each removal once. The weights equal those of
# the same membership sequence run as threads jobs resumed from one another
# (3 workers to the first step without worker 2, 2 workers to the first
# without worker 1, then 1 worker), bit for bit: no batch of the data order
# was skipped or trained on twice, and no half-pushed step counted. (The
# highest worker leaves each time: its batch is the last of its step, so a
# job resumed with fewer workers trains on the same batches.)
start_job kw 400 20 2 3 0 --set cluster.heartbeat_s=0.5 --set cluster.heartbeat_misses=6
for _ in $(seq 1 100); do grep -q "step 3/" "$TMP"/kw.worker*.log 2>/dev/null && break; sleep 0.2; done
w0=$(worker_pid kw 0)
w1=$(worker_pid kw 1)
w2=$(worker_pid kw 2)
check "the workers have indices 0, 1 and 2 ($w0, $w1, $w2)" test -n "$w0" -a -n "$w1" -a -n "$w2"
kill -9 "$w2"
log0="$TMP/kw.worker$(for i in 0 1 2; do [[ ${WORKERS[$i]} == "$w0" ]] && echo $i; done).log"
check "training goes on after worker 2's death" wait_for_step "$log0" 120
kill -STOP "$w1"
# SIGCONT once the scheduler has removed it, while the job still trains (a
# fixed sleep let a fast machine finish the job first: the worker then found
# no server to tell it anything).
removed_w1() { grep -q "worker 1 (rank [0-9]*) sent nothing.*removed from the job; " "$TMP/kw.scheduler.log"; }
for _ in $(seq 1 300); do removed_w1 && break; sleep 0.2; done
check "worker 1 is removed while it is stopped" removed_w1
kill -CONT "$w1"
check "the job ends" wait_all 180 "$SCHED" "${SERVERS[@]}" "$w0"
check "the scheduler, the servers and worker 0 exit 0 (${CODES[*]})" test "${CODES[*]}" = "0 0 0 0"
check "the stopped worker ends" wait_all 60 "$w1"
check "and exits non-zero (${CODES[*]})" test "${CODES[*]}" != 0
check "and is told it was removed" grep -q "was removed from the job" "$TMP"/kw.worker*.log
check "the scheduler logs two removals" test "$(grep -c 'removed from the job; ' "$TMP/kw.scheduler.log")" = 2
for i in 1 2; do
  check "once for worker $i" test "$(grep -c "worker $i (rank [0-9]*) sent nothing.*removed from the job; " "$TMP/kw.scheduler.log")" = 1
done
m1=$(grep -m1 -o "update to version [0-9]* takes the pushes of 2 of 3" "$TMP/kw.server0.log" | awk '{print $4 - 1}')
m2=$(grep -m1 -o "update to version [0-9]* takes the pushes of 1 of 3" "$TMP/kw.server0.log" | awk '{print $4 - 1}')
check "3 workers to step $m1, 2 to step $m2, then 1" test -n "$m1" -a -n "$m2" -a "${m1:-0}" -lt "${m2:-0}"
ck() { printf '%s/checkpoints/step-%09d' "$1" "$2"; }
REF=("${JOB[@]}" --set train.log_every=100 --set checkpoint.every_steps=100000)
check "reference, 3 workers" timeout 120 "$PST" train "${REF[@]}" --set cluster.workers=3 --set train.steps="$m1" \
  --set train.output="$TMP/kw-a" >"$TMP/kw-a.log" 2>&1
check "reference, 2 workers" timeout 120 "$PST" train "${REF[@]}" --set cluster.workers=2 --set train.steps="$m2" \
  --set train.output="$TMP/kw-b" --resume "$(ck "$TMP/kw-a" "$m1")" >"$TMP/kw-b.log" 2>&1
check "reference, 1 worker" timeout 120 "$PST" train "${REF[@]}" --set cluster.workers=1 --set train.steps=400 \
  --set train.output="$TMP/kw-c" --resume "$(ck "$TMP/kw-b" "$m2")" >"$TMP/kw-c.log" 2>&1
check "the job that lost two workers equals its membership sequence, bit for bit" \
  "$DIFF" "$TMP/kw/model.safetensors" "$TMP/kw-c/model.safetensors" 0 0

# Worker 0 dies (1 server, 2 workers, a checkpoint at the last step): worker
# 1 validates, tests and writes the model in its place, and the model is the
# final checkpoint's weights, bit for bit.
start_job k0 200 20 1 2 0 --set cluster.heartbeat_s=0.5 --set cluster.heartbeat_misses=4 \
  --set checkpoint.every_steps=100000
for _ in $(seq 1 100); do grep -q "step 3/" "$TMP"/k0.worker*.log 2>/dev/null && break; sleep 0.2; done
w0=$(worker_pid k0 0)
w1=$(worker_pid k0 1)
kill -9 "$w0"
check "the job without worker 0 ends" wait_all 120 "$SCHED" "${SERVERS[@]}" "$w1"
check "and exits 0 (${CODES[*]})" test "${CODES[*]}" = "0 0 0"
check "worker 1 writes the model" grep -q "this worker validates, tests and writes the model" "$TMP"/k0.worker*.log
check "the final checkpoint exports" "$PST" checkpoint export "$(ck "$TMP/k0" 200)" --out "$TMP/k0-final.safetensors"
check "worker 1's model is the final weights, bit for bit" \
  "$DIFF" "$TMP/k0/model.safetensors" "$TMP/k0-final.safetensors" 0 0

# Below cluster.min_workers = 2 (1 server, 2 workers): kill -9 of a worker
# stops the job after the next step with a complete checkpoint; the server
# and the other worker exit 0, the scheduler exits 1 saying why.
start_job km 1000000 20 1 2 0 --set cluster.heartbeat_s=0.5 --set cluster.heartbeat_misses=4 --set cluster.min_workers=2
for _ in $(seq 1 100); do grep -q "step 3/" "$TMP"/km.worker*.log 2>/dev/null && break; sleep 0.2; done
kill -9 "${WORKERS[1]}"
check "the job stops" wait_all 60 "$SCHED" "${SERVERS[@]}" "${WORKERS[0]}"
check "the scheduler exits 1, the server and the other worker 0 (${CODES[*]})" test "${CODES[*]}" = "1 0 0"
check "the scheduler says why" grep -q "fewer than cluster.min_workers = 2; start workers and resume" \
  "$TMP/km.scheduler.log"
stopped=$(grep -ho "stopped after step [0-9]*" "$TMP/km.worker0.log" | awk '{print $4}')
check "a complete checkpoint of step $stopped" test -f "$(ck "$TMP/km" "${stopped:-0}")/manifest.json"

# Workers join (2 servers; the job starts with 1 worker and takes up to
# cluster.max_workers = 2). A second worker started while the job trains
# joins at a step; a third is refused by name (the job has all the workers
# it takes). The second is stopped (SIGSTOP) past the liveness window and
# removed; a fourth joins in its place, and the stopped one, run again, is
# told it was removed and exits non-zero (its place is another process's
# now). SIGTERM to the scheduler ends the job; its weights equal the
# membership sequence 1, 2, 1, 2 run as threads jobs resumed from one
# another, bit for bit: each joiner trained on the batches a worker of that
# number trains on, from the step the servers admitted it.
start_job kj 1000000 20 2 1 0 --set cluster.max_workers=2 --set cluster.heartbeat_s=0.5 \
  --set cluster.heartbeat_misses=6
KJ_ARGS=("${ARGS[@]}")
wait_for_step "$TMP/kj.worker0.log" 3
join_worker() {  # join_worker NAME: a worker of job kj, started now; its PID in JOINER
  (cd "$TMP" && exec "$PST" train "${KJ_ARGS[@]}" --role worker --scheduler "ipc://$TMP/kj.sock") \
    >"$TMP/kj.$1.log" 2>&1 &
  JOINER=$!
  PIDS+=("$JOINER")
}
joins() { grep -c "worker 1 (rank 4) joins the job at step" "$TMP/kj.scheduler.log"; }
join_worker join1
j1=$JOINER
for _ in $(seq 1 300); do [[ $(joins) -ge 1 ]] && break; sleep 0.2; done
check "a worker started while the job trains joins it" test "$(joins)" -ge 1
(cd "$TMP" && exec timeout 60 "$PST" train "${KJ_ARGS[@]}" --role worker --scheduler "ipc://$TMP/kj.sock") \
  >"$TMP/kj.full.log" 2>&1
full=$?
check "a worker beyond cluster.max_workers exits non-zero ($full)" test "$full" -ne 0
check "and is told the job has all its workers" grep -q "has all the workers it takes (cluster.max_workers = 2" \
  "$TMP/kj.full.log"
wait_for_step "$TMP/kj.join1.log" "$(($(grep -o "joined the job at step [0-9]*" "$TMP/kj.join1.log" | awk '{print $6}') + 20))"
kill -STOP "$j1"
removed_j1() { grep -q "worker 1 (rank 4) sent nothing.*removed from the job; " "$TMP/kj.scheduler.log"; }
for _ in $(seq 1 300); do removed_j1 && break; sleep 0.2; done
check "the stopped joiner is removed" removed_j1
join_worker join2
j2=$JOINER
for _ in $(seq 1 300); do [[ $(joins) -ge 2 ]] && break; sleep 0.2; done
check "another worker joins in its place" test "$(joins)" -ge 2
kill -CONT "$j1"
check "the stopped joiner, run again, ends" wait_all 60 "$j1"
check "non-zero (${CODES[*]})" test "${CODES[*]}" != 0
check "told it was removed" grep -q "was removed from the job" "$TMP/kj.join1.log"
wait_for_step "$TMP/kj.join2.log" "$(($(grep -o "joined the job at step [0-9]*" "$TMP/kj.join2.log" | awk '{print $6}') + 20))"
kill -TERM "$SCHED"
check "the job with joins ends" wait_all 60 "$SCHED" "${SERVERS[@]}" "${WORKERS[0]}" "$j2"
check "every process exits 0 (${CODES[*]})" test "${CODES[*]}" = "0 0 0 0 0"
mapfile -t changes < <(grep -o "update to version [0-9]* takes the pushes of [12] of 2" "$TMP/kj.server0.log" |
  awk '{print $4 - 1}')
end=$(grep -ho "stopped after step [0-9]*" "$TMP/kj.worker0.log" | awk '{print $4}')
check "membership 1, 2, 1, 2 from steps 0, ${changes[*]} to $end" test "${#changes[@]}" = 3 -a -n "$end"
if [[ ${#changes[@]} == 3 && -n $end ]]; then
  prev=""
  n=1
  for seg in "${changes[@]}" "$end"; do
    check "reference, $n workers to step $seg" timeout 120 "$PST" train "${REF[@]}" --set cluster.workers=$n \
      --set train.steps="$seg" --set train.output="$TMP/kj-$seg" ${prev:+--resume "$(ck "$TMP/kj-$prev" "$prev")"} \
      >"$TMP/kj-$seg.log" 2>&1
    prev=$seg
    n=$((3 - n))
  done
  check "the job that workers joined equals its membership sequence, bit for bit" \
    "$DIFF" "$TMP/kj/model.safetensors" "$TMP/kj-$end/model.safetensors" 0 0
fi

# 3. kill -9 of a server (2 servers, 2 workers, a checkpoint every 25
# steps, a liveness window of 0.5 s x 6), and at once a replacement started
# with the same command, as a container restart policy would (its
# train.output holds the job's run): it waits at the scheduler while the
# job still runs; the scheduler says the job re-forms, once; the replacement
# takes the lost server's place, every node resumes from the newest
# checkpoint, and the job ends well. Its weights equal an uninterrupted
# job's, bit for bit, and metrics.jsonl has one row per step (the rows of
# the steps trained twice are dropped).
start_job ks 300 20 2 2 0 --set cluster.heartbeat_s=0.5 --set cluster.heartbeat_misses=6 \
  --set checkpoint.every_steps=25
wait_for_step "$TMP/ks.worker0.log" 60
kill -9 "${SERVERS[0]}"
killed=$(date +%s.%N)
(cd "$TMP" && exec "$PST" train "${ARGS[@]}" --role server --scheduler "ipc://$TMP/ks.sock") >"$TMP/ks.server2.log" 2>&1 &
REPLACEMENT=$!
PIDS+=("$REPLACEMENT")
reformed() { grep -q "server [01] (rank [12]) sent nothing.*the job re-forms" "$TMP/ks.scheduler.log"; }
for _ in $(seq 1 300); do reformed && break; sleep 0.2; done
check "the scheduler says the job re-forms" reformed
check "the job ends after the re-form" wait_all 180 "$SCHED" "${SERVERS[1]}" "$REPLACEMENT" "${WORKERS[@]}"
check "every process exits 0 (${CODES[*]})" test "${CODES[*]}" = "0 0 0 0 0"
check "the scheduler logs one re-form" test "$(grep -c "the job re-forms: every node" "$TMP/ks.scheduler.log")" = 1
resumed=$(grep -ho "resumed from .* (step [0-9]*" "$TMP/ks.server2.log" | grep -o "[0-9]*$")
check "the replacement resumes from a checkpoint (step $resumed)" test -n "$resumed"
check "so do the others" grep -q "resumed from .* (step $resumed," "$TMP/ks.server1.log"
again=$(grep -h "step $((resumed + 1))/" "$TMP"/ks.worker*.log | tail -1 | grep -o "^\[[0-9:.]*\]" | tr -d '[]')
echo "  kill at $(date -d "@$killed" +%T.%N | cut -c1-12), training again at $again, from step $resumed"
check "reference, uninterrupted" timeout 120 env OMP_NUM_THREADS=1 "$PST" train "${JOB[@]}" --set train.steps=300 \
  --set cluster.in_process=sequential --set train.output="$TMP/ks-ref" >"$TMP/ks-ref.log" 2>&1
check "the job that lost a server equals an uninterrupted one, bit for bit" \
  "$DIFF" "$TMP/ks/model.safetensors" "$TMP/ks-ref/model.safetensors" 0 0
check "metrics.jsonl has one row per step" \
  test "$(grep -c '"kind":"train"' "$TMP/ks/metrics.jsonl")/$(grep -o '"kind":"train","step":[0-9]*' "$TMP/ks/metrics.jsonl" | sort -u | wc -l)" = 300/300

# With cluster.max_restarts = 0 a lost server ends the job.
start_job kn 1000000 4 2 2 0 --set cluster.max_restarts=0
for _ in $(seq 1 100); do grep -q "step 3/" "$TMP/kn.worker0.log" "$TMP/kn.worker1.log" 2>/dev/null && break; sleep 0.2; done
sleep 1
kill -9 "${SERVERS[0]}"
check "all others end after a server's death" wait_all 40 "$SCHED" "${SERVERS[1]}" "${WORKERS[@]}"
check "and exit non-zero (${CODES[*]})" bash -c '[[ ! " '"${CODES[*]}"' " =~ " 0 " ]]'
check "the scheduler names the dead server" grep -q "server [01] (rank [12]) sent nothing" "$TMP/kn.scheduler.log"

# kill -9 of the scheduler (2 servers, 2 workers, no periodic checkpoint):
# the servers take it as gone once it has acknowledged no heartbeat for the
# liveness window, each writes its file of the last step they all completed
# (server 0 the manifest), and every process ends non-zero; the job resumed
# from that checkpoint equals an uninterrupted one, bit for bit.
start_job kx 1000000 20 2 2 0 --set cluster.heartbeat_s=0.5 --set cluster.heartbeat_misses=6 \
  --set checkpoint.every_steps=100000
wait_for_step "$TMP/kx.worker0.log" 20
kill -9 "$SCHED"
check "the servers and workers end after the scheduler's death" wait_all 60 "${SERVERS[@]}" "${WORKERS[@]}"
check "non-zero (${CODES[*]})" bash -c '[[ ! " '"${CODES[*]}"' " =~ " 0 " ]]'
check "the servers say the scheduler is gone" grep -q "the scheduler (.*) has acknowledged no heartbeat" \
  "$TMP/kx.server0.log"
kept=$(grep -ho "a checkpoint of step [0-9]* is written" "$TMP"/kx.server*.log | head -1 | awk '{print $5}')
check "a complete checkpoint of step $kept" test -f "$(ck "$TMP/kx" "${kept:-0}")/manifest.json"
check "uninterrupted to step $((kept + 3))" timeout 300 "$PST" train "${JOB[@]}" --set train.steps=$((kept + 3)) \
  --set train.output="$TMP/kx-full" >"$TMP/kx-full.log" 2>&1
check "resumed to step $((kept + 3))" timeout 300 "$PST" train "${JOB[@]}" --set train.steps=$((kept + 3)) \
  --set train.output="$TMP/kx-resumed" --resume "$(ck "$TMP/kx" "${kept:-0}")" >"$TMP/kx-resumed.log" 2>&1
check "resumed after the scheduler's death equals uninterrupted, bit for bit" \
  "$DIFF" "$TMP/kx-resumed/model.safetensors" "$TMP/kx-full/model.safetensors" 0 0

# 4. A graceful stop through the scheduler.
start_job gs 1000000 20
for _ in $(seq 1 150); do grep -q "step 20/" "$TMP/gs.worker0.log" 2>/dev/null && break; sleep 0.2; done
kill -TERM "$SCHED"
check "every process ends after SIGTERM to the scheduler" wait_all 60 "$SCHED" "${SERVERS[@]}" "${WORKERS[@]}"
check "and exits 0 (${CODES[*]})" test "${CODES[*]}" = "0 0 0 0 0"
stopped=$(grep -ho "stopped after step [0-9]*" "$TMP"/gs.worker*.log | sort -u)
check "both workers stopped after the same step ($stopped)" test "$(echo "$stopped" | wc -l)" = 1
step=${stopped##* }
check "a complete checkpoint of step $step" test -f "$TMP/gs/checkpoints/$(printf 'step-%09d' "$step")/manifest.json"
check "uninterrupted to step $((step + 3))" timeout 300 "$PST" train "${JOB[@]}" --set train.steps=$((step + 3)) \
  --set train.output="$TMP/gs-full" >"$TMP/gs-full.log" 2>&1
check "resumed to step $((step + 3))" timeout 300 "$PST" train "${JOB[@]}" --set train.steps=$((step + 3)) \
  --set train.output="$TMP/gs-resumed" --resume "$TMP/gs/checkpoints/$(printf 'step-%09d' "$step")" \
  >"$TMP/gs-resumed.log" 2>&1
check "resumed equals uninterrupted, bit for bit" "$DIFF" "$TMP/gs-resumed/model.safetensors" "$TMP/gs-full/model.safetensors" 0 0

echo "$passes passed, $failures failed"
if [[ $failures -ne 0 ]]; then
  for f in "$TMP"/k*.log "$TMP"/gs*.log; do echo "== $f"; tail -n 3 "$f"; done
fi
[[ $failures -eq 0 ]]
