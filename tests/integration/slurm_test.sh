#!/usr/bin/env bash
# deploy/slurm/pst.sbatch on a real Slurm (Debian's slurmctld, slurmd and
# munge) whose nodes are network namespaces of this machine: inside
# `unshare --net --mount --uts` (no packet leaves the machine; nobody else
# sees the namespaces, mounts or daemons), a controller on a bridge and
# three nodes, each its own namespace with its own slurmd and host name: a
# CPU node (partition cpu) and two GPU nodes (partition gpu, one GPU each as
# Slurm counts them; the machine has none, so the workers use the CPU).
#  1. PST_LAUNCH=mpi: the heterogeneous job (scheduler and server on the
#     CPU node, a worker on each GPU node) under srun --mpi=pmix, its tensors
#     over MPI (cluster.transport = mpi, Open MPI's TCP between the nodes),
#     every listening port within cluster.port_range. Mid-run, the file_sd file
#     names all four processes by their nodes' addresses and each serves
#     /metrics. Then the time-limit warning (USR1 to the batch shell): pst
#     stops after one common step with its checkpoint, the job requeues
#     itself, the requeued run resumes at that step and ends.
#  2. PST_LAUNCH=roles: the same job without MPI (--role auto from
#     SLURM_PROCID). scancel --signal=TERM mid-run leaves a checkpoint and a
#     completed job; scontrol requeue resumes it to the end, at the loss of
#     the first job (BSP: the same weights whatever the launch, transport
#     and stops).
# Slurm hanging (for 60 s while the test waits on the job, its output not
# growing and a node not answering slurmctld's pings, or the job running with
# no pst process left) makes the test print what the nodes show and run that
# part again on daemons started afresh, up to three tries; so does a requeued
# mpi run whose MPI start-up fails before any rank writes a line.
#   tests/integration/slurm_test.sh PST_BINARY
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PST=$(readlink -f "${1:?usage: slurm_test.sh PST_BINARY}")

if [[ -z ${SLURM_TEST_INSIDE:-} ]]; then
  for tool in ip unshare nsenter slurmctld slurmd munged sbatch scontrol; do
    command -v "$tool" >/dev/null || { echo "slurm_test: needs $tool (scripts/setup installs it)"; exit 1; }
  done
  # The whole test, daemons included, ends within 25 minutes (about 5 on a
  # quiet 2-core machine).
  exec timeout -k 10 1500 unshare --net --mount --uts env SLURM_TEST_INSIDE=1 bash "$0" "$@"
fi

