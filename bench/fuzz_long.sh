#!/usr/bin/env bash
# The long fuzzing run: 10^7 executions of each libFuzzer target (or of
# those FUZZ_TARGETS names), under ASan and UBSan, from the seed corpora and
# what earlier runs added (build-fuzz/corpus). Prints each target's
# executions, executions per second and new corpus units; fails on the
# first crash, leak or hang, keeping the input (scripts/fuzz).
#   bench/fuzz_long.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/fuzz -runs="${1:-10000000}"
