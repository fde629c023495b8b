#!/usr/bin/env bash
# What a run makes is kept, and what it says is true (real jobs on loopback):
#  1. the same job with train.threads = 1, 2 and 3 ends with the same
#     weights, bit for bit;
#  2. SIGINT during the final evaluation ends it, with the model written and
#     no test metrics claimed;
#  3. a fresh run into a folder that holds another run is refused, naming
#     --resume and --overwrite; --overwrite replaces the old checkpoints;
#     --resume appends to metrics.jsonl;
#  4. train.max_minutes stops a threads job and an mpirun job with a
#     checkpoint and the model;
#  5. data.test_max_examples bounds the final test pass;
#  6. colour and the progress bar only on a terminal of a single process:
#     none with NO_COLOR (colour) or --no-progress (bar), none under mpirun.
# Usage: lifecycle_test.sh PATH_TO_PST PATH_TO_MODEL_DIFF
set -uo pipefail
PST=$1
DIFF=$2
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/check.sh"
scratch_and_processes
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
unset OMP_NUM_THREADS NO_COLOR
MPIRUN=(mpirun --oversubscribe --bind-to none)

lacks() { ! grep -q -- "$2" "$1" || { echo "'$2' in $1"; return 1; }; }
JOB=(--config "$ROOT/configs/g2p-tiny.toml" --set train.eval_every=0 --set data.eval_max_examples=20)

# 1. Threads. Products of 1024 rows and more are cut into blocks.
for t in 1 2 3; do
  check "threads=$t" timeout 300 "$PST" train "${JOB[@]}" --set train.steps=4 --set train.test_at_end=false \
    --set data.batch_size=128 --set model.d_model=128 --set model.ffn_dim=256 --set model.dropout=0.1 \
    --set train.threads=$t --set train.output="$TMP/threads$t" >"$TMP/threads$t.log" 2>&1
done
for t in 2 3; do
  check "$t threads give the weights of 1, bit for bit" \
    "$DIFF" "$TMP/threads$t/model.safetensors" "$TMP/threads1/model.safetensors" 0 0
done

# 2. SIGINT once the model is written, during the final validation or test.
"$PST" train "${JOB[@]}" --set train.steps=3 --set data.eval_max_examples=0 \
  --set train.output="$TMP/int" >"$TMP/int.log" 2>&1 &
pid=$!
PIDS+=("$pid")
for _ in $(seq 1 600); do grep -q "saved .*model.safetensors" "$TMP/int.log" && break; sleep 0.1; done
check "the model is written before the final evaluation" contains "$TMP/int.log" "saved .*model.safetensors"
kill -INT "$pid"
timeout 120 tail --pid="$pid" -f /dev/null
wait "$pid"
rc=$?
check "a stop during the final evaluation exits 0 (got $rc)" test "$rc" = 0
check "and says the evaluation was stopped" contains "$TMP/int.log" "the final evaluation was stopped"
check "and claims no test metrics" lacks "$TMP/int.log" "test: loss"
check "the model it kept loads" timeout 120 "$PST" eval --model "$TMP/int/model.safetensors" --split valid \
  --max-examples 5 >"$TMP/int-eval.log" 2>&1

# 3. Another run's folder.
check "a run with checkpoints" timeout 300 "$PST" train "${JOB[@]}" --set train.steps=4 --set train.log_every=1 \
  --set train.test_at_end=false --set checkpoint.every_steps=1 --set checkpoint.keep=10 \
  --set train.output="$TMP/own" >"$TMP/own1.log" 2>&1
timeout 120 "$PST" train "${JOB[@]}" --set train.steps=2 --set train.output="$TMP/own" >"$TMP/own2.log" 2>&1
rc=$?
check "a fresh run into it is refused (exit $rc)" test "$rc" = 2
check "naming what it holds" contains "$TMP/own2.log" "holds another run (model.safetensors, metrics.jsonl, 4 checkpoints"
check "and the ways out" contains "$TMP/own2.log" "continue it with --resume latest, start over with --overwrite"
check "nothing was removed" test -d "$TMP/own/checkpoints/step-000000004"
check "the refusal holds under mpirun" timeout 120 bash -c '! "$@"' _ "${MPIRUN[@]}" -np 3 "$PST" train "${JOB[@]}" \
  --set train.steps=2 --set train.output="$TMP/own" >"$TMP/own3.log" 2>&1
