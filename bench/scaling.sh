#!/usr/bin/env bash
# How pst scales (docs/scaling.md): jobs of S servers and W workers as
# processes, each worker's compute a sleep of --compute-ms (scaling_worker),
# the scheduler and servers the real `pst train --role` processes, over
# loopback and over network namespaces whose links tc shapes to a rate.
#
# Each host (the scheduler, every server, every worker) is a network
# namespace with one link to a bridge; a token bucket (tc tbf) on both ends
# of that link holds each direction to the rate: what a host with one NIC of
# that speed on a non-blocking switch has. "loopback" runs every process in
# one namespace over 127.0.0.1, unshaped.
#
# For each link and each SxW it prints the step time (the median over the
# steps after the first --warmup, of the slowest worker's), the push, pull
# and update times within it, and tokens/s of the whole job (W workers x
# --tokens tokens a step / step time). Then bench/scaling_model.py prints
# what the model of docs/scaling.md predicts for each point, the error, and
# its prediction for large clusters, and draws OUT/scaling.png.
#
#   bench/scaling.sh [--build DIR] [--config JOB] [--compute-ms MS] [--tokens N] [--steps N] [--warmup N]
#                    [--grid "SxW ..."] [--links "loopback 1gbit 200mbit"] [--queue-ms MS] [--out DIR]
#                    [--calibrate "LINK:SxW ..."] [--wire fp32|bf16]
#
# Defaults: g2p-small (5.5 M parameters, 22 MB of gradient per worker a
# step) with the step of its H100 run (7,000 steps in 51.2 s: 7.31 ms and
# 1,857 target tokens a step, docs/benchmarks.md), 8 steps of which the
# first 2 are not counted, S x W from 1x1 to 4x8, links of 1 Gbit/s and
# 200 Mbit/s with 20 ms queues; about 20 minutes on 2 cores. OUT
# (bench-results/scaling) gets scaling.txt, scaling.png and runs/. PYTHON
# (/usr/bin/python3, with python3-matplotlib) runs the baseline and model.
# --wire sets cluster.wire: with bf16 each worker moves half the bytes, and
# the baseline and the model take those bytes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build
CONFIG=$ROOT/configs/g2p-small.toml
COMPUTE_MS=7.31
TOKENS=1857
STEPS=8
WARMUP=2
GRID="1x1 1x2 1x4 1x8 2x2 2x4 2x8 4x4 4x8"
LINKS="loopback 1gbit 200mbit"
CALIBRATE="1gbit:4x8 loopback:4x8"
QUEUE_MS=20
WIRE=fp32
PYTHON=${PYTHON:-/usr/bin/python3}
OUT=$ROOT/bench-results/scaling
while (($#)); do
  case $1 in
    --build) BUILD=$2 ;;
    --config) CONFIG=$2 ;;
    --compute-ms) COMPUTE_MS=$2 ;;
    --tokens) TOKENS=$2 ;;
    --steps) STEPS=$2 ;;
    --warmup) WARMUP=$2 ;;
    --grid) GRID=$2 ;;
    --links) LINKS=$2 ;;
    --out) OUT=$2 ;;
    --calibrate) CALIBRATE=$2 ;;
    --queue-ms) QUEUE_MS=$2 ;;
    --wire) WIRE=$2 ;;
    *) echo "bench/scaling.sh: unknown argument '$1' (see the usage at the top of the script)" >&2; exit 2 ;;
  esac
  shift 2
done
[[ $WIRE == fp32 || $WIRE == bf16 ]] || { echo "--wire: '$WIRE' is neither fp32 nor bf16" >&2; exit 2; }
((STEPS > WARMUP)) || { echo "--steps ($STEPS) must be more than --warmup ($WARMUP)" >&2; exit 2; }
for link in $LINKS; do
  [[ $link == loopback || $link =~ ^[0-9]+(k|m|g)bit$ ]] ||
    { echo "--links: '$link' is neither loopback nor a tc rate such as 1gbit, 500mbit" >&2; exit 2; }
done
for sw in $GRID; do
  [[ $sw =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]] || { echo "--grid: '$sw' is not SxW (servers x workers, e.g. 2x4)" >&2; exit 2; }
done

