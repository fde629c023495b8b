# Sourced by the integration scripts: check NAME CONDITION... runs the
# condition and counts it in passes or failures, printing "FAIL: NAME".
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