check "saying why" contains "$TMP/own3.log" "holds another run"
check "--resume latest continues it" timeout 300 "$PST" train "${JOB[@]}" --set train.steps=6 --set train.log_every=1 \
  --set train.test_at_end=false --set checkpoint.every_steps=1 --set checkpoint.keep=10 \
  --set train.output="$TMP/own" --resume latest >"$TMP/own4.log" 2>&1
steps=$(grep '"kind":"train"' "$TMP/own/metrics.jsonl" | grep -o '"step":[0-9]*' | cut -d: -f2 | tr '\n' ' ')
check "metrics.jsonl holds both runs' steps ($steps)" test "$steps" = "1 2 3 4 5 6 "
check "--overwrite starts afresh" timeout 300 "$PST" train "${JOB[@]}" --set train.steps=2 --set train.test_at_end=false \
  --set checkpoint.every_steps=1 --set train.output="$TMP/own" --overwrite >"$TMP/own5.log" 2>&1
left=$(ls "$TMP/own/checkpoints" | tr '\n' ' ')
check "only the new run's checkpoints are left ($left)" test "$left" = "step-000000001 step-000000002 "

# 4. train.max_minutes (3 s) stops jobs of servers too.
check "threads job with max_minutes" timeout 300 "$PST" train "${JOB[@]}" --set train.steps=1000000 \
  --set train.max_minutes=0.05 --set cluster.workers=2 --set train.output="$TMP/mm" >"$TMP/mm.log" 2>&1
check "it says why it stopped" contains "$TMP/mm.log" "train.max_minutes = 0.05 reached"
check "with a checkpoint" bash -c "ls '$TMP'/mm/checkpoints/step-*/manifest.json"
check "and the model" test -s "$TMP/mm/model.safetensors"
check "mpirun job with max_minutes" timeout 300 "${MPIRUN[@]}" -np 3 "$PST" train "${JOB[@]}" --set train.steps=1000000 \
  --set train.max_minutes=0.05 --set train.output="$TMP/mmm" >"$TMP/mmm.log" 2>&1
check "with a checkpoint" bash -c "ls '$TMP'/mmm/checkpoints/step-*/manifest.json"
check "and the model" test -s "$TMP/mmm/model.safetensors"

# 5. data.test_max_examples.
check "test_max_examples" timeout 300 "$PST" train "${JOB[@]}" --set train.steps=2 --set data.test_max_examples=30 \
  --set train.output="$TMP/tm" >"$TMP/tm.log" 2>&1
check "the test pass decoded 30 words" grep -q '"kind":"test".*"words":30,' "$TMP/tm/metrics.jsonl"

# 6. A terminal (script gives the command a pseudo-terminal).
tty_run() {  # NAME ENV... -- ARGS...: runs pst train on a pty, output to $TMP/NAME.tty
  local name=$1
  shift
  local envs=()
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  local cmd
  printf -v cmd '%q ' env "${envs[@]}" "$@"
  timeout 300 script -qefc "$cmd" /dev/null >"$TMP/$name.tty" 2>&1 </dev/null
}
TINY=("$PST" train "${JOB[@]}" --set train.steps=30 --set train.log_every=10 --set train.test_at_end=false)
check "on a terminal" tty_run tty TERM=xterm -- "${TINY[@]}" --set train.output="$TMP/tty1"
check "levels are coloured" grep -q $'\e\\[' "$TMP/tty.tty"
check "a progress bar is drawn" grep -q $'\r\e\\[K\\[' "$TMP/tty.tty"
check "NO_COLOR" tty_run nocolor TERM=xterm NO_COLOR=1 -- "${TINY[@]}" --set train.output="$TMP/tty2"
check "NO_COLOR: no colour" bash -c "! grep -q $'\\e\\\\[3' '$TMP/nocolor.tty'"
check "--no-progress" tty_run noprog TERM=xterm -- "${TINY[@]}" --no-progress --set train.output="$TMP/tty3"
check "--no-progress: no bar" bash -c "! grep -q $'\\r\\e' '$TMP/noprog.tty'"
check "mpirun on a terminal" tty_run mpi TERM=xterm -- "${MPIRUN[@]}" -np 3 "${TINY[@]}" --set train.output="$TMP/tty4"
check "mpirun: no escape codes at all" bash -c "! grep -q $'\\e' '$TMP/mpi.tty'"
check "mpirun: the job ran" contains "$TMP/mpi.tty" "step 30/30"

echo "$passes passed, $failures failed"
[[ $failures -eq 0 ]]