source "$ROOT/tests/integration/check.sh"
TMP=$(mktemp -d)
NODES=(cpu1 gpu1 gpu2)
# node_pids: the processes in the nodes' namespaces; kill_node_processes
# ends them all (each was started by this test: slurmd, the job's steps).
node_pids() {
  local n
  for n in "${NODES[@]}"; do ip netns pids "$n" 2>/dev/null || true; done
}
kill_node_processes() {
  local p
  for p in $(node_pids); do kill -9 "$p" 2>/dev/null || true; done
}
cleanup() {
  local rc=$?
  if ((rc != 0 || failures > 0)); then
    for f in "$TMP"/*.out "$TMP"/slurmctld.log "$TMP"/slurmd-*.log; do
      [[ -f $f ]] && { echo "== $f"; tail -n 15 "$f"; }
    done
    # A process that died of a signal: Open MPI's report of it (the signal,
    # the address, the stack), which the tails above may not reach.
    for f in "$TMP"/*.out; do
      grep -q 'received signal' "$f" && { echo "== $f: a signal"; grep -B 5 -A 30 -m 2 'received signal' "$f"; }
    done
  fi
  # Every daemon and job process of the test lives in its namespaces or
  # was started here: the pid files and the namespaces name them all.
  for f in "$TMP"/*.pid "$TMP"/munge/pid; do [[ -f $f ]] && kill -9 "$(cat "$f")" 2>/dev/null; done
  kill_node_processes
  for ns in "${NODES[@]}"; do ip netns delete "$ns" 2>/dev/null || true; done
  [[ -n ${SLURM_TEST_KEEP:-} ]] && echo "slurm_test: kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT

mount --make-rprivate /
mount -t tmpfs tmpfs /run
hostname slurmctl
ip link set lo up
ip link add br0 type bridge
ip addr add 10.79.0.1/24 dev br0
ip link set br0 up
hosts="127.0.0.1 localhost
10.79.0.1 slurmctl"
declare -A ADDR
i=11
for n in "${NODES[@]}"; do
  bridged_namespace "$n" "10.79.0.$i" "v$n"
  ADDR[$n]=10.79.0.$i
  hosts+=$'\n'"10.79.0.$i $n"
  i=$((i + 1))
done
echo "$hosts" >"$TMP/hosts"
mount --bind "$TMP/hosts" /etc/hosts

# munge: one daemon and key for the cluster, its socket a file every
# namespace sees.
mkdir -m 700 "$TMP/munge"
head -c 1024 /dev/urandom >"$TMP/munge/munge.key"
chmod 400 "$TMP/munge/munge.key"
munged --force --key-file="$TMP/munge/munge.key" --socket="$TMP/munge/sock" --pid-file="$TMP/munge/pid" \
  --log-file="$TMP/munge/log" --seed-file="$TMP/munge/seed"

# Slurm: the nodes' spool and PMIx directories are their own (%n), as on
# machines of their own; processes are tracked by process group (the
# container has no cgroup hierarchy of its own to give slurmd). A requeued
# job waits out the credential lifetime before it starts again: 10 s here,
# not the default 120 (a launch's credential must reach its node within it).
# Only the backfill scheduler starts a heterogeneous job, and it runs every
# bf_interval seconds: every 30 by default, which was most of this test's
# time (each of its four runs waited up to 30 s to start); here every
# second (requeue_started below has the catch). start_slurm starts the
# controller and the nodes' daemons, each time (generation) with state,
# spool and job numbers of their own; stop_slurm ends them and every process
# of the nodes.
export SLURM_CONF=$TMP/slurm.conf
generation=0
start_slurm() {
  generation=$((generation + 1))
  local g=$generation
  mkdir -p "$TMP/state-$g"
  for n in "${NODES[@]}"; do mkdir -p "$TMP/spool-$g/$n" "$TMP/nodetmp/$n"; done
  cat >"$SLURM_CONF" <<CONF
ClusterName=pst-test
SlurmctldHost=slurmctl(10.79.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$TMP/munge/sock,cred_expire=10
CredType=cred/munge
StateSaveLocation=$TMP/state-$g
SlurmdSpoolDir=$TMP/spool-$g/%n
TmpFS=$TMP/nodetmp/%n
FirstJobId=$(((g - 1) * 100 + 1))
SlurmctldPidFile=$TMP/slurmctld.pid
SlurmdPidFile=$TMP/slurmd-%n.pid
SlurmctldLogFile=$TMP/slurmctld.log
SlurmdLogFile=$TMP/slurmd-%n.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=bf_interval=1
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=60
GresTypes=gpu
NodeName=cpu1 CPUs=2 State=UNKNOWN
NodeName=gpu[1-2] CPUs=2 Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=cpu1 Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
PartitionName=gpu Nodes=gpu[1-2] MaxTime=INFINITE State=UP OverSubscribe=FORCE
CONF
  slurmctld -f "$SLURM_CONF"
  for n in "${NODES[@]}"; do
    # nsenter keeps this mount namespace's /sys (ip netns exec would remount it).
    nsenter --net="/run/netns/$n" unshare --uts sh -c "hostname $n; exec slurmd -f $SLURM_CONF -N $n"
  done
  for _ in $(seq 1 150); do
    [[ $(sinfo -h -o '%t' -N | grep -c idle) == 3 ]] && break
    sleep 0.2
  done
  expect "3 nodes are idle" "$(sinfo -h -o '%t' -N | grep -c idle)" 3
}
stop_slurm() {
  local pid
  kill_node_processes
  pid=$(cat "$TMP/slurmctld.pid" 2>/dev/null || true)
  if [[ -n $pid ]]; then
    kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
}
# GPUs as Slurm counts them (no device files: the machine has no GPU).
printf 'AutoDetect=off\nNodeName=gpu[1-2] Name=gpu File=/dev/null\n' >"$TMP/gres.conf"
start_slurm

# The job: g2p-small's file with a small model (check.sh), short, logged
# often, a checkpoint every 30 steps.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_tcp_if_include=10.79.0.0/24 OMPI_MCA_oob_tcp_if_include=10.79.0.0/24
export PST="$PST" PST_CONFIG="$ROOT/configs/g2p-small.toml"
export "${SMALL_MODEL_ENV[@]}"
STEPS=400
export PST_TRAIN_STEPS=$STEPS PST_DATA_BATCH_SIZE=64 PST_SCHEDULE_WARMUP_STEPS=30 PST_TRAIN_LOG_EVERY=10
export PST_TRAIN_EVAL_EVERY=0 PST_TRAIN_TEST_AT_END=false PST_DATA_EVAL_MAX_EXAMPLES=50 PST_CHECKPOINT_EVERY_STEPS=30
export PST_CLUSTER_TIMEOUT_S=120 PST_TRAIN_THREADS=1 PST_METRICS_LINGER_S=0 PST_CLUSTER_PORT_RANGE=31000-31019
cd "$TMP"

# job_field JOB FIELD: a field of scontrol show job (of the first component
# of a heterogeneous job, which speaks for the job).
job_field() { scontrol show job "$1" -o 2>/dev/null | head -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p"; }
losses() { grep -ho '\[worker 0\] step *[0-9]*/[0-9]* *loss [0-9.]*' "$@" | awk '{print $NF}'; }
in_range() { (($1 >= ${PST_CLUSTER_PORT_RANGE%-*} && $1 <= ${PST_CLUSTER_PORT_RANGE#*-})); }

# Slurm itself can hang. In one CI run, after every process of a job had
# ended (each node's slurmd logged its step done), the batch step never
# ended, and slurmctld found the slurmd of two nodes not responding to its
# pings from then on; the job stayed RUNNING and the next one never started.
# Here, once, the same job's srun never exited after its tasks had (every
# slurmd logged the step done; srun waited on a lock, no node was marked
# not responding). slurm_hung says so once, for 60 s in a row, the job's
# output ($out) has not grown and either a node is marked not responding
# (sinfo's '*': under a CPU hog a ping can time out while the job trains
# on, hence the output's growth) or the job is RUNNING with no pst process
# on any node (its work has ended, Slurm has not ended it). The part of the
# test then running is run again on daemons started afresh (run_part), said
# in the log with what the nodes showed; a third hang fails the test.
hung_since="" hung_why="" out_size=""
# pst_alive: whether a pst process lives on any node.
pst_alive() {
  local pid
  for pid in $(node_pids); do
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) != "$PST" ]] || return 0
  done
  return 1
}
slurm_hung() {
  local size why="" down
  size=$(stat -c %s "$out" 2>/dev/null || echo 0)
  if [[ $size == "$out_size" ]]; then
    down=$(sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2 ~ /\*$/ {print $1}' | xargs)
    if [[ -n $down ]]; then
      why="not responding: $down"
    elif [[ $(job_field "$job" JobState) == RUNNING ]] && ! pst_alive; then
      why="job $job is RUNNING with no pst process on any node"
    fi
  fi
  if [[ -z $why ]]; then
    out_size=$size hung_since=""
    return 1
  fi
  hung_since=${hung_since:-$SECONDS} hung_why=$why
  ((SECONDS - hung_since >= 60))
}
# until_or_hung SECONDS COMMAND...: until COMMAND succeeds: 0; 1 after
# SECONDS; 2 when Slurm hangs (checked every 5 s).
until_or_hung() {
  local i limit=$1
  shift
  for ((i = 0; i < limit * 5; i++)); do
    "$@" && return 0
    ((i % 25 != 0)) || ! slurm_hung || return 2
    sleep 0.2
  done
  return 1
}
# job_ended JOB: the job is not pending, running, requeued or completing.
job_ended() {
  case $(job_field "$1" JobState) in PENDING | RUNNING | REQUEUED | COMPLETING | CONFIGURING | "") return 1 ;; esac
}
# wait_done JOB SECONDS; wait_out FILE PATTERN SECONDS: until the job has
# ended; until PATTERN is in FILE.
wait_done() { until_or_hung "$2" job_ended "$1"; }
wait_out() { until_or_hung "$3" grep -qs -- "$2" "$1"; }
# The backfill scheduler runs only when a job, node, partition or
# reservation has changed since its last pass. A requeued job becomes
# eligible when its credentials have expired, which is no change: on this
# quiet cluster the next one came minutes later (a node ping), where on a
# busy one any job's event brings it within bf_interval. requeue_started JOB:
# once the job is requeued (restarted at least once, its last run ended) and
# eligible, a change (its comment) for the scheduler to see, unless it has
# started already; returns as until_or_hung.
requeued() {
  [[ $(job_field "$1" Restarts) -ge 1 ]] || return 1
  case $(job_field "$1" JobState) in REQUEUED | COMPLETING | "") return 1 ;; esac
}
eligible_or_started() {
  local t
  [[ $(job_field "$1" JobState) == PENDING ]] || return 0
  t=$(date -d "$(job_field "$1" EligibleTime)" +%s 2>/dev/null) && (($(date +%s) > t))
}
requeue_started() {
  until_or_hung 120 requeued "$1" || return $?
  until_or_hung 120 eligible_or_started "$1" || return $?
  [[ $(job_field "$1" JobState) != PENDING ]] ||
    scontrol update JobId="$1" Comment="eligible since $(job_field "$1" EligibleTime)"
}
# hung_now: what the nodes showed when Slurm hung; the part
# returns after it.
hung=0
hung_now() {
  hung=1
  echo "slurm_test: Slurm hung ($hung_why, for 60 s, the job's output not growing):"
  sinfo -N -o '%N %T %E'
  scontrol show job "$job" -o | cut -c 1-300
  local n pids
  for n in "${NODES[@]}"; do
    echo "== $n: slurmd's port $(timeout 5 bash -c "exec 3<>/dev/tcp/${ADDR[$n]}/6818" 2>/dev/null && echo accepts || echo 'does not accept') a connection from the controller"
    pids=$(ip netns pids "$n" | paste -sd, -)
    [[ -z $pids ]] || ps -L -o pid,tid,stat,wchan:24,etime,args -p "$pids" | cut -c 1-160
    nsenter --net="/run/netns/$n" ss -tan | grep -v LISTEN | head -n 20
    nsenter --net="/run/netns/$n" ip -s link show eth0
    tail -n 6 "$TMP/slurmd-$n.log"
  done
  tail -n 10 "$TMP/slurmctld.log"
}
# run_part PART: runs the function PART, and again (up to three tries in
# all) on Slurm's daemons started afresh when it returned because Slurm hung
# or a requeued run's MPI start-up failed (a failed try's checks are not
# counted). One CI run (2026-12-07) saw the requeued mpi run's srun hang
# after its tasks had ended on two tries in a row; the same build passed
# before and after.
run_part() {
  local p=$passes f=$failures try
  for try in 1 2 3; do
    if ((try > 1)); then
      echo "slurm_test: $1 runs again (try $try of 3) on Slurm's daemons started afresh"
      stop_slurm
      passes=$p failures=$f
      start_slurm
    fi
    hung=0 hung_since="" out_size=""
    "$1"
    ((hung)) || return 0
  done
  echo "slurm_test: Slurm hung, or MPI's start-up failed, three times"
  exit 1
}

# --- 1: mpi, the time-limit warning, a requeue of its own -------------------
# Open MPI 4.1.4 (Debian 12) can fail to wire its TCP connections between the
# nodes when a CPU hog starves them ("failed to TCP connect to a peer",
# reported with a stale EINPROGRESS; later 4.1 releases report the real
# error), before pst has taken a step. That job is cancelled and a new one
# submitted, once, said in the log; everything checked is of the job that ran.
wireup='Open MPI failed to TCP connect'
part_mpi() {
  local attempt
  for attempt in 1 2; do
    export PST_TRAIN_OUTPUT=$TMP/run-mpi-$generation-$attempt
    job=$(PST_LAUNCH=mpi PST_CLUSTER_TRANSPORT=mpi sbatch --parsable "$ROOT/deploy/slurm/pst.sbatch")
    out=$TMP/pst-$job.out
    wait_out "$out" "step *[3-9]0/$STEPS\\|$wireup" 600 || {
      (($? != 2)) || { hung_now || true; return 0; }
      echo "slurm_test: the mpi job did not reach step 30"
      exit 1
    }
    grep -q "step *[3-9]0/$STEPS" "$out" && break
    ((attempt == 1)) || { echo "slurm_test: Open MPI's wireup failed twice"; exit 1; }
    echo "slurm_test: Open MPI's TCP wireup failed before the first step; the job is cancelled and submitted again:"
    grep -A 8 "$wireup" "$out" | head -n 9
    scancel "$job"
    wait_done "$job" 120 || (($? != 2)) || { hung_now || true; return 0; }
  done
  expect "the job is heterogeneous: 2 components" "$(scontrol show job "$job" | grep -c '^JobId=')" 2
  for r in 0 1; do expect "rank $r runs on the CPU node" "$(grep -c "rank $r of 4 on host cpu1" "$out")" 1; done
  expect "the workers run on the GPU nodes" "$(grep -o 'rank [23] of 4 on host gpu[12]' "$out" | sed 's/.*host //' | sort -u | xargs)" "gpu1 gpu2"
  expect "pushes and pulls go over MPI" "$(grep -c 'server 0: pushes and pulls over MPI' "$out")" 1
  server_port=$(grep -o 'server 0 at tcp://10\.79\.0\.11:[0-9]*' "$out" | head -1 | sed 's/.*://')
  check "the server listens within cluster.port_range ($server_port)" in_range "${server_port:-0}"
  # Prometheus's view: the file_sd file names every process by its node's
  # address, and each serves /metrics.
  sd=$PST_TRAIN_OUTPUT/prometheus-targets.json
  wait_for "$sd" "${ADDR[gpu2]}" 60 || true
  mapfile -t targets < <(grep -o '"10\.79\.0\.[0-9]*:[0-9]*"' "$sd" | tr -d '"')
  expect "file_sd names 4 processes" "${#targets[@]}" 4
  expect "on the nodes' addresses" "$(printf '%s\n' "${targets[@]}" | cut -d: -f1 | sort | uniq -c | tr -s ' ' | xargs)" \
    "2 10.79.0.11 1 10.79.0.12 1 10.79.0.13"
  for t in "${targets[@]}"; do
    check "the metrics port of $t is within cluster.port_range" in_range "${t##*:}"
    body=$(timeout 10 bash -c "exec 3<>/dev/tcp/${t%:*}/${t##*:}; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3" || true)
    check "$t serves pst_build_info" grep -q '^pst_build_info{' <<<"$body"
    check "$t serves process_resident_memory_bytes" grep -q '^process_resident_memory_bytes ' <<<"$body"
  done
  # 180 s before its time limit Slurm signals the batch shell (--signal=B:USR1@180).
  scancel --batch --signal=USR1 "$job"
  wait_out "$out" "srun exited" 120 || (($? != 2)) || { hung_now || true; return 0; }
  requeue_started "$job" || (($? != 2)) || { hung_now || true; return 0; }
  wait_done "$job" 700 || (($? != 2)) || { hung_now || true; return 0; }
  # The requeued run's MPI start-up can fail before any rank runs pst's
  # code: a rank died of a segmentation fault as PMIx and Open MPI started
  # it (Open MPI's TCP wireup to it failing beside it). That is Slurm's and
  # MPI's, not pst's (no rank wrote a line): the part runs again.
  if [[ $(job_field "$job" JobState) == FAILED ]] && ! sed -n '/(restart 1)/,$p' "$out" | grep -q 'rank [0-9] of 4 on host'; then
    echo "slurm_test: the requeued run's MPI start-up failed before pst ran on any rank:"
    sed -n '/(restart 1)/,$p' "$out" | head -n 12
    hung=1
    return 0
  fi
  expect "the job completes" "$(job_field "$job" JobState)" COMPLETED
  expect "after one requeue" "$(job_field "$job" Restarts)" 1
  stopped=$(grep -ho 'stopped after step [0-9]*' "$out" | head -1 | grep -o '[0-9]*$' || echo none)
  expect "both workers stopped after the same step" "$(grep -o 'stopped after step [0-9]*' "$out" | sort -u | wc -l)" 1
  expect "with a checkpoint of it" "$(grep -c "resumed from .*(step $stopped," "$out")" 1
  expect "the requeued run says so" "$(grep -c 'pst.sbatch: job .* (restart 1)' "$out")" 1
  expect "it ends at step $STEPS" "$(grep -c "\[worker 0\] step *$STEPS/$STEPS" "$out")" 1
  expect "the model is written" "$(test -s "$PST_TRAIN_OUTPUT/model.safetensors" && echo yes)" yes
  mapfile -t L < <(losses "$out")
  echo "slurm_test: mpi: stopped after step $stopped; loss ${L[0]} at step 10, ${L[-1]} at step $STEPS"
  expect "the loss falls by more than 0.5" "$(awk -v a="${L[0]}" -v b="${L[-1]}" 'BEGIN {print (b < a - 0.5)}')" 1
}
run_part part_mpi

# --- 2: roles, scancel --signal=TERM, scontrol requeue -------------------------
part_roles() {
  export PST_TRAIN_OUTPUT=$TMP/run-roles-$generation
  job=$(PST_LAUNCH=roles sbatch --parsable "$ROOT/deploy/slurm/pst.sbatch")
  out=$TMP/pst-$job.out
  wait_out "$out" "step *[3-9]0/$STEPS" 600 || {
    (($? != 2)) || { hung_now || true; return 0; }
    echo "slurm_test: the roles job did not reach step 30"
    exit 1
  }
  expect "each task took its role from SLURM_PROCID" \
    "$(grep -o -- '--role auto: [a-z]* (SLURM_PROCID [0-9]' "$out" | sort | uniq -c | awk '{print $4}' | xargs)" \
    "scheduler server worker worker"
  scancel --signal=TERM "$job"
  wait_done "$job" 400 || (($? != 2)) || { hung_now || true; return 0; }
  expect "scancel --signal=TERM: the job completes" "$(job_field "$job" JobState)" COMPLETED
  stopped=$(grep -ho 'stopped after step [0-9]*' "$out" | head -1 | grep -o '[0-9]*$' || echo none)
  ck=$(printf 'step-%09d' "$stopped")
  expect "it leaves a checkpoint of the stop step" "$(test -f "$PST_TRAIN_OUTPUT/checkpoints/$ck/manifest.json" && echo yes)" yes
  expect "the job's key file is removed" "$(test -e "$TMP/.pst-$job.key" && echo left || echo removed)" removed
  scontrol requeue "$job"
  requeue_started "$job" || (($? != 2)) || { hung_now || true; return 0; }
  wait_out "$out" 'pst.sbatch: job .* (restart 1)' 120 || (($? != 2)) || { hung_now || true; return 0; }
  wait_done "$job" 700 || (($? != 2)) || { hung_now || true; return 0; }
  expect "requeued, it completes" "$(job_field "$job" JobState)" COMPLETED
  expect "resuming at the stop step" "$(grep -c "resumed from .*(step $stopped," "$out")" 1
  expect "and ends at step $STEPS" "$(grep -c "\[worker 0\] step *$STEPS/$STEPS" "$out")" 1
  mapfile -t R < <(losses "$out")
  expect "the last loss equals the mpi job's (tensors over MPI there, ZeroMQ here)" "${R[-1]}" "${L[-1]}"
  echo "slurm_test: roles: stopped after step $stopped, resumed, ended"
}
run_part part_roles
echo "slurm_test: $passes checks passed, $failures failed"
[[ $failures -eq 0 ]]
