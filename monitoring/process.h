// The process metrics every Prometheus client exports under the same names
// (process_cpu_seconds_total, process_resident_memory_bytes, ...), read from
// Linux's /proc at each scrape: what an operator's dashboards and alerts
// already expect of any process (docs/operations.md, Metrics).
#pragma once

#include <cstdint>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "core/status.h"

namespace pst {

struct ProcessStats {
  double cpu_seconds = 0;      // user + system time of every thread
  double start_time = 0;       // Unix time the process started
  int64_t resident_bytes = 0;  // resident set size
  int64_t virtual_bytes = 0;   // virtual memory size
  int64_t open_fds = 0;        // open file descriptors
  int64_t max_fds = 0;         // the soft limit on them (RLIMIT_NOFILE)
};

// This process's figures from /proc/self/stat, /proc/stat (boot time) and
// /proc/self/fd.
Result<ProcessStats> read_process_stats();

// The process_* series in a registry; update() refreshes them (before each
// scrape). Not thread-safe: one caller (the metrics thread).
class ProcessMetrics {
 public:
  explicit ProcessMetrics(prometheus::Registry& r);
  void update();

 private:
  prometheus::Counter& cpu_;
  prometheus::Gauge& start_;
  prometheus::Gauge& resident_;
  prometheus::Gauge& virtual_;
  prometheus::Gauge& open_fds_;
  prometheus::Gauge& max_fds_;
  double cpu_counted_ = 0;
};

}  // namespace pst
