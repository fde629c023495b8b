#!/usr/bin/env bash
# deploy/kubernetes without a cluster (none exists here):
#  1. kubectl kustomize renders the base, the GPU overlay and the storage;
#     kubectl create secret --dry-run makes the Secret of a pst keygen file.
#  2. tests/kubernetes/lint.py checks the rendered objects; each rule fails
#     on a copy broken on purpose; pst accepts every pod's settings.
#  3. The pods as processes: inside `unshare --net --mount --uts`, one
#     network namespace per pod on a bridge, the cluster's DNS as /etc/hosts
#     (each headless Service's name for the pods it selects), every pod's
#     arguments and environment as the kubelet resolves them (the image's
#     ENV, the ConfigMap, the pod's address from the downward API), the
#     Secret at its mount path with its mode, the claim shared at its mount
#     path. Only the model's size, the number of steps and the logging are
#     the test's own. The readiness probe is 503 before the rendezvous and
#     200 after it; every server binds its pod address within the
#     NetworkPolicy's port range. `kubectl delete` (SIGTERM to every pod)
#     mid-run ends in a checkpoint of one common step; the pods started
#     again resume at it and finish; a server that its StatefulSet starts
#     again after the end changes nothing in the claim.
#   tests/integration/kubernetes_test.sh PST_BINARY
# PST_KUBECTL names another kubectl (e.g. Debian 12's 1.20, unpacked).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PST=$(readlink -f "${1:?usage: kubernetes_test.sh PST_BINARY}")
KUBECTL=${PST_KUBECTL:-kubectl}

if [[ -z ${K8S_TEST_INSIDE:-} ]]; then
  for tool in "$KUBECTL" ip unshare python3; do
    command -v "$tool" >/dev/null || { echo "kubernetes_test: needs $tool (scripts/setup installs it)"; exit 1; }
  done
  # The whole test, namespaces included, ends within 12 minutes.
  exec timeout -k 10 720 unshare --net --mount --uts env K8S_TEST_INSIDE=1 bash "$0" "$@"
fi

