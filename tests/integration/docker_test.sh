#!/usr/bin/env bash
# The deployment files without a Docker engine: Debian's docker-compose
# validates and resolves docker/compose.yaml (alone and with the GPU
# override); tests/docker/lint.py checks the Dockerfiles and the resolved
# stack; docker/runtime-packages.sh finds the package of every library the
# built pst needs; and each lint rule fails on a file broken on purpose.
#   tests/integration/docker_test.sh PST_BINARY
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PST=$(readlink -f "${1:?usage: docker_test.sh PST_BINARY}")
source "$ROOT/tests/integration/check.sh"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
LINT=(python3 "$ROOT/tests/docker/lint.py" --context "$ROOT")
quiet() { "$@" >/dev/null 2>&1; }

cd "$ROOT/docker"
check "docker-compose config -q: compose.yaml" docker-compose -f compose.yaml config -q
check "docker-compose config -q: with compose.gpu.yaml" docker-compose -f compose.yaml -f compose.gpu.yaml config -q
docker-compose -f compose.yaml config >"$TMP/cpu.yml"
docker-compose -f compose.yaml -f compose.gpu.yaml config >"$TMP/gpu.yml"
PST_WORKERS=4 docker-compose -f compose.yaml config >"$TMP/four.yml"
PST_SERVERS=3 docker-compose -f compose.yaml config >"$TMP/three.yml"
cd "$ROOT"
check "lint: Dockerfiles and the resolved stacks are clean" \
  "${LINT[@]}" --compose "$TMP/cpu.yml" --compose "$TMP/gpu.yml" --compose "$TMP/four.yml" \
  --compose "$TMP/three.yml" docker/Dockerfile docker/Dockerfile.cuda
check "PST_WORKERS=4 gives 4 workers and cluster.workers = 4" \
  [ "$(grep -c '^worker-' <(python3 tests/docker/compose_roles.py "$TMP/four.yml" docker/Dockerfile))" == 4 ]
check "PST_SERVERS=3 gives 3 servers" \
  [ "$(grep -c '^server-' <(python3 tests/docker/compose_roles.py "$TMP/three.yml" docker/Dockerfile))" == 3 ]
check "the GPU override gives workers the CUDA image and a GPU" \
  python3 -c "import yaml,sys; w=yaml.safe_load(open(sys.argv[1]))['services']['worker']; \
assert w['image']=='pst:cuda' and w['deploy']['resources']['reservations']['devices'][0]['capabilities']==['gpu']" "$TMP/gpu.yml"
# Every setting the stack passes is one pst knows (a typo is an error that
# names the variable).
mapfile -t envs < <(python3 tests/docker/compose_roles.py "$TMP/cpu.yml" docker/Dockerfile --env scheduler)
check "pst resolves the stack's settings (pst params reads the same variables)" \
  quiet env -i PATH=/usr/bin:/bin "${envs[@]}" "$PST" params --config configs/g2p-small.toml
out=$(env -i PATH=/usr/bin:/bin PST_TRAIN_STEPZ=1 "$PST" train --config configs/g2p-tiny.toml 2>&1 || true)
check "a misspelt variable is named" grep -q "PST_TRAIN_STEPZ: unknown key 'stepz'" <<<"$out"

# runtime-packages.sh on the binary the tests use.
docker/runtime-packages.sh "$PST" >"$TMP/packages.txt" 2>"$TMP/packages.err"
for p in libzmq5 libcapnp-0.9.2 libopenmpi3 libprometheus-cpp-core1.0 libxxhash0 libspdlog1.10; do
  check "runtime packages include $p" grep -qx "$p" "$TMP/packages.txt"
done
check "every library outside dpkg is CUDA's" \
  [ "$(grep -v 'cuda' "$TMP/packages.err" | grep -c 'belongs to no package' || true)" == 0 ]

