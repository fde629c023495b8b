#!/usr/bin/env bash
# What cluster.overlap does where the job's CPU processes share this host's
# cores (the case cluster.overlap = auto leaves it off): training tokens/s of
# g2p-small under mpirun, 1 server and WORKERS workers, with overlap off and
# on, alternated ROUNDS times in one run (bench/settings_ab.sh: each run's
# tokens/s and phases, each pair's on/off ratio and their median with its
# range).
#   bench/overlap.sh [BUILD_DIR] [STEPS] [ROUNDS] [WORKERS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
exec "$ROOT/bench/settings_ab.sh" "${1:-$ROOT/build}" "${2:-40}" "${3:-5}" "${4:-1}" cluster.overlap=off cluster.overlap=on