if [[ -z ${SCALING_INSIDE:-} ]]; then
  for tool in ip tc unshare "$PYTHON"; do
    command -v "$tool" >/dev/null || { echo "bench/scaling.sh needs $tool (scripts/setup installs it)" >&2; exit 2; }
  done
  mkdir -p "$OUT"
  OUT=$(realpath "$OUT")
  # A namespace of its own: the bridge, the hosts and their links go with it.
  exec timeout -k 10 "${SCALING_LIMIT_S:-5400}" unshare --net --mount env SCALING_INSIDE=1 bash "$0" \
    --build "$BUILD" --config "$CONFIG" --compute-ms "$COMPUTE_MS" --tokens "$TOKENS" --steps "$STEPS" \
    --warmup "$WARMUP" --grid "$GRID" --links "$LINKS" --out "$OUT" --calibrate "$CALIBRATE" --queue-ms "$QUEUE_MS" \
    --wire "$WIRE"
fi

source "$ROOT/tests/integration/check.sh"  # bridged_namespace
PST=$(realpath "$BUILD/bin/pst")
WORKER=$(realpath "$BUILD/bin/scaling_worker")
mount --make-rprivate /
mount -t tmpfs tmpfs /run
ip link set lo up
ip link add br0 type bridge
ip addr add 10.78.0.1/24 dev br0
ip link set br0 up
RUNS=$OUT/runs
rm -rf "$RUNS"
mkdir -p "$RUNS"
"$PST" keygen --out "$OUT/job.key" >/dev/null
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

max_s=0
max_w=0
for sw in $GRID; do
  ((${sw%x*} > max_s)) && max_s=${sw%x*}
  ((${sw#*x} > max_w)) && max_w=${sw#*x}
done
# Hosts: the scheduler at .2, server k at .10+k, worker i at .100+i.
host_address() { case $1 in sch) echo 10.78.0.2 ;; s*) echo "10.78.0.$((10 + ${1#s}))" ;; w*) echo "10.78.0.$((100 + ${1#w}))" ;; esac; }
HOSTS=(sch)
for ((k = 0; k < max_s; ++k)); do HOSTS+=("s$k"); done
for ((i = 0; i < max_w; ++i)); do HOSTS+=("w$i"); done
for h in "${HOSTS[@]}"; do bridged_namespace "$h" "$(host_address "$h")" "v-$h"; done

# shape RATE: both directions of every host's link held to RATE by a token
# bucket. Its bucket holds 64 KiB or 100 us at the rate, whichever is more
# (a segment that GSO made large passes whole), and its queue --queue-ms
# (a switch port's buffer; what overflows it is dropped and counted).
shape() {
  local rate=$1 bits burst h
  case $rate in
    *kbit) bits=$((${rate%kbit} * 1000)) ;;
    *mbit) bits=$((${rate%mbit} * 1000000)) ;;
    *gbit) bits=$((${rate%gbit} * 1000000000)) ;;
  esac
  burst=$((bits / 8 / 10000))
  ((burst < 65536)) && burst=65536
  for h in "${HOSTS[@]}"; do
    tc qdisc replace dev "v-$h" root tbf rate "$rate" burst "$burst" latency "${QUEUE_MS}ms"
    tc -n "$h" qdisc replace dev eth0 root tbf rate "$rate" burst "$burst" latency "${QUEUE_MS}ms"
  done
}
# drops: packets the links dropped so far (their queues were full).
drops() {
  local h n=0 d
  for h in "${HOSTS[@]}"; do
    for d in $(tc -s qdisc show dev "v-$h" | grep -o 'dropped [0-9]*' | awk '{print $2}') \
             $(tc -n "$h" -s qdisc show dev eth0 | grep -o 'dropped [0-9]*' | awk '{print $2}'); do
      n=$((n + d))
    done
  done
  echo "$n"
}

# address_on LINK HOST: where HOST's processes bind (loopback: 127.0.0.1).
address_on() { if [[ $1 == loopback ]]; then echo 127.0.0.1; else host_address "$2"; fi; }
# in_host LINK HOST COMMAND... &: COMMAND in HOST's namespace (loopback: here), in
# place of the background shell that runs it, so that its PID is $!.
in_host() {
  local link=$1 h=$2
  shift 2
  if [[ $link == loopback ]]; then exec "$@"; else exec ip netns exec "$h" "$@"; fi
}

