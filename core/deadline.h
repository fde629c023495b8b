// A point in time by which a blocking wait must end (docs/design.md, Errors and configuration: every
// blocking wait has a deadline).
#pragma once

#include <algorithm>
#include <chrono>
#include <climits>

namespace pst {

class Deadline {
 public:
  using Clock = std::chrono::steady_clock;

  // Waits longer than kLongest seconds (about 31 years) are taken as that
  // long: a larger count would overflow the clock's nanoseconds.
  static constexpr double kLongest = 1e9;
  static Deadline after(double seconds) {
    seconds = seconds >= 0 ? std::min(seconds, kLongest) : 0.0;  // NaN: now
    return Deadline(Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds)));
  }
  static Deadline never() { return Deadline(Clock::time_point::max()); }

  bool is_never() const { return at_ == Clock::time_point::max(); }
  bool expired() const { return !is_never() && Clock::now() >= at_; }
  // Milliseconds left, in [0, INT_MAX]; -1 for never (ZeroMQ's "no timeout").
  long remaining_ms() const {
    if (is_never()) return -1;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(at_ - Clock::now()).count();
    return static_cast<long>(std::clamp<long long>(left, 0, INT_MAX));
  }

 private:
  explicit Deadline(Clock::time_point at) : at_(at) {}
  Clock::time_point at_;
};

}  // namespace pst
