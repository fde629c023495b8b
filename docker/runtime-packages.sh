#!/usr/bin/env bash
# The Debian (or Ubuntu) packages that hold the shared libraries a binary
# needs, one per line: what the runtime stage of docker/Dockerfile and
# docker/Dockerfile.cuda installs, found in the build stage of the same
# distribution. Libraries outside the package database (the CUDA runtime
# of an NVIDIA base image) are left out with a note on stderr; a library
# that cannot be found at all is an error.
#   docker/runtime-packages.sh BINARY
set -euo pipefail
bin=${1:?usage: runtime-packages.sh BINARY}
missing=$(ldd "$bin" | grep 'not found' || true)
if [[ -n $missing ]]; then
  echo "runtime-packages: $bin needs libraries that are not installed:" >&2
  echo "$missing" >&2
  exit 1
fi
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | while read -r lib; do
  # Merged /usr: ldd may name /lib/... where dpkg lists /usr/lib/... or
  # the other way round; try the path, its real path and both spellings.
  real=$(readlink -f "$lib")
  pkg=""
  for p in "$lib" "$real" "/usr$lib" "${lib#/usr}" "/usr$real" "${real#/usr}"; do
    pkg=$(dpkg -S "$p" 2>/dev/null | head -1 | cut -d: -f1) && [[ -n $pkg ]] && break
  done
  if [[ -z $pkg ]]; then
    echo "runtime-packages: $lib belongs to no package (left to the base image)" >&2
  else
    echo "$pkg"
  fi
done | sort -u
