// Logging goes through spdlog. init_logging() sets the pattern and level once
// per process; after that use spdlog::info/warn/error directly.
#pragma once

#include <cstdint>
#include <string>

#include <spdlog/spdlog.h>

namespace pst {

// level: trace, debug, info, warn, error, critical, off (config validation
// rejects others; here an unknown name keeps "info"). who, when not empty,
// tags every line (e.g. "worker 1"), for jobs whose processes share one
// terminal. Levels are coloured only where core/terminal.h allows it.
void init_logging(const std::string& level, const std::string& who = "");

// Warnings about what peers send (rejected messages) at a bounded rate: at
// most `burst` lines per `period_s`; the rest are counted, and the first
// line of a later period says how many were left out. A flood of bad
// messages then costs a few lines, not hundreds of thousands.
// Thread safety: one owner thread.
class WarnThrottle {
 public:
  explicit WarnThrottle(int burst = 10, double period_s = 10) : burst_(burst), period_s_(period_s) {}
  // The line to log at time `now_s` (seconds on any steady clock), with the
  // count left out before it; empty when this one is left out.
  std::string admit(const std::string& line, double now_s);
  // admit() at the steady clock's now, logged with spdlog::warn.
  void warn(const std::string& line);
  int64_t left_out() const { return left_out_; }  // in the current period

 private:
  int burst_;
  double period_s_;
  double period_start_ = -1e300;
  int in_period_ = 0;
  int64_t left_out_ = 0;
};

}  // namespace pst
