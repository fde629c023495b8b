#!/usr/bin/env bash
# Several hosts on one machine, standing in for the containers of
# docker/compose.yaml (no Docker engine exists here). Inside `unshare --net
# --mount --uts` (no packet leaves the machine; nobody else sees the
# namespaces or mounts), one network namespace per container, each with its
# own address on a bridge and the compose service names in /etc/hosts.
#  1. The compose stack exactly as `docker-compose config` resolves it: every
#     pst container's command and environment (the image's ENV, then the
#     service's), its secret at /run/secrets, its volume at /opt/pst/runs;
#     only the model's size, the number of steps and the logging are the
#     test's own. Roles start without MPI, with CURVE on. /healthz is 503
#     before the rendezvous and 200 after it; the scheduler's file_sd file
#     names every process by its own address.
#  2. The stop test: SIGTERM to every process mid-run (docker compose stop).
#     All exit 0 after one common step N, with a checkpoint of N; the same
#     containers started again (checkpoint.resume = auto) resume at N and
#     finish. The loss falls over the job.
#  3. mpirun across the namespaces: a hostfile of distinct host names (one
#     UTS namespace each), Open MPI's launcher reaching them through an
#     rsh agent that enters the namespace, TCP limited to the bridge's
#     subnet; cluster.host = auto binds each process to its own address;
#     CURVE keys made at launch and handed out over MPI.
#   tests/integration/netns_test.sh PST_BINARY
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PST=$(readlink -f "${1:?usage: netns_test.sh PST_BINARY}")

if [[ -z ${NETNS_TEST_INSIDE:-} ]]; then
  for tool in ip unshare docker-compose mpirun python3; do
    command -v "$tool" >/dev/null || { echo "netns_test: needs $tool (scripts/setup installs it)"; exit 1; }
  done
  # The whole test, namespaces included, ends within 15 minutes.
  exec timeout -k 10 900 unshare --net --mount --uts env NETNS_TEST_INSIDE=1 bash "$0" "$@"
fi

