#!/usr/bin/env bash
# pst's TPE against Optuna's TPESampler (Debian's python3-optuna 3.1, its
# defaults) and against random search, on Branin, Hartmann-6 and Branin with
# N(0, 1) noise: per objective, the median over SEEDS seeds of the trials
# until a point's true value is within the target (BUDGET + 1 when never),
# each sampler run in this one invocation, and the pst/Optuna ratio of the
# medians with a 95% bootstrap interval.
#   bench/tune_samplers.sh [BUILD_DIR] [SEEDS] [BUDGET]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
SEEDS=${2:-20}
BUDGET=${3:-300}
if ! /usr/bin/python3 -c 'import optuna' 2>/dev/null; then
  echo "needs Debian's python3-optuna: scripts/setup --bench" >&2
  exit 1
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$BUILD/bin/tune_samplers" "$SEEDS" "$BUDGET" >"$TMP/pst.txt"
/usr/bin/python3 "$ROOT/bench/optuna_samplers.py" "$SEEDS" "$BUDGET" >"$TMP/optuna.txt"
/usr/bin/python3 - "$TMP/pst.txt" "$TMP/optuna.txt" <<'PY'
import collections, random, statistics, sys
runs = collections.defaultdict(list)
for path in sys.argv[1:]:
    for line in open(path):
        problem, sampler, _seed, n = line.split()
        runs[(problem, sampler)].append(int(n))
rng = random.Random(1)
print("%-13s %9s %9s %9s %8s  %s" % ("objective", "pst_tpe", "optuna", "random", "pst/opt", "95% bootstrap"))
for problem in sorted({p for p, _ in runs}):
    p, o, r = runs[(problem, "pst_tpe")], runs[(problem, "optuna_tpe")], runs[(problem, "pst_random")]
    ratios = sorted(statistics.median(rng.choices(p, k=len(p))) / statistics.median(rng.choices(o, k=len(o)))
                    for _ in range(2000))
    print("%-13s %9.1f %9.1f %9.1f %8.2f  [%.2f, %.2f]" % (problem, statistics.median(p), statistics.median(o),
          statistics.median(r), statistics.median(p) / statistics.median(o), ratios[50], ratios[1949]))
PY
