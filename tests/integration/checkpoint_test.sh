#!/usr/bin/env bash
# Checkpoints and resume, with real files (docs/design.md, Checkpoints):
#  1. 2 servers + 2 workers as threads: 40 steps equal 20 steps with a
#     checkpoint every 10, then --resume latest to 40, bit for bit (the
#     learning rate schedule and the data position included).
# 1a. pst checkpoint average: the mean of two checkpoints, against Python.
# 1b. The same as 1 with train.accumulate = 3; another K on resume is refused;
#     another train.blas resumes with a warning.
#  2. Another number of servers: a checkpoint of 2 servers resumed by 3, and
#     one of 3 resumed by 1, equal uninterrupted jobs of 3 and 1 servers (to
#     1e-6 of each tensor's scale: the global norm's partial sums differ).
#  3. Under mpirun (1 + 2 + 2): checkpoint, then resume under mpirun.
#  4. Damage: a flipped byte in the newest checkpoint makes resuming from it
#     fail naming the file, and `latest` falls back to the previous one (pst
#     checkpoint inspect lists the damage and exits 1 on it); a different
#     model config is refused.
#  5. kill -9 of a server of a job that checkpoints every step: the newest
#     complete checkpoint left behind verifies, and a job resumes from it.
#  6. Graceful stops (core/stop.h): SIGTERM to a threads job, SIGUSR1 to
#     mpirun, SIGINT to a one-process job without servers: each exits 0
#     after a step N with a complete checkpoint of N, and resuming from it
#     gives what an uninterrupted job of N + 3 steps gives. pst checkpoint
#     export of the stop's checkpoint is the job's model file, bit for bit.
#  7. A full disk (a 64 KiB tmpfs in a mount namespace of the job's own):
#     every checkpoint fails, training goes on to the same weights as a job
#     without checkpoints, no temp file is left, and the failures are named;
#     with checkpoint.on_failure = stop the job stops early and exits 1.
# Usage: checkpoint_test.sh PATH_TO_PST PATH_TO_MODEL_DIFF
set -uo pipefail
PST=$1
DIFF=$2
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d)
cleanup() {
  [[ -f $TMP/mpirun.pid ]] && kill -9 "$(cat "$TMP/mpirun.pid")" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
MPIRUN=(mpirun --oversubscribe --bind-to none)
source "$(dirname "$0")/check.sh"

JOB=(--config "$ROOT/configs/g2p-tiny.toml" --set train.eval_every=0 --set train.test_at_end=false
     --set data.batch_size=16 --set model.dropout=0.1 --set model.attention_dropout=0.1
     --set cluster.chunk_bytes=4096 --set cluster.workers=2 --set metrics.enabled=false)
train() {  # train NAME ARGS...: one job (threads) whose log goes to NAME.log
  local name=$1
  shift
  timeout 300 "$PST" train "${JOB[@]}" --set train.output="$TMP/$name" "$@" >"$TMP/$name.log" 2>&1
}

# 1. Bit for bit after a resume.
check "full 40 steps, 2 servers" train full2 --set cluster.servers=2 --set train.steps=40
check "20 steps with checkpoints" train part2 --set cluster.servers=2 --set train.steps=20 \
  --set checkpoint.every_steps=10 --set checkpoint.dir="$TMP/ck2"
check "two complete checkpoints" test -f "$TMP/ck2/step-000000010/manifest.json" -a -f "$TMP/ck2/step-000000020/manifest.json"
check "resume latest to 40" train resumed2 --set cluster.servers=2 --set train.steps=40 \
  --set checkpoint.dir="$TMP/ck2" --resume latest
check "it resumed at step 20" grep -q "resumed from $TMP/ck2/step-000000020 (step 20" "$TMP/resumed2.log"
check "resumed equals uninterrupted, bit for bit" "$DIFF" "$TMP/resumed2/model.safetensors" "$TMP/full2/model.safetensors" 0 0

# 1a. Averaging: pst checkpoint average of steps 10 and 20 is, tensor by
# tensor, the float64 mean of step 10's export and of the model file the
# 20-step job wrote itself, rounded to float32, computed here in Python.
# Naming the two directories gives the same file; a third checkpoint asked
# of a root of two, a directory named twice and a checkpoint of another
# model are refused, naming why.
check "average --last 2" "$PST" checkpoint average "$TMP/ck2" --last 2 --out "$TMP/avg.safetensors"
check "export step 10" "$PST" checkpoint export "$TMP/ck2/step-000000010" --out "$TMP/export10.safetensors"
check "the average is the mean of step 10's export and the 20-step job's model file" python3 - \
  "$TMP/avg.safetensors" "$TMP/export10.safetensors" "$TMP/part2/model.safetensors" <<'PY'
import array, json, struct, sys
def tensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for k, v in header.items():
        assert v["dtype"] == "F32", (k, v["dtype"])
        out[k] = array.array("f", raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
    return out
def f32(x):  # a float64 rounded to float32 (to nearest, ties to even)
    return struct.unpack("<f", struct.pack("<f", x))[0]
avg, a, b = (tensors(p) for p in sys.argv[1:])
assert avg.keys() == a.keys() == b.keys() and len(avg) > 10, sorted(avg)
moved = 0
for k in avg:
    want = [f32((x + y) / 2) for x, y in zip(a[k], b[k])]
    assert list(avg[k]) == want, k
    moved += int(a[k] != b[k])
assert moved > 10, moved  # the two steps' weights differ, so the mean is neither
PY
check "average of the two directories" "$PST" checkpoint average "$TMP/ck2/step-000000010" \
  "$TMP/ck2/step-000000020" --out "$TMP/avg2.safetensors"
check "equals --last 2, bit for bit" "$DIFF" "$TMP/avg2.safetensors" "$TMP/avg.safetensors" 0 0
check "pst eval takes the average" "$PST" eval --model "$TMP/avg.safetensors" --split valid --max-examples 20
"$PST" checkpoint average "$TMP/ck2" --last 3 --out "$TMP/no.safetensors" >"$TMP/avg3.log" 2>&1
check "--last 3 of 2 fails" test $? -ne 0 -a ! -e "$TMP/no.safetensors"
check "  naming the count" contains "$TMP/avg3.log" "holds 2 complete checkpoints; --last 3"
"$PST" checkpoint average "$TMP/ck2/step-000000010" "$TMP/ck2/step-000000010/" --out "$TMP/no.safetensors" \
  >"$TMP/twice.log" 2>&1
check "a directory named twice fails" test $? -ne 0 -a ! -e "$TMP/no.safetensors"
check "  naming it" contains "$TMP/twice.log" "step-000000010/ is named twice"
check "a checkpoint of another model" train relu --set cluster.servers=2 --set train.steps=2 \
  --set model.activation=relu --set checkpoint.every_steps=2 --set checkpoint.dir="$TMP/ck-relu"
"$PST" checkpoint average "$TMP/ck2/step-000000020" "$TMP/ck-relu/step-000000002" --out "$TMP/no.safetensors" \
  >"$TMP/other.log" 2>&1
check "is not averaged with it" test $? -ne 0 -a ! -e "$TMP/no.safetensors"
check "  naming the setting" contains "$TMP/other.log" "model.activation (\"gelu\" in .*, \"relu\" in"

# 1b. With gradient accumulation (2 workers, 3 micro-batches each, dropout):
# the data position of a checkpoint counts steps' batches, so a resumed job
# trains on the same micro-batches; resuming with another K is refused.
check "accumulate 3: 16 steps" train acc-full --set train.accumulate=3 --set train.steps=16
check "accumulate 3: 8 steps with a checkpoint" train acc-part --set train.accumulate=3 --set train.steps=8 \
  --set checkpoint.every_steps=8 --set checkpoint.dir="$TMP/ck-acc"
check "accumulate 3: resume to 16" train acc-resumed --set train.accumulate=3 --set train.steps=16 \
  --set checkpoint.dir="$TMP/ck-acc" --resume latest
check "accumulate 3: resumed equals uninterrupted, bit for bit" \
  "$DIFF" "$TMP/acc-resumed/model.safetensors" "$TMP/acc-full/model.safetensors" 0 0
train acc-other --set train.accumulate=2 --set train.steps=16 --set checkpoint.dir="$TMP/ck-acc" --resume latest
rc=$?
check "resuming with another train.accumulate fails (exit $rc)" test $rc = 2
check "and says which to use" grep -q "resume with train.accumulate = 3" "$TMP/acc-other.log"
# Another library of the products (train.blas) resumes, with a warning that
# the steps from there need not be the uninterrupted run's bits. (g2p-tiny's
# products are below the size oneDNN takes, so here they are the same;
# tests/model/onednn_test.cc checks oneDNN's products and where they run.)
check "resume with train.blas = onednn" train acc-onednn --set train.accumulate=3 --set train.steps=16 \
  --set checkpoint.dir="$TMP/ck-acc" --set train.blas=onednn --resume latest
check "  warns that the bits may differ" contains "$TMP/acc-onednn.log" \
  "train.blas = onednn and train.matmul = fp32 here, openblas and fp32 in the checkpoint's job"

# 2. Another number of servers.
check "full 40 steps, 3 servers" train full3 --set cluster.servers=3 --set train.steps=40
check "full 40 steps, 1 server" train full1 --set cluster.servers=1 --set train.steps=40
check "resume 2 -> 3 servers" train r23 --set cluster.servers=3 --set train.steps=40 --resume "$TMP/ck2/step-000000020"
check "2 -> 3 equals 3 servers throughout" "$DIFF" "$TMP/r23/model.safetensors" "$TMP/full3/model.safetensors" 0 1e-6
check "20 steps, 3 servers, checkpoints" train part3 --set cluster.servers=3 --set train.steps=20 \
  --set checkpoint.every_steps=20 --set checkpoint.dir="$TMP/ck3"
check "resume 3 -> 1 server" train r31 --set cluster.servers=1 --set train.steps=40 --set checkpoint.dir="$TMP/ck3" \
  --resume latest
check "3 -> 1 equals 1 server throughout" "$DIFF" "$TMP/r31/model.safetensors" "$TMP/full1/model.safetensors" 0 1e-6

# 3. mpirun.
check "mpirun: 20 steps with checkpoints" timeout 300 "${MPIRUN[@]}" -np 5 "$PST" train "${JOB[@]}" --servers 2 \
  --set train.steps=20 --set checkpoint.every_steps=20 --set checkpoint.dir="$TMP/ckm" \
  --set train.output="$TMP/mpi1" >"$TMP/mpi1.log" 2>&1
check "mpirun: resume to 40" timeout 300 "${MPIRUN[@]}" -np 5 "$PST" train "${JOB[@]}" --servers 2 \
  --set train.steps=40 --set checkpoint.dir="$TMP/ckm" --resume latest --set train.output="$TMP/mpi2" >"$TMP/mpi2.log" 2>&1
check "mpirun resumed equals uninterrupted" "$DIFF" "$TMP/mpi2/model.safetensors" "$TMP/full2/model.safetensors" 0 1e-6

# 4. Damage.
file="$TMP/ck2/step-000000020/server-1.safetensors"
python3 - "$file" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x10
open(p, "wb").write(bytes(b))
PY
train bad --set cluster.servers=2 --set train.steps=40 --resume "$TMP/ck2/step-000000020"
rc=$?
check "a flipped byte: resuming from it fails (exit $rc)" test $rc = 2
check "and the error names the file" grep -q "server-1.safetensors: checksum" "$TMP/bad.log"
"$PST" checkpoint inspect "$TMP/ck2" >"$TMP/inspect-root.txt" 2>&1
rc=$?
check "inspect of the root: exit 0 (the newest complete one verifies; exit $rc)" test $rc = 0
check "  lists the damaged step" grep -q "step-000000020.*server-1.safetensors: checksum" "$TMP/inspect-root.txt"
check "  and shows step 10" grep -q "^step  *10 (10 optimizer steps applied" "$TMP/inspect-root.txt"
"$PST" checkpoint inspect "$TMP/ck2/step-000000020" >"$TMP/inspect-bad.txt" 2>&1
rc=$?
check "inspect of the damaged one: exit 1 ($rc)" test $rc = 1
check "latest falls back to step 10" train fallback --set cluster.servers=2 --set train.steps=40 \
  --set checkpoint.dir="$TMP/ck2" --resume latest
check "it resumed at step 10" grep -q "resumed from $TMP/ck2/step-000000010 (step 10" "$TMP/fallback.log"
check "and still equals uninterrupted" "$DIFF" "$TMP/fallback/model.safetensors" "$TMP/full2/model.safetensors" 0 0
train other --set cluster.servers=2 --set train.steps=40 --set model.ffn_dim=48 --set checkpoint.dir="$TMP/ck2" \
  --resume latest
rc=$?
check "another model config is refused (exit $rc)" test $rc = 2
check "naming the difference" grep -q "a different model config" "$TMP/other.log"

# 5. kill -9 of a server while the job checkpoints every step.
timeout 300 "${MPIRUN[@]}" -np 5 "$PST" train "${JOB[@]}" --servers 2 --set train.steps=100000 --set checkpoint.every_steps=1 \
  --set checkpoint.keep=2 --set checkpoint.dir="$TMP/ckk" --set train.output="$TMP/killed" >"$TMP/killed.log" 2>&1 &
echo $! >"$TMP/mpirun.pid"
for _ in $(seq 1 150); do
  [[ $(ls -d "$TMP"/ckk/step-* 2>/dev/null | wc -l) -ge 2 ]] && break
  sleep 0.2
done
sleep 0.5
server=""  # rank 1, the first server (rank 0 is the scheduler)
for pid in $(pgrep -f "^$PST train .*train.output=$TMP/killed"); do
  grep -qz "^OMPI_COMM_WORLD_RANK=1$" "/proc/$pid/environ" 2>/dev/null && server=$pid
done
check "a server process to kill" test -n "$server"
[[ -n $server ]] && kill -9 "$server"
wait "$(cat "$TMP/mpirun.pid")" 2>/dev/null
rm -f "$TMP/mpirun.pid"
newest=$(ls "$TMP"/ckk/step-*/manifest.json 2>/dev/null | sort | tail -n 1)
check "a complete checkpoint survived the kill" test -n "$newest"
step=$(basename "$(dirname "$newest")")
step=$((10#${step#step-}))
check "a job resumes from what the kill left" train afterkill --set cluster.servers=2 --set checkpoint.dir="$TMP/ckk" \
  --resume latest --set train.steps=$((step + 3))
check "from step $step" grep -q "resumed from $TMP/ckk/step-0*$step (step $step" "$TMP/afterkill.log"

# 6. Graceful stops. stop_job NAME SIGNAL PATTERN: waits for step 10 in
# NAME.log, sends SIGNAL to the process whose command line matches PATTERN
# (pst itself or mpirun, not the timeout around it), and waits for the job
# started last in the background; the step it stopped after goes to STOPPED.
stop_job() {
  local name=$1 sig=$2 job=$! pid=""
  for _ in $(seq 1 300); do grep -q "step 10/" "$TMP/$name.log" 2>/dev/null && break; sleep 0.1; done
  pid=$(pgrep -f "$3" | head -n 1)
  check "$name: the process to signal" test -n "$pid"
  [[ -n $pid ]] && kill "-$sig" "$pid"
  wait "$job"
  check "$name: exits 0 after SIG$sig" test $? = 0
  STOPPED=$(grep -o "stopped after step [0-9]*" "$TMP/$name.log" | head -n 1)
  STOPPED=${STOPPED##* }
  check "$name: stops after a step ($STOPPED)" test -n "$STOPPED"
}
# resumes_exactly NAME TOLERANCE ARGS...: the checkpoint of step STOPPED
# under NAME/checkpoints resumed to STOPPED + 3 equals a job of that many
# steps (both run with ARGS).
resumes_exactly() {
  local name=$1 tol=$2
  shift 2
  local dir
  dir=$TMP/$name/checkpoints/$(printf 'step-%09d' "${STOPPED:-0}")
  check "$name: a complete checkpoint of step $STOPPED" test -f "$dir/manifest.json"
  check "$name: resumed to $((STOPPED + 3))" train "$name-resumed" "$@" --set train.steps=$((STOPPED + 3)) --resume "$dir"
  check "$name: uninterrupted to $((STOPPED + 3))" train "$name-full" "$@" --set train.steps=$((STOPPED + 3))
  check "$name: resumed equals uninterrupted" "$DIFF" "$TMP/$name-resumed/model.safetensors" \
    "$TMP/$name-full/model.safetensors" 0 "$tol"
}
LONG=(--set train.steps=100000 --set train.log_every=1 --set cluster.timeout_s=20)
train sigterm --set cluster.servers=2 "${LONG[@]}" &
stop_job sigterm TERM "^$PST train .*train.output=$TMP/sigterm( |\$)"
resumes_exactly sigterm 0 --set cluster.servers=2
# Export: the checkpoint's weights are the stopped job's model file.
check "export of the stop's checkpoint" "$PST" checkpoint export "$TMP/sigterm/checkpoints" --out "$TMP/export.safetensors"
check "equals the job's model.safetensors, bit for bit" "$DIFF" "$TMP/export.safetensors" \
  "$TMP/sigterm/model.safetensors" 0 0
"$PST" checkpoint inspect "$TMP/sigterm/checkpoints" >"$TMP/inspect.txt" 2>&1
check "inspect names the step, 2 verified files and the config" bash -c "grep -q '^step  *$STOPPED ' '$TMP/inspect.txt' &&
  test \$(grep -c 'server-[01].safetensors .* verified' '$TMP/inspect.txt') = 2 && grep -q '^\[model\]' '$TMP/inspect.txt'"
check "pst eval takes the export" "$PST" eval --model "$TMP/export.safetensors" --split valid --max-examples 20

timeout 120 "${MPIRUN[@]}" -np 5 "$PST" train "${JOB[@]}" --servers 2 "${LONG[@]}" --set train.output="$TMP/sigusr1" \
  >"$TMP/sigusr1.log" 2>&1 &
stop_job sigusr1 USR1 "^mpirun .*train.output=$TMP/sigusr1( |\$)"
resumes_exactly sigusr1 1e-6 --set cluster.servers=2

train sigint --set cluster.servers=1 --set cluster.workers=1 "${LONG[@]}" &
stop_job sigint INT "^$PST train .*train.output=$TMP/sigint( |\$)"
resumes_exactly sigint 1e-6 --set cluster.servers=1 --set cluster.workers=1

# 7. A full disk. full_disk NAME ARGS...: a threads job whose checkpoint
# directory is a 64 KiB tmpfs (a server file of g2p-tiny is larger); the
# files left there go to NAME.files.
full_disk() {
  local name=$1
  shift
  mkdir -p "$TMP/$name.disk"
  timeout 300 unshare -m --propagation private bash -c 'mount -t tmpfs -o size=64k tmpfs "$1" && shift &&
    "$@"; rc=$?; find "$0" -type f >"$0.files"; exit $rc' "$TMP/$name.disk" "$TMP/$name.disk" \
    "$PST" train "${JOB[@]}" --set train.output="$TMP/$name" --set checkpoint.dir="$TMP/$name.disk" "$@" \
    >"$TMP/$name.log" 2>&1
}
check "a job whose checkpoints do not fit goes on and exits 0" full_disk fulldisk --set cluster.servers=2 \
  --set train.steps=40 --set checkpoint.every_steps=10
check "the failures are named" grep -q "checkpoint of step 10 not completed (training goes on" "$TMP/fulldisk.log"
check "as no space left" grep -q "No space left on device" "$TMP/fulldisk.log"
check "it trained as if nothing happened" "$DIFF" "$TMP/fulldisk/model.safetensors" "$TMP/full2/model.safetensors" 0 0
check "no temp file is left ($(tr '\n' ' ' <"$TMP/fulldisk.disk.files"))" \
  bash -c "! grep -q '\.tmp\$' '$TMP/fulldisk.disk.files'"
check "no manifest was written" bash -c "! grep -q 'manifest.json' '$TMP/fulldisk.disk.files'"
full_disk fullstop --set cluster.servers=2 --set train.steps=40 --set checkpoint.every_steps=10 \
  --set checkpoint.on_failure=stop
rc=$?
check "with checkpoint.on_failure = stop the job exits 1 ($rc)" test "$rc" = 1
check "naming the policy" grep -q "because a checkpoint could not be completed (checkpoint.on_failure = stop" \
  "$TMP/fullstop.log"
check "before its 40 steps" bash -c "! grep -q 'step 40/' '$TMP/fullstop.log'"

echo "killed job: newest complete checkpoint at step $step; $(ls -d "$TMP"/ckk/step-* | wc -l) step directories left"
echo "checkpoint_test: $passes checks passed, $failures failed"
if [[ $failures -ne 0 ]]; then
  for f in "$TMP"/*.log; do echo "== $f"; tail -n 4 "$f"; done
fi
[[ $failures -eq 0 ]]
