#!/usr/bin/env bash
# Jobs under mpirun, as real processes on this machine (loopback only):
#  1. BSP equivalence: for S, W in {1, 2, 3}, `mpirun -np 1+S+W pst train`
#     (1 scheduler, S servers, W workers) gives the weights of one thread
#     that plays the W workers in turn (`cluster.in_process = "sequential"`,
#     the concatenated batch of every step), with dropout on and tensors cut
#     into chunks over the servers; so does the job as threads of one
#     process (S = 2, W = 3), and so does S = 2, W = 3 under mpirun with
#     overlap on (pushes per layer, pulls in layer order, servers streaming
#     every 1 KiB of updated weights).
#  2. ASP and SSP(1) jobs finish, and their loss falls.
#  Both over each transport: ZeroMQ (cluster.transport = zmq) and MPI
#  point-to-point messages (mpi).
#  3. kill -9 of a worker or of a server mid-run: the job ends non-zero well
#     within its deadline, and the output names the dead rank (a server with
#     tensors over MPI too).
# Usage: mpi_test.sh PATH_TO_PST PATH_TO_MODEL_DIFF
set -uo pipefail
PST=$1
DIFF=$2
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d)
STARTED=()
cleanup() {
  for pid in "${STARTED[@]}"; do kill -9 "$pid" 2>/dev/null; done
  for f in "$TMP"/pid.*; do [[ -f $f ]] && kill -9 "$(cat "$f")" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# The references compute with 1 thread, the jobs with as many as each process
# resolves (train.threads = 0): results do not depend on the thread count.
unset OMP_NUM_THREADS
MPIRUN=(mpirun --oversubscribe --bind-to none)
source "$(dirname "$0")/check.sh"

JOB=(--config "$ROOT/configs/g2p-tiny.toml" --set train.steps=5 --set train.eval_every=0
     --set train.test_at_end=false --set data.batch_size=16 --set model.dropout=0.1
     --set model.attention_dropout=0.1 --set cluster.chunk_bytes=4096 --set cluster.timeout_s=60)

# 1. Equivalence.
for W in 1 2 3; do
  check "reference W=$W" timeout 300 env OMP_NUM_THREADS=1 "$PST" train "${JOB[@]}" --set cluster.workers=$W \
    --set cluster.in_process=sequential --set train.output="$TMP/ref$W" >"$TMP/ref$W.log" 2>&1
done
# The same job as threads of one process (the default without mpirun).
check "threads S=2 W=3" timeout 300 "$PST" train "${JOB[@]}" --set cluster.servers=2 --set cluster.workers=3 \
  --set train.output="$TMP/threads" >"$TMP/threads.log" 2>&1
check "threads S=2 W=3 equal one thread playing the workers, bit for bit" \
  "$DIFF" "$TMP/threads/model.safetensors" "$TMP/ref3/model.safetensors" 0 0
for T in zmq mpi; do
  for S in 1 2 3; do
    for W in 1 2 3; do
      out="$TMP/$T-s${S}w${W}"
      if timeout 300 "${MPIRUN[@]}" -np $((1 + S + W)) "$PST" train "${JOB[@]}" --set cluster.servers=$S \
           --set cluster.transport=$T --set train.output="$out" >"$out.log" 2>&1; then
        passes=$((passes + 1))
        check "$T: S=$S W=$W equals one process on the concatenated batches, bit for bit" \
          "$DIFF" "$out/model.safetensors" "$TMP/ref$W/model.safetensors" 0 0
      else
        echo "FAIL: mpirun S=$S W=$W over $T"
        tail -20 "$out.log"
        failures=$((failures + 1))
      fi
    done
  done

  check "$T: mpirun S=2 W=3 with overlap on" timeout 300 "${MPIRUN[@]}" -np 6 "$PST" train "${JOB[@]}" \
    --set cluster.servers=2 --set cluster.overlap=on --set cluster.stream_bytes=1024 --set cluster.transport=$T \
    --set train.output="$TMP/$T-overlap" >"$TMP/$T-overlap.log" 2>&1
  check "$T: overlap on equals one process on the concatenated batches, bit for bit" \
    "$DIFF" "$TMP/$T-overlap/model.safetensors" "$TMP/ref3/model.safetensors" 0 0
  # Security is on by default: rank 0 made the job's secret at launch and
  # every rank proves it (security.mode = secret, security.key_file empty).
  check "$T: every rank of the mpirun job has the job secret on" \
    test "$(grep -c 'job secret on' "$TMP/$T-overlap.log")" = 6

  # 2. ASP and SSP jobs run to their end and the loss falls.
  for mode in asp ssp; do
    log="$TMP/$T-$mode.log"
    check "$T: $mode job" timeout 300 "${MPIRUN[@]}" -np 5 "$PST" train "${JOB[@]}" --set train.steps=60 \
      --set train.log_every=10 --set cluster.servers=2 --set cluster.consistency=$mode --set cluster.staleness=1 \
      --set cluster.transport=$T --set train.output="$TMP/$T-$mode" >"$log" 2>&1
    first=$(grep -o '\[worker 0\] step 10/60  loss [0-9.]*' "$log" | awk '{print $NF}')
    last=$(grep -o '\[worker 0\] step 60/60  loss [0-9.]*' "$log" | awk '{print $NF}')
    check "$T: $mode loss falls ($first -> $last)" \
      awk -v a="$first" -v b="$last" 'BEGIN {exit !(a != "" && b != "" && b < 0.8 * a)}'
  done
done

# 3. kill -9 of one rank: worker 1 (rank 3 of 1 + 1 + 2) or server 0 (rank 1).
kill_rank() {
  local rank=$1 what=$2 transport=${3:-zmq}
  local log="$TMP/kill$rank$transport.log"
  rm -f "$TMP"/pid.*
  "${MPIRUN[@]}" -np 4 bash -c 'echo $$ > "'"$TMP"'/pid.$OMPI_COMM_WORLD_RANK"; exec "$0" "$@"' \
    "$PST" train "${JOB[@]}" --set train.steps=1000000 --set train.log_every=20 --set cluster.timeout_s=10 \
    --set cluster.transport="$transport" --set train.output="$TMP/kill$rank$transport" >"$log" 2>&1 &
  local mpirun_pid=$!
  STARTED+=("$mpirun_pid")
  for _ in $(seq 1 120); do
    grep -q "step 40/" "$log" && break
    sleep 0.5
  done
  if ! grep -q "step 40/" "$log"; then
    echo "the job did not reach step 40:"
    tail -5 "$log"
    return 1
  fi
  kill -9 "$(cat "$TMP/pid.$rank")"
  local start=$SECONDS
  while kill -0 "$mpirun_pid" 2>/dev/null && ((SECONDS - start < 60)); do sleep 0.2; done
  if kill -0 "$mpirun_pid" 2>/dev/null; then
    echo "the job still runs 60 s after $what was killed"
    return 1
  fi
  wait "$mpirun_pid"
  local rc=$?
  echo "killed $what: mpirun exited with $rc after $((SECONDS - start)) s"
  [[ $rc -ne 0 ]] || { echo "mpirun exited 0"; return 1; }
  grep -q "rank $rank" "$log" || { echo "the output does not name rank $rank:"; tail -8 "$log"; return 1; }
}
check "kill -9 of a worker ends the job, naming it" kill_rank 3 "worker 1"
check "kill -9 of a server ends the job, naming it" kill_rank 1 "server 0"
check "kill -9 of a server ends a job over MPI, naming it" kill_rank 1 "server 0" mpi

echo "$passes passed, $failures failed"
[[ $failures -eq 0 ]]