# wait_all DEADLINE: waits for every process in PIDS, killing those still
# running at DEADLINE (bash's SECONDS); returns the last non-zero status.
wait_all() {
  local p rc=0
  for p in "${PIDS[@]}"; do
    while kill -0 "$p" 2>/dev/null && ((SECONDS < $1)); do sleep 0.2; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p"
    wait "$p" || rc=$?
  done
  PIDS=()
  return "$rc"
}

# run_job LINK S W: one job; its logs in RUNS/LINK/SxW/.
run_job() {
  local link=$1 s=$2 w=$3 dir sched args k i rc=0
  dir=$RUNS/$link/${s}x$w
  mkdir -p "$dir"
  args=(--config "$CONFIG" --set cluster.servers="$s" --set cluster.workers="$w" --set train.steps="$STEPS"
        --set train.eval_every=0 --set train.test_at_end=false --set train.log_every=1000000
        --set train.output="$dir/run" --set security.key_file="$OUT/job.key" --set cluster.start_timeout_s=300
        --set cluster.wire="$WIRE")
  sched=tcp://$(address_on "$link" sch):5555
  PIDS=()
  in_host "$link" sch "$PST" train "${args[@]}" --role scheduler --scheduler "$sched" \
    >"$dir/scheduler.log" 2>&1 &
  PIDS+=($!)
  for ((k = 0; k < s; ++k)); do
    in_host "$link" "s$k" "$PST" train "${args[@]}" --set "cluster.host=$(address_on "$link" "s$k")" --role server --scheduler "$sched" \
      >"$dir/server$k.log" 2>&1 &
    PIDS+=($!)
  done
  for ((i = 0; i < w; ++i)); do
    in_host "$link" "w$i" "$WORKER" "${args[@]}" --scheduler "$sched" --compute-ms "$COMPUTE_MS" \
      >"$dir/worker$i.log" 2>&1 &
    PIDS+=($!)
  done
  # The defaults' slowest job (1x8 on 200 Mbit/s links, 16 s a step) ends
  # well inside 10 minutes on a machine 3x slower than this one; one still
  # running then is stuck.
  wait_all "$((SECONDS + 600))" || rc=$?
  if ((rc != 0)); then
    echo "$link ${s}x$w: a process failed (exit $rc); logs in $dir" >&2
    tail -n 3 "$dir"/*.log >&2
    return 1
  fi
  # The baseline: the same bytes in the same pattern over plain TCP.
  local bytes servers=()
  bytes=$(grep -o '^parameters [0-9]* bytes [0-9]*' "$dir/worker0.log" | awk '{print $4}')
  for ((k = 0; k < s; ++k)); do
    servers+=("$(address_on "$link" "s$k"):$((6000 + k))")
    in_host "$link" "s$k" "$PYTHON" "$ROOT/bench/scaling_raw.py" server --listen "${servers[k]}" --workers "$w" \
      --server-count "$s" --bytes "$bytes" --steps "$STEPS" >"$dir/raw-server$k.log" 2>&1 &
    PIDS+=($!)
  done
  for ((i = 0; i < w; ++i)); do
    in_host "$link" "w$i" "$PYTHON" "$ROOT/bench/scaling_raw.py" worker --servers "$(IFS=,; echo "${servers[*]}")" \
      --bytes "$bytes" --steps "$STEPS" --compute-ms "$COMPUTE_MS" >"$dir/raw-worker$i.log" 2>&1 &
    PIDS+=($!)
  done
  wait_all "$((SECONDS + 600))" || rc=$?
  if ((rc != 0)); then
    echo "$link ${s}x$w: a raw TCP process failed (exit $rc); logs in $dir" >&2
    tail -n 3 "$dir"/raw-*.log >&2
    return 1
  fi
}

for link in $LINKS; do
  if [[ $link != loopback ]]; then shape "$link"; fi
  for sw in $GRID; do
    echo "== $link, ${sw%x*} servers x ${sw#*x} workers" >&2
    [[ $link == loopback ]] || before=$(drops)
    run_job "$link" "${sw%x*}" "${sw#*x}"
    [[ $link == loopback ]] || echo "$(($(drops) - before))" >"$RUNS/$link/$sw/drops"
  done
done
"$PYTHON" "$ROOT/bench/scaling_model.py" --runs "$RUNS" --compute-ms "$COMPUTE_MS" --tokens "$TOKENS" \
  --warmup "$WARMUP" --calibrate "$CALIBRATE" --png "$OUT/scaling.png" | tee "$OUT/scaling.txt"
