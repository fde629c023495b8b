#!/usr/bin/env bash
# Metrics end to end: Debian's Prometheus server, started on a loopback port
# with monitoring/prometheus/prometheus.yml (scrape interval lowered to 1 s),
# scrapes a 1 + 2 + 2 job under mpirun through the file_sd file the job's
# scheduler writes. Checked through Prometheus's HTTP API:
#  - every one of the 5 processes is up;
#  - pst_tokens_total of each worker grows while the job runs;
#  - pst_train_loss is finite and falls;
#  - the last values equal what the job logged: optimizer steps of both
#    servers and steps of both workers = train.steps, worker 0's
#    pst_train_loss = the last loss in train.output/metrics.jsonl;
#  - promtool: the config and the alert rules are valid, the rules' unit
#    tests pass, and every query of the Grafana dashboard parses;
#  - alerts (PstNodeDown's `for` shortened to 3 s): none after the job ended
#    well (it retired its scrape targets), PstNodeDown firing after a
#    worker of a second job was killed with kill -9.
# Usage: prometheus_test.sh PATH_TO_PST
set -uo pipefail
PST=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d)
PROM_PID=
cleanup() {
  [[ -n $PROM_PID ]] && kill -9 "$PROM_PID" 2>/dev/null && wait "$PROM_PID" 2>/dev/null
  [[ -f $TMP/mpirun.pid ]] && kill -9 "$(cat "$TMP/mpirun.pid")" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
source "$(dirname "$0")/check.sh"

# 1. promtool, offline.
check "promtool check config" promtool check config --syntax-only "$ROOT/monitoring/prometheus/prometheus.yml"
check "promtool check rules" promtool check rules "$ROOT/monitoring/prometheus/rules/pst.rules.yml"
check "promtool test rules" bash -c "cd '$ROOT/tests/monitoring' && promtool test rules rules_test.yml"
# The dashboard's queries, as recording rules, must parse.
python3 - "$ROOT/monitoring/grafana/pst-dashboard.json" >"$TMP/dashboard.rules.yml" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print("groups:\n  - name: dashboard\n    rules:")
for p in d["panels"]:
    for i, t in enumerate(p["targets"]):
        expr = t["expr"].replace("$job", ".*").replace("$worker0", "3")
        print(f"      - record: dashboard_{p['id']}_{i}\n        expr: {json.dumps(expr)}")
EOF
check "every dashboard query parses" promtool check rules "$TMP/dashboard.rules.yml"

# 2. Prometheus and a job.
mkdir -p "$TMP/prom/targets"
cp -r "$ROOT/monitoring/prometheus/." "$TMP/prom/"
sed -i 's/scrape_interval: 15s/scrape_interval: 1s/; s/evaluation_interval: 15s/evaluation_interval: 1s/' "$TMP/prom/prometheus.yml"
python3 - "$TMP/prom/rules/pst.rules.yml" <<'EOF'
import sys, yaml
path = sys.argv[1]
doc = yaml.safe_load(open(path))
for group in doc["groups"]:
    for rule in group["rules"]:
        if rule.get("alert") == "PstNodeDown":
            rule["for"] = "3s"
yaml.safe_dump(doc, open(path, "w"))
EOF
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
API="http://127.0.0.1:$PORT/api/v1"
prometheus --config.file="$TMP/prom/prometheus.yml" --storage.tsdb.path="$TMP/tsdb" \
  --web.listen-address="127.0.0.1:$PORT" >"$TMP/prometheus.log" 2>&1 &
PROM_PID=$!

STEPS=300
timeout 300 mpirun --oversubscribe --bind-to none -np 5 "$PST" train --config "$ROOT/configs/g2p-tiny.toml" \
  --servers 2 --set train.steps=$STEPS --set train.log_every=20 --set train.eval_every=0 \
  --set train.test_at_end=false --set data.eval_max_examples=20 --set train.output="$TMP/out" \
  --set metrics.file_sd="$TMP/prom/targets/pst.json" --set metrics.linger_s=5 >"$TMP/job.log" 2>&1 &
echo $! >"$TMP/mpirun.pid"
JOB_PID=$(cat "$TMP/mpirun.pid")

# query EXPR [TIME]: the result vector as JSON lines "labels value".
query() {
  python3 - "$API" "$1" "${2:-}" <<'EOF'
import json, sys, urllib.parse, urllib.request
api, expr, at = sys.argv[1:4]
q = {"query": expr}
if at: q["time"] = at
try:
    r = json.load(urllib.request.urlopen(f"{api}/query?" + urllib.parse.urlencode(q), timeout=10))
except Exception as e:
    sys.exit(0)
for s in r.get("data", {}).get("result", []):
    print(json.dumps(s["metric"], sort_keys=True), s["value"][1])
EOF
}

# Every process up while the job trains (Prometheus scrapes every second).
up_count=0
for _ in $(seq 1 60); do
  up_count=$(query 'count(up{job="pst"} == 1)' | awk '{print $NF}')
  [[ ${up_count:-0} == 5 ]] && break
  kill -0 "$JOB_PID" 2>/dev/null || break
  sleep 0.5
done
check "all 5 processes are up (got ${up_count:-0})" test "${up_count:-0}" = 5
MID=$(date +%s.%N)
wait "$JOB_PID"
rc=$?
check "the job succeeded (exit $rc)" test $rc = 0
[[ $rc != 0 ]] && tail -30 "$TMP/job.log"
sleep 2
END=$(date +%s.%N)

# Workers are ranks 3 and 4 (1 scheduler, 2 servers).
for rank in 3 4; do
  mid=$(query "pst_tokens_total{rank=\"$rank\"}" "$MID" | awk '{print $NF}')
  end=$(query "last_over_time(pst_tokens_total{rank=\"$rank\"}[2m])" "$END" | awk '{print $NF}')
  check "worker rank $rank: pst_tokens_total grows ($mid -> $end)" \
    awk -v a="${mid:-0}" -v b="${end:-0}" 'BEGIN {exit !(a > 0 && b > a)}'
  steps=$(query "last_over_time(pst_worker_steps_total{rank=\"$rank\"}[2m])" "$END" | awk '{print $NF}')
  check "worker rank $rank: pst_worker_steps_total = $STEPS (got $steps)" test "${steps:-x}" = $STEPS
done
for rank in 1 2; do
  steps=$(query "last_over_time(pst_optimizer_steps_total{rank=\"$rank\"}[2m])" "$END" | awk '{print $NF}')
  check "server rank $rank: pst_optimizer_steps_total = $STEPS (got $steps)" test "${steps:-x}" = $STEPS
done
losses=$(python3 - "$API" "$END" <<'EOF'
import json, sys, urllib.parse, urllib.request
api, end = sys.argv[1], float(sys.argv[2])
q = {"query": 'pst_train_loss{rank="3"}', "start": end - 120, "end": end, "step": 1}
r = json.load(urllib.request.urlopen(f"{api}/query_range?" + urllib.parse.urlencode(q), timeout=10))
vals = [float(v) for _, v in r["data"]["result"][0]["values"]] if r["data"]["result"] else []
# Only the scrapes after the first logged interval carry a loss.
vals = [v for v in vals if v != 0]
print(len(vals), vals[0] if vals else "nan", vals[-1] if vals else "nan")
EOF
)
read -r n first_loss last_loss <<<"$losses"
check "pst_train_loss was scraped at least 3 times (got $n)" test "${n:-0}" -ge 3
check "pst_train_loss is finite and falls ($first_loss -> $last_loss)" \
  awk -v a="$first_loss" -v b="$last_loss" 'BEGIN {exit !(a == a + 0 && b == b + 0 && b < a)}'
logged=$(grep '"kind":"train"' "$TMP/out/metrics.jsonl" | tail -1 | grep -o '"loss":[0-9.]*' | cut -d: -f2)
check "worker 0's last pst_train_loss equals the logged $logged (got $last_loss)" \
  awk -v a="$last_loss" -v b="${logged:-x}" 'BEGIN {d = a - b; exit !(b != "x" && d < 1e-5 && d > -1e-5)}'

# 3. Alerts. The job ended well: its targets are gone, nothing is down.
alerts() { query 'ALERTS{alertname="PstNodeDown"}' | grep -o '"alertstate": "[a-z]*"' | sort -u | tr '\n' ' '; }
sleep 8
check "no PstNodeDown after the job ended well (got: $(alerts))" test -z "$(alerts)"
check "its file_sd lists no target" python3 -c "import json, sys; sys.exit(json.load(open('$TMP/prom/targets/pst.json')) != [])"

# A second job loses a worker to kill -9: mpirun ends it, nobody retires its
# targets, and PstNodeDown fires.
rm -rf "$TMP/out2"
mpirun --oversubscribe --bind-to none -np 4 bash -c 'echo $$ > "'"$TMP"'/pid.$OMPI_COMM_WORLD_RANK"; exec "$0" "$@"' \
  "$PST" train --config "$ROOT/configs/g2p-tiny.toml" --set train.steps=1000000 --set train.log_every=20 \
  --set train.output="$TMP/out2" --set metrics.file_sd="$TMP/prom/targets/pst2.json" >"$TMP/job2.log" 2>&1 &
echo $! >"$TMP/mpirun.pid"
for _ in $(seq 1 120); do grep -q "step 40/" "$TMP/job2.log" && break; sleep 0.5; done
check "the second job trains" grep -q "step 40/" "$TMP/job2.log"
for _ in $(seq 1 20); do
  [[ $(query 'count(up{job="pst"} == 1)' | awk '{print $NF}') == 4 ]] && break
  sleep 0.5
done
kill -9 "$(cat "$TMP/pid.3")"
timeout 60 tail --pid="$(cat "$TMP/mpirun.pid")" -f /dev/null
firing=
for _ in $(seq 1 60); do
  firing=$(alerts)
  [[ $firing == *firing* ]] && break
  sleep 0.5
done
check "PstNodeDown fires after kill -9 (got: $firing)" bash -c "[[ '$firing' == *firing* ]]"

echo "prometheus_test: $passes checks passed, $failures failed (loss $first_loss -> $last_loss over $n scrapes)"
[[ $failures == 0 ]]