# Each rule catches what it is for: a copy of a file, broken one way.
# mutate NAME RULE FILE SED-EXPRESSION [compose]
mutate() {
  local name=$1 rule=$2 file=$3 expr=$4 kind=${5:-dockerfile}
  sed -e "$expr" "$file" >"$TMP/mutant"
  if cmp -s "$file" "$TMP/mutant"; then
    check "mutation '$name' changes the file" false
    return
  fi
  local out
  if [[ $kind == compose ]]; then
    out=$("${LINT[@]}" --compose "$TMP/mutant" 2>&1 || true)
  else
    cp "$TMP/mutant" "$ROOT/docker/.lint-mutant"
    out=$("${LINT[@]}" docker/.lint-mutant 2>&1 || true)
    rm -f "$ROOT/docker/.lint-mutant"
  fi
  check "lint catches $name [$rule]" grep -q "\[$rule\]" <<<"$out"
}
mutate "no USER" user docker/Dockerfile '/^USER /d'
mutate "USER root" user docker/Dockerfile 's/^USER pst/USER root/'
mutate "an untagged base" from-tag docker/Dockerfile 's/^FROM debian:12-slim$/FROM debian/'
mutate "a :latest base" from-tag docker/Dockerfile.cuda 's/runtime-ubuntu24.04/latest/; s/nvidia\/cuda:12.6.3-latest/nvidia\/cuda:latest/'
mutate "a CUDA 13 base" cuda-base docker/Dockerfile.cuda 's/cuda:12.6.3-/cuda:13.0.0-/g'
mutate "stages of two CUDA releases" cuda-base docker/Dockerfile.cuda 's/cuda:12.6.3-runtime/cuda:12.4.1-runtime/'
mutate "install with recommends" apt docker/Dockerfile 's/ --no-install-recommends//'
mutate "apt lists kept" apt docker/Dockerfile 's|rm -rf /var/lib/apt/lists/\* /tmp|rm -rf /tmp|'
mutate "no HEALTHCHECK" healthcheck docker/Dockerfile '/^HEALTHCHECK/d'
mutate "a health port that is not served" healthcheck docker/Dockerfile 's/127.0.0.1:9100/127.0.0.1:9200/'
mutate "shell-form ENTRYPOINT" exec-form docker/Dockerfile 's/^ENTRYPOINT .*/ENTRYPOINT pst/'
mutate "ADD" no-add docker/Dockerfile 's/^COPY configs /ADD configs /'
mutate "a missing source" copy-source docker/Dockerfile 's/^COPY configs /COPY confs /'
mutate "an unknown stage" copy-from docker/Dockerfile 's/--from=build \/build\/bin/--from=builder \/build\/bin/'
mutate "no runtime package list" runtime-libs docker/Dockerfile 's/runtime-packages.sh/true/'
mutate "a relative WORKDIR" workdir docker/Dockerfile 's/^WORKDIR \/opt\/pst/WORKDIR opt/'
mutate "the servers with other job settings" compose-env "$TMP/cpu.yml" \
  '/^  server:/,/^  [a-z]/ s/PST_TRAIN_STEPS: .7000./PST_TRAIN_STEPS: "7001"/' compose
mutate "cluster.workers unlike the replicas" compose-roles "$TMP/cpu.yml" '/^  worker:/,/^  [a-z]/ s/replicas: 2/replicas: 3/' compose
mutate "a server aimed elsewhere" compose-roles "$TMP/cpu.yml" '0,/tcp:\/\/scheduler:5555/ s//tcp:\/\/scheduler:5556/' compose
mutate "servers that do not restart" compose-restart "$TMP/cpu.yml" \
  '/^  server:/,/^  [a-z]/ s/restart: on-failure:3/restart: "no"/' compose
mutate "workers that do not restart" compose-restart "$TMP/cpu.yml" \
  '/^  worker:/,/^  [a-z]/ s/restart: on-failure:3/restart: "no"/' compose
mutate "cluster.servers unlike the server replicas" compose-roles "$TMP/cpu.yml" \
  '/^  server:/,/^  [a-z]/ s/replicas: 2/replicas: 3/' compose
mutate "workers without a memory limit" compose-limits "$TMP/cpu.yml" \
  '/^  worker:/,/^  [a-z]/ { /memory: 4g/d }' compose
mutate "a key file that is no secret" compose-volumes "$TMP/cpu.yml" \
  '/^  server:/,/^  [a-z]/ s|/run/secrets/pst_curve_key|/opt/pst/key|' compose

echo "docker_test: $passes checks passed, $failures failed"
[[ $failures -eq 0 ]]