source "$ROOT/tests/integration/check.sh"
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  local rc=$?
  if ((rc != 0)); then
    for f in "$TMP"/run*/*.log "$TMP"/*.log; do [[ -f $f ]] && { echo "== $f"; tail -n 8 "$f"; }; done
  fi
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  remove_namespaces "$TMP"
  rm -rf "$TMP"
}
trap cleanup EXIT

# The image's file system (/opt/pst), private mounts, and the bridge br0.
image_root "$TMP" "$ROOT/configs"
mkdir -p /run/secrets /opt/pst/runs /opt/pst/targets
hostname launcher

# The compose stack, resolved by docker-compose itself.
mkdir -p "$TMP/docker-secrets"
"$PST" keygen --out /run/secrets/pst_curve_key >/dev/null
(cd "$ROOT/docker" && docker-compose -f compose.yaml config) >"$TMP/resolved.yml"
# roles [--env|--argv NAME]: the stack's pst containers (tests/docker/compose_roles.py).
roles() { python3 "$ROOT/tests/docker/compose_roles.py" "$TMP/resolved.yml" "$ROOT/docker/Dockerfile" "$@"; }
roles >"$TMP/roles.tsv"
echo "netns_test: containers of docker/compose.yaml:"
cut -f1,2 "$TMP/roles.tsv" | sed 's/^/  /'
expect "compose gives a scheduler, 2 servers and 2 workers" \
  "$(cut -f2 "$TMP/roles.tsv" | sort | uniq -c | tr -s ' ' | xargs)" "1 scheduler 2 server 2 worker"

# One namespace per container, on the bridge, named as compose names it.
declare -A ADDR
i=2
hosts="127.0.0.1 localhost
10.77.0.1 launcher"
while IFS=$'\t' read -r name role; do
  bridged_namespace "$name" "10.77.0.$i" "v$i"
  ADDR[$name]=10.77.0.$i
  hosts+=$'\n'"10.77.0.$i $name"
  i=$((i + 1))
done <"$TMP/roles.tsv"
echo "$hosts" >"$TMP/hosts"
mount --bind "$TMP/hosts" /etc/hosts

# What the test changes of the stack: a short job of small batches (with a short warmup, so
# that the loss falls within it) of a small model (check.sh), logged often.
STEPS=400
TEST_ENV=("${SMALL_MODEL_ENV[@]}" PST_TRAIN_STEPS=$STEPS PST_DATA_BATCH_SIZE=64 PST_SCHEDULE_WARMUP_STEPS=50 PST_TRAIN_LOG_EVERY=10 PST_TRAIN_EVAL_EVERY=0 PST_TRAIN_TEST_AT_END=false
          PST_DATA_EVAL_MAX_EXAMPLES=50 PST_CHECKPOINT_EVERY_STEPS=50 PST_CLUSTER_TIMEOUT_S=120
          PST_TRAIN_THREADS=1 PST_METRICS_LINGER_S=0)

# start NAME LOG: the container NAME's process in its namespace, as compose
# runs it (env -i: the container's environment and nothing else).
start() {
  start_in_namespace "$1" "$2" <(roles --env "$1") <(roles --argv "$1")
  PIDS+=("${STARTED[$1]}")
}
NAMES=($(cut -f1 "$TMP/roles.tsv"))
WORKERS=($(awk -F'\t' '$2 == "worker" {print $1}' "$TMP/roles.tsv"))
SERVERS=($(awk -F'\t' '$2 == "server" {print $1}' "$TMP/roles.tsv"))
health() { "$PST" health "${ADDR[$1]}:9100" --timeout 2 2>&1 || true; }
declare -A RC STARTED

# --- 1 + 2: the compose stack, stopped mid-run and started again ---------
mkdir -p "$TMP/run1" "$TMP/run2"
start scheduler "$TMP/run1/scheduler.log"
for s in "${SERVERS[@]}"; do start "$s" "$TMP/run1/$s.log"; done
wait_for "$TMP/run1/${SERVERS[0]}.log" "metrics at" 60 || true
sleep 1
h=$(health "${SERVERS[0]}")
expect "/healthz before the rendezvous is 503" "$(echo "$h" | grep -c 'HTTP 503')" 1
# A process without the job's key pair cannot join: a worker with the
# job's settings but another key file, from the launcher's address, gets no
# answer (its CURVE handshake fails; had it registered, it would hold a
# worker's place and the job below could not start). timeout --foreground
# signals the process once: without it, timeout signals its process group
# too, and a second SIGTERM ends pst at once, before it can say why.
"$PST" keygen --out "$TMP/other.key" >/dev/null
mapfile -t ienv < <(roles --env "${WORKERS[0]}")
set +e
(cd /opt/pst && env -i PATH=/usr/bin:/bin "${ienv[@]}" "${TEST_ENV[@]}" PST_SECURITY_KEY_FILE="$TMP/other.key" \
   PST_METRICS_ENABLED=false timeout --foreground 8 "$PST" train --config configs/g2p-small.toml --role worker \
   --scheduler tcp://scheduler:5555) >"$TMP/intruder.log" 2>&1
irc=$?
set -e
expect "a worker with another key pair gets no answer" "$irc" 124
expect "it never got the node table" "$(grep -c 'stopped by signal 15 while waiting for the node table' "$TMP/intruder.log")" 1
for w in "${WORKERS[@]}"; do start "$w" "$TMP/run1/$w.log"; done
for _ in $(seq 1 300); do
  [[ $(health "${WORKERS[0]}") == healthy* && $(health scheduler) == healthy* ]] && break
  sleep 0.2
done
for n in "${NAMES[@]}"; do
  expect "/healthz of $n after the rendezvous" "$(health "$n" | cut -d' ' -f1)" healthy
done
for s in "${SERVERS[@]}"; do
  expect "$s binds its own address" "$(grep -c "at tcp://${ADDR[$s]}:" "$TMP/run1/$s.log")" 1
done
expect "CURVE is on in every process" "$(cat "$TMP"/run1/*.log | grep -c 'CURVE on')" "${#NAMES[@]}"
wait_for /opt/pst/targets/pst.json "${ADDR[${WORKERS[1]}]}" 60 || true
for n in "${NAMES[@]}"; do
  expect "file_sd names $n by its address" "$(grep -c "\"${ADDR[$n]}:9100\"" /opt/pst/targets/pst.json)" 1
done
# Stop mid-run: SIGTERM to every process at once, as docker compose stop.
wait_for "$TMP/run1/${WORKERS[0]}.log" "step *[6-9]0/$STEPS" 300 || { tail -n 5 "$TMP"/run1/*.log; exit 1; }
stop_all "$TMP/run1/${WORKERS[0]}.log" "$TMP/run1/${WORKERS[1]}.log"
stopped=$STOPPED
ck=$(ls /opt/pst/runs/job/checkpoints | tail -1)
expect "the newest checkpoint is of the stop step" "$ck" "$(printf 'step-%09d' "$stopped")"
expect "its manifest is there" "$(test -f "/opt/pst/runs/job/checkpoints/$ck/manifest.json" && echo yes)" yes
expect "pst checkpoint inspect verifies it" \
  "$("$PST" checkpoint inspect "/opt/pst/runs/job/checkpoints/$ck" >/dev/null 2>&1 && echo ok)" ok

# docker compose up again: the same containers, resume = auto.
for n in "${NAMES[@]}"; do start "$n" "$TMP/run2/$n.log"; done
wait_started 400
for n in "${NAMES[@]}"; do expect "$n exits 0 after the restart" "${RC[$n]}" 0; done
expect "server 0 resumed at the stop step" \
  "$(grep -c "resumed from .*(step $stopped," "$TMP/run2/${SERVERS[0]}.log")" 1
first=$(grep -ho "step *[0-9]*/$STEPS" "$TMP/run2/${WORKERS[0]}.log" | head -1 | grep -o '[0-9]*/' | tr -d /)
expect "the first step logged after the restart follows the stop step" \
  "$((first > stopped && first <= stopped + 10))" 1
