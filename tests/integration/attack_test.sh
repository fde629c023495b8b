#!/usr/bin/env bash
# A live job under attack (tests/integration/attacker.cc) on loopback: a
# scheduler, 2 servers and 2 workers started with --role over TCP, with the
# default security (the job's secret). While it trains:
#  1. outsiders, one without keys and one that guesses a secret, send
#     random, damaged, spoofed, late and flooding messages to every port: the
#     handshake refuses them (the guess is logged), nothing reaches the job
#     and they get no answer;
#  2. a process that holds the keys but not the job's id: its messages are
#     rejected and its Error replies never carry the job's id;
#  3. a process that holds the keys and the job's id (a stale or rogue
#     member): random and damaged headers, messages in every rank's name
#     (pushes of huge gradients, pulls, shutdowns, gradient statistics that
#     ask for a stop, barriers), late registrations, and a flood it never
#     reads. Spoofed ranks are dropped and counted, the rest rejected.
# The job then ends as if nothing happened: every process exits 0 and the
# weights equal, bit for bit, those of one process playing the same job.
# Usage: attack_test.sh PATH_TO_PST PATH_TO_MODEL_DIFF PATH_TO_ATTACKER
set -uo pipefail
PST=$(realpath "$1")
DIFF=$(realpath "$2")
ATTACKER=$(realpath "$3")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/check.sh"
scratch_and_processes
unset OMP_NUM_THREADS

"$PST" keygen --out "$TMP/job.key" >/dev/null
STEPS=1500
JOB=(--config "$ROOT/configs/g2p-tiny.toml" --set security.key_file="$TMP/job.key"
     --set train.eval_every=0 --set train.test_at_end=false --set data.batch_size=16
     --set cluster.chunk_bytes=4096 --set cluster.servers=2 --set cluster.workers=2 --set train.threads=1
     --set train.steps=$STEPS --set train.log_every=1 --set metrics.enabled=false --set cluster.timeout_s=60)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SCHEDULER=tcp://127.0.0.1:$PORT
cd "$TMP" || exit 1
"$PST" train "${JOB[@]}" --set train.output="$TMP/job" --role scheduler --scheduler "$SCHEDULER" >"$TMP/scheduler.log" 2>&1 &
SCHED=$!
PIDS+=("$SCHED")
NODES=()
for name in server0 server1 worker0 worker1; do
  "$PST" train "${JOB[@]}" --set train.output="$TMP/job" --role "${name%?}" --scheduler "$SCHEDULER" \
    >"$TMP/$name.log" 2>&1 &
  NODES+=($!)
  PIDS+=($!)
done

# The job trains; its servers' endpoints and its id are in the logs.
for _ in $(seq 1 600); do grep -q "step 5/" "$TMP/worker0.log" 2>/dev/null && break; sleep 0.2; done
check "the job trains" grep -q "step 5/" "$TMP/worker0.log"
ENDPOINTS=("$SCHEDULER")
for s in server0 server1; do ENDPOINTS+=("$(grep -o 'at tcp://127.0.0.1:[0-9]*' "$TMP/$s.log" | head -1 | cut -c4-)"); done
JOB_ID=$(grep -o 'job [0-9a-f]\{16\}' "$TMP/scheduler.log" | head -1 | cut -c5-)
check "three endpoints and a job id (${ENDPOINTS[*]} $JOB_ID)" test "${#ENDPOINTS[@]}" = 3 -a -n "$JOB_ID"

attack() {  # attack NAME ARGS...: the attacker for 3 s; its summary goes to NAME.txt
  local name=$1
  shift
  timeout 60 "$ATTACKER" --seconds 3 "$@" "${ENDPOINTS[@]}" >"$TMP/$name.txt" 2>&1
  local rc=$?
  [[ $rc == 0 ]] || echo "the attacker $name exited $rc"
  return $rc
}
field() { grep -o "$2 [0-9]*" "$TMP/$1.txt" | head -1 | cut -d' ' -f2; }

# 1. Outsiders: without keys (the handshake's mechanisms differ), and with
# another job's keys (the ZAP handler refuses the secret and logs it).
"$PST" keygen --out "$TMP/other.key" >/dev/null
check "the outsider's attack runs" attack outsider --job-id 0123456789abcdef
check "the outsider kept trying ($(field outsider rounds) rounds)" test "$(field outsider rounds)" -gt 100
check "and got no answer at all" test "$(field outsider answers)" = 0
check "the guesser's attack runs" attack guesser --job-id 0123456789abcdef --key-file "$TMP/other.key"
check "and got no answer either" test "$(field guesser answers)" = 0
check "the servers refused its connections" grep -q "refused a connection" "$TMP/server0.log"
check "the scheduler too" grep -q "refused a connection" "$TMP/scheduler.log"

# 2. The keys without the job's id.
check "the keyed stranger's attack runs" attack stranger --job-id 0123456789abcdef --key-file "$TMP/job.key"
check "its messages were answered with errors ($(field stranger errors))" test "$(field stranger errors)" -gt 0
check "none of which told it the job's id" test "$(field stranger replies-with-another-job-id)" = 0

# 3. A member gone rogue.
check "the rogue member's attack runs" attack rogue --job-id "$JOB_ID" --key-file "$TMP/job.key"
check "it flooded the servers ($(grep -o 'flood *sent [0-9]*' "$TMP/rogue.txt"))" \
  test "$(grep -o 'flood *sent [0-9]*' "$TMP/rogue.txt" | grep -o '[0-9]*$')" -gt 1000
still=0
for pid in "$SCHED" "${NODES[@]}"; do kill -0 "$pid" 2>/dev/null && still=$((still + 1)); done
check "the job was still training when the attacks ended ($still of 5 processes)" test "$still" = 5
# The summaries at the end of the run count the rejections by reason (the
# warnings are throttled).
check "rejection warnings are throttled (at most a few hundred lines)" \
  test "$(cat "$TMP"/server0.log | grep -c 'rejected a message')" -lt 400

codes=()
for pid in "$SCHED" "${NODES[@]}"; do
  for _ in $(seq 1 1500); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  wait "$pid"
  codes+=($?)
done
check "every process of the attacked job exits 0 (${codes[*]})" test "${codes[*]}" = "0 0 0 0 0"
check "it trained all $STEPS steps" grep -q "step $STEPS/" "$TMP/worker0.log"
for f in server0 server1 scheduler; do
  check "$f dropped messages in other ranks' names" grep -Eq "messages rejected \(.*[0-9]+ spoofed" "$TMP/$f.log"
  check "$f rejected other job ids and bad headers" grep -Eq "messages rejected \(.*[0-9]+ badHeader.*[0-9]+ badJob|messages rejected \(.*[0-9]+ badJob.*[0-9]+ badHeader" "$TMP/$f.log"
done
check "reference" timeout 300 env OMP_NUM_THREADS=1 "$PST" train "${JOB[@]}" --set cluster.in_process=sequential \
  --set train.output="$TMP/ref" >"$TMP/ref.log" 2>&1
check "the attacked job's weights equal an undisturbed one's, bit for bit" \
  "$DIFF" "$TMP/job/model.safetensors" "$TMP/ref/model.safetensors" 0 0

for f in outsider guesser stranger rogue; do sed "s/^/$f: /" "$TMP/$f.txt"; done
echo "attack_test: $passes checks passed, $failures failed"
if [[ $failures -ne 0 ]]; then
  for f in "$TMP"/*.log; do echo "== $f"; tail -n 6 "$f"; done
fi
[[ $failures -eq 0 ]]
