#!/usr/bin/env bash
# pst tune with real pst train processes (docs/tuning.md):
#  1. a TPE study with ASHA, two trials at a time: every trial in the journal
#     once, each figure the one its metrics.jsonl shows, every stop and every
#     go-on the rule applied to the journal's figures in their order (an
#     oracle in Python), /metrics with pst_tune_*, results, best.toml that
#     pst accepts with the best trial's values, trial 0 the base job's own
#     values, plots, report;
#  2. a second start into the same folder is refused;
#  3. SIGINT mid-trial, then --resume: the unfinished trial runs again with
#     its point, no finished trial runs twice, no trial is lost; SIGKILL of
#     the tuner ends its trial too, and --resume reruns it;
#  4. a grid of trials under mpirun, one of which the job file refuses (a
#     failed trial that names why), and a launch command with placeholders.
# Usage: tune_test.sh PATH_TO_PST
set -uo pipefail
PST=$(realpath "$1")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d)
STARTED=()
cleanup() {
  for pid in "${STARTED[@]}"; do kill -9 "$pid" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
unset OMP_NUM_THREADS
source "$(dirname "$0")/check.sh"
cd "$TMP" || exit 1
TINY="$ROOT/configs/g2p-tiny.toml"

# 1. TPE + ASHA, 2 at a time, the loss as the objective (no ties).
cat >a.toml <<TOML
[study]
base = "$TINY"
dir = "$TMP/a"
metric = "loss"
sampler = "tpe"
trials = 8
parallel = 2
seed = 3
baseline = true
set = ["train.steps=120", "data.eval_max_examples=32", "train.log_every=40"]
metrics_port = 0
[tpe]
startup_trials = 4
[asha]
min_steps = 30
reduction = 2
[space]
"optim.lr" = { type = "log_uniform", low = 1e-4, high = 1e-2 }
"data.batch_size" = { type = "int", low = 16, high = 64, step = 16 }
"schedule.kind" = { type = "choice", values = ["constant", "cosine"] }
"schedule.min_lr" = { type = "log_uniform", low = 1e-6, high = 1e-4, when = { "schedule.kind" = "cosine" } }
TOML
"$PST" tune --study a.toml >a.log 2>&1 &
pid=$!
STARTED+=("$pid")
for _ in $(seq 1 600); do grep -q "/metrics at http" a.log && break; sleep 0.1; done
endpoint=$(grep -o "http://[0-9.:]*/metrics" a.log | head -1)
python3 - "$endpoint" >metrics.txt 2>&1 <<'PY'
import sys, time, urllib.request
for _ in range(100):
    body = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
    if 'pst_tune_trials{state="running"} 2' in body:
        break
    time.sleep(0.1)
print(body)
PY
check "the tuner's /metrics shows two trials running" contains metrics.txt 'pst_tune_trials{state="running"} 2'
timeout 500 tail --pid="$pid" -f /dev/null
wait "$pid"
rc=$?
check "the study ends well (rc $rc)" test "$rc" = 0
check "the console shows the best so far" contains a.log "best of 8 complete trials\|best of [0-9] complete trials"
python3 - "$TMP/a" >a-oracle.txt 2>&1 <<'PY'
import json, math, os, sys
d = sys.argv[1]
events = [json.loads(l) for l in open(os.path.join(d, "journal.jsonl"))]
starts = [e for e in events if e["event"] == "start"]
ends = {e["trial"]: e for e in events if e["event"] == "end"}
assert sorted(e["trial"] for e in starts) == list(range(8)), starts
assert sorted(ends) == list(range(8)), ends
# The rule, replayed over the journal's reports in their order.
rungs = {}
stopped = set()
for e in events:
    if e["event"] != "report":
        continue
    at = rungs.setdefault(e["rung"], {})
    at[e["trial"]] = e["value"]
    n = len(at)
    better = sum(1 for v in at.values() if v < e["value"])
    goes_on = n < 2 or better < n // 2
    if not goes_on and e["trial"] != 0:  # (the baseline is never stopped)
        stopped.add(e["trial"])
    assert e["step"] == 30 * 2 ** e["rung"], e
pruned = {t for t, e in ends.items() if e["state"] == "pruned"}
assert pruned == stopped, (pruned, stopped)
for t, e in ends.items():
    rows = [json.loads(l) for l in open(os.path.join(d, "trials", "%04d" % t, "metrics.jsonl"))]
    valid = [r for r in rows if r["kind"] == "valid"]
    if e["state"] == "complete":
        assert abs(valid[-1]["loss"] - e["value"]) < 1e-12 and valid[-1]["step"] == 120, (t, valid[-1], e)
        assert not any(r["kind"] == "test" for r in rows), "trials skip the test split"
    elif e["state"] == "pruned":
        last = [r for r in events if r["event"] == "report" and r["trial"] == t][-1]
        assert e["value"] == last["value"] and e["step"] == last["step"], (e, last)
        assert valid[-1]["step"] < 120, "a pruned trial stops before its last step"
    else:
        raise AssertionError(e)
# Trial 0 is the base job's own values (g2p-tiny: lr 3e-3, batch 64, constant), run to its end.
assert ends[0]["state"] == "complete", ends[0]
assert starts[0]["trial"] == 0 and starts[0]["params"] == {"optim.lr": 0.003, "data.batch_size": 64,
                                                            "schedule.kind": "constant"}, starts[0]
results = [json.loads(l) for l in open(os.path.join(d, "results.jsonl"))]
best = min((r for r in results if r["state"] == "complete"), key=lambda r: r["loss"])
print("best", best["trial"], best["params"]["optim.lr"], best["params"]["data.batch_size"])
print("pruned", len(pruned))
PY
check "journal, figures and ASHA's decisions agree (oracle)" grep -q "^best" a-oracle.txt || cat a-oracle.txt
read -r _ best_trial best_lr best_batch < <(grep "^best" a-oracle.txt)
check "results.csv has a row per trial" test "$(tail -n +2 a/results.csv | wc -l)" = 8
check "best.toml is a job file pst accepts" "$PST" config show --config a/best.toml >best.txt 2>&1
check "with the best trial's batch size" contains best.txt "^batch_size = $best_batch\$"
check "best.toml names its trial" contains a/best.toml "the best trial ($best_trial)"
lr_in_best=$(grep -m1 "^lr = " best.txt | sed 's/lr = //')
check "and its learning rate ($lr_in_best vs $best_lr)" python3 -c "assert abs($lr_in_best - $best_lr) <= 1e-12 * $best_lr"
check "best.toml writes elsewhere than the trials" contains best.txt "^output = \"$TMP/a/best\"\$"
for key in optim.lr data.batch_size schedule.kind schedule.min_lr; do
  check "plot of $key is a PNG" python3 -c "assert open('a/plots/$key.png','rb').read(8) == b'\x89PNG\r\n\x1a\n'"
done
check "report.md ranks the keys" contains a/report.md "## Importance"
check "and compares the best with the baseline" contains a/report.md "The baseline (trial 0, the base job's own values)"

# 2. The same study file again: its folder holds a study.
check "a second start into the folder is refused" test "$(timeout 60 "$PST" tune --study a.toml >again.log 2>&1; echo $?)" = 2
check "naming --resume" contains again.log "holds a study already: .pst tune --resume"

# 3. SIGINT during a trial; --resume runs it again and the rest, each once.
cat >b.toml <<TOML
[study]
base = "$TINY"
dir = "$TMP/b"
metric = "loss"
sampler = "random"
trials = 3
set = ["train.steps=300", "data.eval_max_examples=16", "train.log_every=20", "train.eval_every=100"]
[space]
"optim.lr" = { type = "log_uniform", low = 1e-4, high = 1e-2 }
TOML
"$PST" tune --study b.toml >b.log 2>&1 &
pid=$!
STARTED+=("$pid")
for _ in $(seq 1 900); do grep -q '"kind":"train"' b/trials/0001/metrics.jsonl 2>/dev/null && break; sleep 0.1; done
kill -INT "$pid"
timeout 200 tail --pid="$pid" -f /dev/null
wait "$pid"
rc=$?
check "an interrupted study exits 130 (got $rc)" test "$rc" = 130
check "it names --resume" contains b.log "pst tune --resume $TMP/b"
check "its trial's process has ended" test -z "$(pgrep -f "$TMP/b/trials" || true)"
check "trial 1 started and did not end" python3 -c "
import json
ev = [json.loads(l) for l in open('b/journal.jsonl')]
assert any(e['event'] == 'start' and e['trial'] == 1 for e in ev)
assert not any(e['event'] == 'end' and e['trial'] == 1 for e in ev)"
check "resume" timeout 400 "$PST" tune --resume "$TMP/b" >b2.log 2>&1
check "it says the trial runs again" contains b2.log "1 trials that did not finish run again"
check "every trial ended once, trial 1 ran twice with one point" python3 -c "
import json
ev = [json.loads(l) for l in open('b/journal.jsonl')]
ends = sorted(e['trial'] for e in ev if e['event'] == 'end')
assert ends == [0, 1, 2], ends
assert all(e['state'] == 'complete' for e in ev if e['event'] == 'end')
s1 = [e['params'] for e in ev if e['event'] == 'start' and e['trial'] == 1]
assert len(s1) == 2 and s1[0] == s1[1], s1
assert [e['trial'] for e in ev if e['event'] == 'start'].count(0) == 1"

# A tuner killed at once (SIGKILL) takes its trial with it (the trial's
# parent-death signal); --resume runs that trial again.
sed -e "s#$TMP/b#$TMP/e#" -e 's/trials = 3/trials = 1/' b.toml >e.toml
"$PST" tune --study e.toml >e.log 2>&1 &
pid=$!
STARTED+=("$pid")
for _ in $(seq 1 900); do grep -q '"kind":"train"' e/trials/0000/metrics.jsonl 2>/dev/null && break; sleep 0.1; done
kill -9 "$pid"
wait "$pid" 2>/dev/null
for _ in $(seq 1 300); do [[ -z "$(pgrep -f "$TMP/e/trials" || true)" ]] && break; sleep 0.1; done
check "the trial of a killed tuner ends too" test -z "$(pgrep -f "$TMP/e/trials" || true)"
check "resume after kill -9" timeout 300 "$PST" tune --resume "$TMP/e" >e2.log 2>&1
check "the killed trial ran again and ended once" python3 -c "
import json
ev = [json.loads(l) for l in open('e/journal.jsonl')]
assert [e['trial'] for e in ev if e['event'] == 'start'] == [0, 0], ev
assert [(e['trial'], e['state']) for e in ev if e['event'] == 'end'] == [(0, 'complete')], ev"

# 4. A grid under mpirun (1 scheduler + 1 server + 1 worker per trial): heads
#    = 3 does not divide d_model = 64, so that trial fails and says why.
cat >c.toml <<TOML
[study]
base = "$TINY"
dir = "$TMP/c"
sampler = "grid"
trials = 10
launch = "mpirun"
set = ["train.steps=20", "data.eval_max_examples=8", "train.threads=1"]
[space]
"model.heads" = { type = "choice", values = [4, 3] }
TOML
check "a grid under mpirun" timeout 400 "$PST" tune --study c.toml >c.log 2>&1
check "the grid has 2 points" contains c.log "the grid has 2 points"
check "heads = 4 completes under mpirun" python3 -c "
import json
r = {x['params']['model.heads']: x for x in map(json.loads, open('c/results.jsonl'))}
assert r['4']['state'] == 'complete', r
assert r['3']['state'] == 'failed' and 'heads' in r['3']['error'], r"
check "the trial ran as 3 ranks" contains c/trials/0001/log.txt "1 scheduler, 1 servers, 1 workers"

cat >d.toml <<TOML
[study]
base = "$TINY"
dir = "$TMP/d"
sampler = "halton"
trials = 1
launch = "command"
command = ["env", "PST_TRAIN_LOG_EVERY=10", "{pst}", "train", "--config", "{config}", "--set", "train.output={dir}"]
set = ["train.steps=20", "data.eval_max_examples=8"]
[space]
"optim.lr" = { type = "uniform", low = 0.001, high = 0.002 }
TOML
check "a launch command" timeout 200 "$PST" tune --study d.toml >d.log 2>&1
check "its placeholders were filled" contains d/trials/0000/log.txt "step 10"
check "and its trial completed" contains d/results.csv "^0,complete,"

echo "tune_test: $passes passed, $failures failed"
exit $((failures > 0))