expect "the job ends at step $STEPS" "$(grep -c "step *$STEPS/$STEPS" "$TMP/run2/${WORKERS[0]}.log")" 1
expect "a checkpoint of step $STEPS" \
  "$(test -f "/opt/pst/runs/job/checkpoints/$(printf 'step-%09d' $STEPS)/manifest.json" && echo yes)" yes
expect "the model file is written" "$(test -s /opt/pst/runs/job/model.safetensors && echo yes)" yes
mapfile -t L < <(losses "$TMP/run1/${WORKERS[0]}.log" "$TMP/run2/${WORKERS[0]}.log")
echo "netns_test: loss ${L[0]} at step 10, ${L[-1]} at step $STEPS (${#L[@]} log lines)"
expect "the loss falls by more than 0.5 over the job" "$(awk -v a="${L[0]}" -v b="${L[-1]}" 'BEGIN {print (b < a - 0.5)}')" 1

# --- 3: mpirun across the namespaces ---------------------------------------
cat >"$TMP/rsh" <<EOF
#!/usr/bin/env bash
# Open MPI's rsh agent: runs the daemon's command line on host \$1, that is
# in the namespace of that name, under a host name of its own.
while [[ \$1 == -* ]]; do shift; done
host=\$1
shift
exec ip netns exec "\$host" unshare --uts sh -c "hostname \$host; \$*"
EOF
chmod +x "$TMP/rsh"
for n in "${NAMES[@]}"; do echo "$n slots=1"; done >"$TMP/hostfile"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPI_ENV=("${SMALL_MODEL_ENV[@]}" PST_CLUSTER_HOST=auto PST_DATA_BATCH_SIZE=64 PST_SECURITY_MODE=curve PST_TRAIN_STEPS=40 PST_SCHEDULE_WARMUP_STEPS=10
         PST_TRAIN_LOG_EVERY=10
         PST_TRAIN_EVAL_EVERY=0 PST_TRAIN_TEST_AT_END=false PST_DATA_EVAL_MAX_EXAMPLES=50
         PST_CHECKPOINT_EVERY_STEPS=20 PST_TRAIN_OUTPUT=$TMP/mpi PST_TRAIN_THREADS=1 PST_METRICS_ENABLED=false)
set +e
(cd /opt/pst && env "${MPI_ENV[@]}" timeout -k 5 300 mpirun --timeout 280 --hostfile "$TMP/hostfile" -np 5 \
   --mca plm_rsh_agent "$TMP/rsh" --mca oob_tcp_if_include 10.77.0.0/24 --mca btl_tcp_if_include 10.77.0.0/24 \
   --mca btl tcp,self $(for v in "${MPI_ENV[@]}"; do echo "-x ${v%%=*}"; done) \
   "$PST" train --config configs/g2p-small.toml --servers 2) >"$TMP/mpi.log" 2>&1
rc=$?
set -e
expect "mpirun across 5 namespaces exits 0" "$rc" 0
[[ $rc == 0 ]] || tail -20 "$TMP/mpi.log"
expect "5 distinct host names" "$(grep -o 'on host [a-z0-9-]*' "$TMP/mpi.log" | sort -u | wc -l)" 5
expect "2 servers bound 2 distinct addresses" \
  "$(grep -o 'server [01] at tcp://10\.77\.0\.[0-9]*' "$TMP/mpi.log" | sed 's/.*tcp:..//' | sort -u | wc -l)" 2
expect "CURVE keys went out over MPI: every rank has CURVE on" "$(grep -c 'CURVE on' "$TMP/mpi.log")" 5
expect "a checkpoint of step 40" "$(test -f "$TMP/mpi/checkpoints/step-000000040/manifest.json" && echo yes)" yes
mapfile -t M < <(losses "$TMP/mpi.log")
echo "netns_test: mpirun loss ${M[0]} at step 10, ${M[-1]} at step 40"
expect "the loss falls under mpirun" "$(awk -v a="${M[0]}" -v b="${M[-1]}" 'BEGIN {print (b < a)}')" 1
echo "netns_test: $passes checks passed, $failures failed"
[[ $failures -eq 0 ]]
