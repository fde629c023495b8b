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
