# Sourced by the integration scripts: check NAME CONDITION... runs the
# condition and counts it in passes or failures, printing "FAIL: NAME".

# SIGTERM (a test's own timeout, ctest's) and SIGINT end a script through
# exit, so that its EXIT trap (its cleanup) runs: a signal would end bash
# without it, leaving the test's processes behind.
trap 'exit 143' TERM INT
failures=0
passes=0
check() {
  local name=$1
  shift
  if "$@"; then
    passes=$((passes + 1))
  else
    echo "FAIL: $name"
    failures=$((failures + 1))
  fi
}

# contains FILE PATTERN: grep, showing the file's tail when PATTERN is not in it.
contains() { grep -q -- "$2" "$1" || { echo "'$2' not in $1:"; tail -5 "$1"; return 1; }; }

# expect NAME ACTUAL WANTED: check that ACTUAL is WANTED, showing both.
expect() {
  check "$1 (got '$2', want '$3')" [ "$2" == "$3" ]
}

# scratch_and_processes: TMP, a scratch folder, and PIDS, the processes the
# test starts (it adds each one's PID); at exit, SIGTERM and SIGINT
# included (above), each of them is killed by its PID and TMP removed.
scratch_and_processes() {
  TMP=$(mktemp -d)
  PIDS=()
  trap 'for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done; rm -rf "$TMP"' EXIT
}

# wait_for FILE PATTERN SECONDS: until PATTERN is in FILE (1 when it never is).
wait_for() {
  for _ in $(seq 1 $(($3 * 5))); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

# bridged_namespace NAME ADDRESS VETH: a network namespace NAME whose eth0
# has ADDRESS/24 and is the peer of VETH on the bridge br0 (tests that
# build several hosts inside `unshare --net`).
bridged_namespace() {
  ip netns add "$1"
  ip link add "$3" type veth peer name eth0 netns "$1"
  ip link set "$3" master br0 up
  ip -n "$1" addr add "$2/24" dev eth0
  ip -n "$1" link set eth0 up
  ip -n "$1" link set lo up
}

# Inside `unshare --net --mount`, the tests that stand in for containers on
# one machine (netns_test.sh, kubernetes_test.sh):

# image_root SCRATCH CONFIGS: the file system of pst's image. Mounts become
# private, /run a tmpfs, and /opt a tmpfs holding /opt/pst (CONFIGS read-only
# at /opt/pst/configs) while whatever the host has in /opt (this checkout,
# perhaps) stays visible through bind mounts; SCRATCH/host-opt holds the
# host's /opt (remove_namespaces unmounts it).
image_root() {
  mount --make-rprivate /
  mount -t tmpfs tmpfs /run
  mkdir -p "$1/host-opt"
  mount --bind /opt "$1/host-opt"
  mount -t tmpfs tmpfs /opt
  local entry target
  for entry in "$1"/host-opt/* "$1"/host-opt/.[!.]*; do
    [[ -e $entry ]] || continue
    target=/opt/$(basename "$entry")
    if [[ -d $entry ]]; then mkdir -p "$target"; else touch "$target"; fi
    mount --bind "$entry" "$target"
  done
  mkdir -p /opt/pst/configs
  mount --bind -o ro "$2" /opt/pst/configs
  ip link set lo up
  ip link add br0 type bridge
  ip addr add 10.77.0.1/24 dev br0
  ip link set br0 up
}

# remove_namespaces SCRATCH: every process of every network namespace ends
# (kill -9) and the namespaces go; then the host's /opt is unmounted.
remove_namespaces() {
  local ns p
  for ns in $(ip netns list 2>/dev/null | cut -d' ' -f1); do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns delete "$ns" 2>/dev/null || true
  done
  umount "$1/host-opt" 2>/dev/null || true
}

# wait_started SECONDS: for each NAME of the associative array STARTED
# (NAME -> PID), its exit code into RC[NAME], or "timeout" (and kill -9)
# for one still running when SECONDS have passed.
wait_started() {
  local deadline=$((SECONDS + $1)) n p
  for n in "${!STARTED[@]}"; do
    p=${STARTED[$n]}
    while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$p" 2>/dev/null; then
      RC[$n]=timeout
      kill -9 "$p"
    else
      set +e
      wait "$p"
      RC[$n]=$?
      set -e
    fi
  done
}

# start_in_namespace NAME LOG ENV_FILE ARGV_FILE: container or pod NAME's
# process in the network namespace of that name, as its engine runs it:
# env -i (its environment, a VAR=VALUE line each, then TEST_ENV, and nothing
# else), in the image's WORKDIR /opt/pst, $PST with its arguments (a line
# each); its PID into STARTED[NAME].
start_in_namespace() {
  local name=$1 log=$2 envs args
  mapfile -t envs <"$3"
  mapfile -t args <"$4"
  (cd /opt/pst && exec ip netns exec "$name" env -i PATH=/usr/bin:/bin HOME=/opt/pst "${envs[@]}" "${TEST_ENV[@]}" \
     "$PST" "${args[@]}") >"$log" 2>&1 &
  STARTED[$name]=$!
}

# The deployment tests (netns, kubernetes, slurm) train the stacks' own job
# file, configs/g2p-small.toml, with a model 1/23 its size (d_model 64,
# FFN 256, 2 + 2 layers: 0.93 MiB of weights against 21 MiB), whose step
# takes an eighth of the time: what they check is the wiring (addresses,
# keys, launchers, stops and resumes), which is the same for any size. The
# tensors are cut into 8 KiB chunks, so that a layer's weight matrix spans
# 2 (attention) to 8 (FFN) where g2p-small's, under 4 MiB, span one each.
SMALL_MODEL_ENV=(PST_MODEL_D_MODEL=64 PST_MODEL_FFN_DIM=256 PST_MODEL_ENCODER_LAYERS=2 PST_MODEL_DECODER_LAYERS=2
                 PST_CLUSTER_CHUNK_BYTES=8192)

# losses FILE...: the loss of every logged step.
losses() { grep -ho 'step *[0-9]*/[0-9]* *loss [0-9.]*' "$@" | awk '{print $NF}'; }

# stop_all WORKER_LOG...: SIGTERM to every process in STARTED at once
# (docker compose stop, kubectl delete); checks that each exits 0 and that
# the workers (their logs) stopped after one common step, which goes into
# STOPPED ("none" when they did not say).
stop_all() {
  local n steps
  for n in "${!STARTED[@]}"; do kill -TERM "${STARTED[$n]}"; done
  wait_started 180
  for n in "${!STARTED[@]}"; do expect "$n exits 0 after SIGTERM" "${RC[$n]}" 0; done
  steps=$(for f in "$@"; do grep -ho 'stopped after step [0-9]*' "$f" | grep -o '[0-9]*$' || echo none; done | sort -u)
  expect "the workers stop after one common step" "$(wc -l <<<"$steps")" 1
  STOPPED=$(head -1 <<<"$steps")
}
