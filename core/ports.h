// cluster.port_range: the TCP ports a process may listen on, so that
// firewalls, security groups and NetworkPolicies can name them
// (docs/operations.md, Ports).
#pragma once

#include <cerrno>
#include <functional>
#include <string>

#include "core/status.h"

namespace pst {

// An inclusive range of TCP ports; first = 0: any (an ephemeral port).
struct PortRange {
  int first = 0, last = 0;
  bool any() const { return first == 0; }
  std::string to_string() const;
};

// "FIRST-LAST" with 1 <= FIRST <= LAST <= 65535, or "" (any port).
Result<PortRange> parse_port_range(const std::string& text);

// Binds with `bind(port, &error)` on port 0 when `range` is any, else on
// each port of the range in turn until one is free: `bind` returns the
// bound object, or an error with *error = errno (or ZeroMQ's errno); only
// EADDRINUSE moves on to the next port. `what` names the socket in the
// error of a range with no free port, e.g. "server 1's ZeroMQ socket".
template <typename T>
Result<T> bind_in_range(const PortRange& range, const std::string& what,
                        const std::function<Result<T>(int port, int* error)>& bind) {
  if (range.any()) {
    int error = 0;
    return bind(0, &error);
  }
  for (int port = range.first; port <= range.last; ++port) {
    int error = 0;
    Result<T> bound = bind(port, &error);
    if (bound.ok() || error != EADDRINUSE) return bound;
  }
  return io_error("{}: every port of cluster.port_range = \"{}\" is in use ({} ports); widen the range", what,
                  range.to_string(), range.last - range.first + 1);
}

}  // namespace pst