source "$ROOT/tests/integration/check.sh"
TMP=$(mktemp -d)
declare -A RC STARTED ADDR
cleanup() {
  local rc=$?
  if ((rc != 0)); then
    for f in "$TMP"/run*/*.log; do [[ -f $f ]] && { echo "== $f"; tail -n 8 "$f"; }; done
  fi
  for p in "${STARTED[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  remove_namespaces "$TMP"
  rm -rf "$TMP"
}
trap cleanup EXIT
echo "kubernetes_test: $("$KUBECTL" version --client 2>/dev/null | head -1)"

# --- 1: render ---------------------------------------------------------------
K="$ROOT/deploy/kubernetes"
"$KUBECTL" kustomize "$K/base" >"$TMP/base.yaml"
"$KUBECTL" kustomize "$K/overlays/gpu" >"$TMP/gpu.yaml" 2>"$TMP/gpu.err"
"$KUBECTL" kustomize "$K/storage" >"$TMP/storage.yaml"
"$PST" keygen --out "$TMP/pst_curve_key" >/dev/null
"$KUBECTL" create secret generic pst-curve-key --from-file="$TMP/pst_curve_key" --dry-run=client -o yaml \
  >"$TMP/secret.yaml"
IMAGES=(--image pst:cpu="$ROOT/docker/Dockerfile" --image pst:cuda="$ROOT/docker/Dockerfile.cuda")
CPU=("$TMP/base.yaml" "$TMP/storage.yaml" "$TMP/secret.yaml")
GPU=("$TMP/gpu.yaml" "$TMP/storage.yaml" "$TMP/secret.yaml")
pods() { python3 "$ROOT/tests/kubernetes/pods.py" "${IMAGES[@]}" --addresses "$TMP/addresses" "${CPU[@]}" "$@"; }
gpu_pods() { python3 "$ROOT/tests/kubernetes/pods.py" "${IMAGES[@]}" --addresses "$TMP/addresses" "${GPU[@]}" "$@"; }
LINT=(python3 "$ROOT/tests/kubernetes/lint.py" "${IMAGES[@]}")
: >"$TMP/addresses"

# --- 2: lint, mutations, settings ------------------------------------------
check "lint: the base, its storage and Secret are clean" "${LINT[@]}" "${CPU[@]}"
check "lint: the GPU overlay is clean" "${LINT[@]}" "${GPU[@]}"
pods list >"$TMP/pods.tsv"
echo "kubernetes_test: pods of deploy/kubernetes/base:"
sed 's/^/  /' "$TMP/pods.tsv"
expect "the base gives a scheduler, 2 servers and 2 workers" \
  "$(cut -f2 "$TMP/pods.tsv" | sort | uniq -c | tr -s ' ' | xargs)" "1 scheduler 2 server 2 worker"
expect "the GPU overlay's workers: the CUDA image, a GPU each, train.device = cuda" \
  "$(python3 -c "import yaml,sys
for d in yaml.safe_load_all(open(sys.argv[1])):
  if d and d['kind'] == 'Job' and d['metadata']['name'] == 'pst-worker':
    c = d['spec']['template']['spec']['containers'][0]
    print(c['image'], c['resources']['limits']['nvidia.com/gpu'], [e['value'] for e in c['env'] if e['name'] == 'PST_TRAIN_DEVICE'])
" "$TMP/gpu.yaml")" "pst:cuda 1 ['cuda']"
expect "the GPU overlay leaves the servers on the CPU image" \
  "$(grep -c 'image: pst:cuda' "$TMP/gpu.yaml")" 1
# Every setting a pod passes is one pst knows (a typo is an error naming it).
# settings_ok PODS-FUNCTION NAME
settings_ok() {
  local envs
  mapfile -t envs < <("$1" env "$2")
  env -i PATH=/usr/bin:/bin "${envs[@]}" "$PST" params --config "$ROOT/configs/g2p-small.toml" >/dev/null
}
for n in $(cut -f1 "$TMP/pods.tsv"); do printf '%s\t127.0.0.1\n' "$n"; done >"$TMP/addresses"
for n in pst-scheduler pst-server-0 pst-worker-0; do check "pst resolves the settings of $n" settings_ok pods "$n"; done
check "pst resolves the settings of the GPU overlay's pst-worker-1" settings_ok gpu_pods pst-worker-1
: >"$TMP/addresses"

# The overlay of docs/operations.md ("Kubernetes", Settings): 4 workers, the
# images from a registry.
mkdir -p "$TMP/my-job"
cat >"$TMP/my-job/kustomization.yaml" <<EOF
bases: [$(realpath --relative-to="$TMP/my-job" "$K/base")]
images:
  - {name: pst, newName: registry.example.com/pst}
configMapGenerator:
  - {name: pst-job, behavior: merge, literals: [PST_CLUSTER_WORKERS=4, PST_TRAIN_STEPS=20000]}
patchesStrategicMerge: [workers.yaml]
EOF
printf 'apiVersion: batch/v1\nkind: Job\nmetadata: {name: pst-worker}\nspec: {completions: 4, parallelism: 4}\n' \
  >"$TMP/my-job/workers.yaml"
"$KUBECTL" kustomize "$TMP/my-job" >"$TMP/my-job.yaml" 2>/dev/null
check "lint: the documented overlay of 4 workers is clean" python3 "$ROOT/tests/kubernetes/lint.py" \
  --image registry.example.com/pst:cpu="$ROOT/docker/Dockerfile" "$TMP/my-job.yaml" "$TMP/storage.yaml" "$TMP/secret.yaml"
expect "it has 4 worker pods" "$(python3 "$ROOT/tests/kubernetes/pods.py" "$TMP/my-job.yaml" list | grep -c $'\tworker\t')" 4

# mutate NAME RULE SED-EXPRESSION [FILE]: a copy of the rendered base (or
# FILE) broken one way; the lint must name RULE.
mutate() {
  local name=$1 rule=$2 expr=$3 file=${4:-$TMP/base.yaml}
  sed -e "$expr" "$file" >"$TMP/mutant.yaml"
  if cmp -s "$file" "$TMP/mutant.yaml"; then
    check "mutation '$name' changes the file" false
    return
  fi
  local files=("${CPU[@]}") out
  [[ $file == "$TMP/gpu.yaml" ]] && files=("${GPU[@]}")
  files=("${files[@]/#$file/$TMP/mutant.yaml}")
  out=$("${LINT[@]}" "${files[@]}" 2>&1 || true)
  check "lint catches $name [$rule]" grep -q "\[$rule\]" <<<"$out"
}
# In the rendered base: the StatefulSet and its Service lie between
# "kind: StatefulSet" and the next "---", and so on.
SS='/^kind: StatefulSet/,/^---/'
WJ='/^  name: pst-worker$/,/^---/'
SJ='/^  name: pst-scheduler$/,/^---/'
mutate "a server with other job settings" k8s-env \
  "$SS s/^        - name: PST_CLUSTER_HOST$/        - name: PST_TRAIN_STEPS\n          value: \"7001\"\n&/"
mutate "workers with another job file" k8s-env "$WJ s|configs/g2p-small.toml|configs/g2p-tiny.toml|"
mutate "cluster.workers unlike the worker pods" k8s-roles "$WJ s/^  completions: 2/  completions: 3/; $WJ s/^  parallelism: 2/  parallelism: 3/"
mutate "cluster.servers unlike the replicas" k8s-roles "$SS s/^  replicas: 2/  replicas: 3/"
mutate "workers started one by one" k8s-roles "$WJ s/^  parallelism: 2/  parallelism: 1/"
mutate "a server aimed at another port" k8s-roles "$SS s|tcp://pst-scheduler:5555|tcp://pst-scheduler:5556|"
mutate "workers aimed at a name no Service has" k8s-roles "$WJ s|tcp://pst-scheduler:5555|tcp://scheduler:5555|"
mutate "a scheduler Service that selects the servers" k8s-roles \
  "$SJ { /^  selector:/,/^---/ s/component: scheduler/component: server/ }"
mutate "a scheduler Service with a cluster IP" k8s-dns '0,/^  clusterIP: None/ s/^  clusterIP: None/  type: ClusterIP/'
mutate "a scheduler Service without not-ready addresses" k8s-dns '0,/publishNotReadyAddresses: true/ s//publishNotReadyAddresses: false/'
mutate "servers in order" k8s-order "$SS s/podManagementPolicy: Parallel/podManagementPolicy: OrderedReady/"
mutate "a scheduler that restarts" k8s-restart "$SJ s/^  backoffLimit: 0/  backoffLimit: 3/"
mutate "workers that never restart" k8s-restart "$WJ s/restartPolicy: OnFailure/restartPolicy: Never/"
mutate "servers as a Deployment" k8s-restart "s/^kind: StatefulSet/kind: Deployment/"
mutate "workers without a memory limit" k8s-limits "$WJ { /^          limits:/,/^ *memory:/ { /memory: 4Gi/d } }"
mutate "a server without a CPU request" k8s-limits "$SS { /^          requests:/,/^ *memory:/ { /cpu: \"1\"/d } }"
mutate "a GPU worker without its GPU" k8s-gpu "/nvidia.com\/gpu: 1/d" "$TMP/gpu.yaml"
mutate "a GPU worker on the CPU image" k8s-gpu "s/image: pst:cuda/image: pst:cpu/" "$TMP/gpu.yaml"
mutate "a probe of another path" k8s-probe "$WJ s|path: /healthz|path: /metrics|"
mutate "a probe of another port" k8s-probe "$SS s/^            port: metrics/            port: 9200/"
mutate "no scrape annotation" k8s-metrics "$SS { /prometheus.io\/scrape/d }"
mutate "a PodMonitor of another port" k8s-metrics "/^kind: PodMonitor/,/^---/ s/port: metrics/port: http/"
mutate "a short grace period" k8s-stop "$WJ s/terminationGracePeriodSeconds: 300/terminationGracePeriodSeconds: 30/"
mutate "a key readable by others" k8s-secret "$SS s/defaultMode: 288/defaultMode: 292/"
mutate "a key outside the Secret's mount" k8s-secret "s|PST_SECURITY_KEY_FILE: /var/run/secrets/pst/|PST_SECURITY_KEY_FILE: /opt/pst/|"
mutate "a Secret without the key" k8s-secret "s/^  pst_curve_key:/  other_key:/" "$TMP/secret.yaml"
mutate "train.output off the claim" k8s-volumes "s|PST_TRAIN_OUTPUT: /opt/pst/runs/job|PST_TRAIN_OUTPUT: /opt/pst/job|"
mutate "a claim of one node" k8s-volumes "s/ReadWriteMany/ReadWriteOnce/" "$TMP/storage.yaml"
mutate "a policy without the port range" k8s-network "s/endPort: 30100/endPort: 30010/"
mutate "no port range with a policy" k8s-network "/PST_CLUSTER_PORT_RANGE/d"
mutate "a policy that shuts out Prometheus" k8s-network "/^kind: NetworkPolicy/,/^---/ s/port: 9100/port: 9101/"
mutate "a :latest image" k8s-image "$SJ s/image: pst:cpu/image: pst:latest/"
mutate "root" k8s-security "$WJ s/runAsUser: 10001/runAsUser: 0/"
mutate "no fsGroup" k8s-security "$SS { /fsGroup: 10001/d }"
mutate "privilege escalation" k8s-security "$SJ s/allowPrivilegeEscalation: false/allowPrivilegeEscalation: true/"
mutate "a StatefulSet selector that misses its pods" k8s-labels \
  "$SS { /^  selector:/,/^  serviceName:/ s/component: server/component: servers/ }"

# --- 3: the pods as processes ------------------------------------------------
image_root "$TMP" "$ROOT/configs"
hostname launcher
declare -A ROLE
i=2
while IFS=$'\t' read -r name role _; do
  bridged_namespace "$name" "10.77.0.$i" "v$i"
  ADDR[$name]=10.77.0.$i
  ROLE[$name]=$role
  printf '%s\t%s\n' "$name" "10.77.0.$i" >>"$TMP/addresses"
  i=$((i + 1))
done <"$TMP/pods.tsv"
NAMES=($(cut -f1 "$TMP/pods.tsv"))
SERVERS=($(awk -F'\t' '$2 == "server" {print $1}' "$TMP/pods.tsv"))
WORKERS=($(awk -F'\t' '$2 == "worker" {print $1}' "$TMP/pods.tsv"))
SCHED=$(awk -F'\t' '$2 == "scheduler" {print $1}' "$TMP/pods.tsv")
{ printf '127.0.0.1 localhost\n10.77.0.1 launcher\n'; pods hosts; } >"$TMP/hosts"
mount --bind "$TMP/hosts" /etc/hosts
expect "the scheduler's Service name resolves to its pod" "$(getent hosts pst-scheduler | awk '{print $1}')" "${ADDR[$SCHED]}"

# The volumes: every pod mounts the same Secret and claim at the same paths,
# and all pods share this mount namespace, so each is mounted once.
mkdir -p "$TMP/claims"
for n in "${NAMES[@]}"; do pods mounts "$n"; done | sort -u >"$TMP/mounts.tsv"
while IFS=$'\t' read -r path kind source mode; do
  mkdir -p "$path"
  case $kind in
    secret)
      mkdir -p "$TMP/secret-$source"
      for key in $(python3 -c "import yaml,sys
for d in yaml.safe_load_all(open(sys.argv[1])):
  if d and d['kind'] == 'Secret' and d['metadata']['name'] == sys.argv[2]: print(*d.get('data', {}))" \
        "$TMP/secret.yaml" "$source"); do
        pods secret "$source" "$key" >"$TMP/secret-$source/$key"
        chmod "${mode#0o}" "$TMP/secret-$source/$key"
      done
      mount --bind -o ro "$TMP/secret-$source" "$path" ;;
    pvc)
      mkdir -p "$TMP/claims/$source"
      mount --bind "$TMP/claims/$source" "$path" ;;
    *) echo "kubernetes_test: no emulation of $kind volumes"; exit 1 ;;
  esac
done <"$TMP/mounts.tsv"
check "the claim and the Secret are mounted" [ "$(wc -l <"$TMP/mounts.tsv")" == 2 ]

# What the test changes of the job: a short run of small batches of a small
# model (check.sh), logged often.
STEPS=400
TEST_ENV=("${SMALL_MODEL_ENV[@]}" PST_TRAIN_STEPS=$STEPS PST_DATA_BATCH_SIZE=64 PST_SCHEDULE_WARMUP_STEPS=30 PST_TRAIN_LOG_EVERY=10
          PST_TRAIN_EVAL_EVERY=0 PST_TRAIN_TEST_AT_END=false PST_DATA_EVAL_MAX_EXAMPLES=50
          PST_CHECKPOINT_EVERY_STEPS=50 PST_CLUSTER_TIMEOUT_S=120 PST_TRAIN_THREADS=1 PST_METRICS_LINGER_S=0)

# start NAME LOG: pod NAME's container as the kubelet runs it (env -i: the
# container's environment and nothing else; the image's WORKDIR).
start() { start_in_namespace "$1" "$2" <(pods env "$1") <(pods argv "$1"); }
# ready NAME: the HTTP status of pod NAME's readiness probe.
ready() {
  local port path
  IFS=$'\t' read -r port path < <(pods probe "$1")
  python3 -c "import sys, urllib.request, urllib.error
try: print(urllib.request.urlopen(sys.argv[1], timeout=2).status)
except urllib.error.HTTPError as e: print(e.code)
except OSError: print('none')" "http://${ADDR[$1]}:$port$path"
}
OUT=/opt/pst/runs/job
mkdir -p "$TMP/run1" "$TMP/run2"
start "$SCHED" "$TMP/run1/$SCHED.log"
for s in "${SERVERS[@]}"; do start "$s" "$TMP/run1/$s.log"; done
wait_for "$TMP/run1/${SERVERS[0]}.log" "metrics at" 60 || true
sleep 1
expect "the readiness probe before the rendezvous" "$(ready "${SERVERS[0]}")" 503
for w in "${WORKERS[@]}"; do start "$w" "$TMP/run1/$w.log"; done
for _ in $(seq 1 300); do
  [[ $(ready "${WORKERS[-1]}") == 200 && $(ready "$SCHED") == 200 ]] && break
  sleep 0.2
done
for n in "${NAMES[@]}"; do expect "the readiness probe of $n after the rendezvous" "$(ready "$n")" 200; done
for s in "${SERVERS[@]}"; do
  port=$(grep -o "at tcp://${ADDR[$s]}:[0-9]*" "$TMP/run1/$s.log" | head -1 | grep -o '[0-9]*$' || echo none)
  expect "$s binds its pod address (the downward API's), port $port within 30000-30100" \
    "$([[ $port != none ]] && ((port >= 30000 && port <= 30100)) && echo yes)" yes
done
expect "CURVE is on in every pod" "$(cat "$TMP"/run1/*.log | grep -c 'CURVE on')" "${#NAMES[@]}"

# kubectl delete: SIGTERM to every pod at once, mid-run.
wait_for "$TMP/run1/${WORKERS[0]}.log" "step *[3-6]0/$STEPS" 300 || { tail -n 5 "$TMP"/run1/*.log; exit 1; }
stop_all "$TMP/run1/${WORKERS[0]}.log" "$TMP/run1/${WORKERS[1]}.log"
stopped=$STOPPED
expect "the newest checkpoint on the claim is of the stop step" "$(ls "$OUT/checkpoints" | tail -1)" \
  "$(printf 'step-%09d' "$stopped")"
check "the claim holds it: $TMP/claims/pst-runs" \
  test -f "$TMP/claims/pst-runs/job/checkpoints/$(printf 'step-%09d' "$stopped")/manifest.json"

# kubectl apply again: the same pods, checkpoint.resume = auto.
for n in "${NAMES[@]}"; do start "$n" "$TMP/run2/$n.log"; done
wait_started 400
for n in "${NAMES[@]}"; do expect "$n exits 0 after the restart" "${RC[$n]}" 0; done
expect "${SERVERS[0]} resumed at the stop step" "$(grep -c "resumed from .*(step $stopped," "$TMP/run2/${SERVERS[0]}.log")" 1
expect "the job ends at step $STEPS" "$(grep -c "step *$STEPS/$STEPS" "$TMP/run2/${WORKERS[0]}.log")" 1
expect "a checkpoint of step $STEPS" "$(test -f "$OUT/checkpoints/$(printf 'step-%09d' $STEPS)/manifest.json" && echo yes)" yes
expect "the model file is written" "$(test -s "$OUT/model.safetensors" && echo yes)" yes
mapfile -t L < <(losses "$TMP/run1/${WORKERS[0]}.log" "$TMP/run2/${WORKERS[0]}.log")
echo "kubernetes_test: loss ${L[0]} at step 10, ${L[-1]} at step $STEPS (${#L[@]} log lines)"
expect "the loss falls by more than 0.5 over the job" "$(awk -v a="${L[0]}" -v b="${L[-1]}" 'BEGIN {print (b < a - 0.5)}')" 1

# After the end the StatefulSet starts its servers again (restartPolicy
# Always): one says the job has run to its end, exits 0 before any
# rendezvous (its scheduler is gone) and leaves the claim as it was.
before=$(cd "$OUT" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum)
unset 'STARTED[$SCHED]' 'STARTED[${WORKERS[0]}]' 'STARTED[${WORKERS[1]}]' 'STARTED[${SERVERS[1]}]'
start "${SERVERS[0]}" "$TMP/run3.log"
wait_started 60
expect "a server started after the end exits 0" "${RC[${SERVERS[0]}]}" 0
check "it says the job has run to its end" grep -q "$(printf 'step-%09d' $STEPS) is at step $STEPS of train.steps = $STEPS; the job has run to its end" "$TMP/run3.log"
expect "the claim is unchanged" "$(cd "$OUT" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum)" "$before"
echo "kubernetes_test: $passes checks passed, $failures failed"
[[ $failures -eq 0 ]]
