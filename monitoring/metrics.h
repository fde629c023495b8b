// Prometheus metrics of a pst process (docs/operations.md, Metrics), served on /metrics
// through prometheus-cpp. One MetricsServer per process owns the HTTP
// endpoint and the registry; the scheduler, each server and each worker of
// the process add their series to it with labels role, rank and (servers)
// shard, so a process that plays several roles (threads of one process)
// still exposes one consistent set. Base units only: seconds, bytes.
//
// Thread safety: prometheus-cpp metrics are safe to update from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "core/config.h"
#include "core/ports.h"
#include "core/status.h"
#include "monitoring/process.h"

namespace pst {

// Every metric family pst exports, created once per registry.
struct MetricFamilies {
  explicit MetricFamilies(prometheus::Registry& r);

  prometheus::Family<prometheus::Gauge>& build_info;
  // Workers.
  prometheus::Family<prometheus::Counter>& worker_steps;
  prometheus::Family<prometheus::Counter>& tokens;
  prometheus::Family<prometheus::Gauge>& last_step_timestamp;
  prometheus::Family<prometheus::Gauge>& train_loss;
  prometheus::Family<prometheus::Gauge>& eval_loss;
  prometheus::Family<prometheus::Gauge>& learning_rate;
  prometheus::Family<prometheus::Gauge>& grad_norm;
  prometheus::Family<prometheus::Histogram>& step_duration;
  prometheus::Family<prometheus::Histogram>& phase_duration;
  prometheus::Family<prometheus::Gauge>& gpu_memory_used;
  prometheus::Family<prometheus::Gauge>& gpu_memory_total;
  // Servers.
  prometheus::Family<prometheus::Counter>& optimizer_steps;
  prometheus::Family<prometheus::Counter>& skipped_steps;
  prometheus::Family<prometheus::Counter>& clipped_steps;
  prometheus::Family<prometheus::Histogram>& request_duration;
  prometheus::Family<prometheus::Histogram>& update_duration;
  prometheus::Family<prometheus::Counter>& transport_bytes;
  prometheus::Family<prometheus::Counter>& rejected;
  prometheus::Family<prometheus::Histogram>& staleness;
  prometheus::Family<prometheus::Histogram>& checkpoint_duration;
  prometheus::Family<prometheus::Gauge>& last_checkpoint;
  prometheus::Family<prometheus::Counter>& checkpoint_failures;
  // Scheduler.
  prometheus::Family<prometheus::Gauge>& cluster_members;
  prometheus::Family<prometheus::Counter>& node_failures;
  prometheus::Family<prometheus::Counter>& job_reforms;
  // pst tune.
  prometheus::Family<prometheus::Gauge>& tune_trials;
  prometheus::Family<prometheus::Gauge>& tune_best;
};

using Labels = std::map<std::string, std::string>;

// The series of one worker.
class WorkerMetrics {
 public:
  WorkerMetrics(MetricFamilies& f, int rank);
  enum Phase { kForward, kBackward, kPush, kPull, kWait, kPhases };
  void observe_phase(Phase p, double seconds) { phase_[p]->Observe(seconds); }
  // After each step.
  void step_done(int64_t tokens, double seconds, double lr, double grad_norm);
  // The mean loss of the last logged interval (the value the log prints).
  void set_train_loss(double loss) { train_loss_.Set(loss); }
  void set_eval_loss(double loss) { eval_loss_.Set(loss); }
  // The memory of the GPU the worker computes on (used by all its
  // processes, and its size), labelled with the device's index.
  void set_gpu_memory(int device, int64_t used_bytes, int64_t total_bytes);

 private:
  prometheus::Counter& steps_;
  prometheus::Counter& tokens_;
  prometheus::Gauge& last_step_;
  prometheus::Gauge& train_loss_;
  prometheus::Gauge& eval_loss_;
  prometheus::Gauge& lr_;
  prometheus::Gauge& grad_norm_;
  prometheus::Histogram& step_duration_;
  prometheus::Histogram* phase_[kPhases];
  MetricFamilies& f_;
  Labels labels_;
};

// The series of one parameter server (shard = its index among the servers).
class ServerMetrics {
 public:
  ServerMetrics(MetricFamilies& f, int rank, int shard);
  void update_done(double seconds, bool applied, bool clipped);
  void request(const char* op, double seconds);  // op: push | pull
  void bytes_in(int64_t n) { in_.Increment(static_cast<double>(n)); }
  void bytes_out(int64_t n) { out_.Increment(static_cast<double>(n)); }
  void rejected(const char* reason);
  void staleness(int64_t steps) { staleness_.Observe(static_cast<double>(steps)); }
  // A checkpoint file written in `seconds` (server 0: its manifest too).
  void checkpoint_done(double seconds) {
    checkpoint_.Observe(seconds);
    last_checkpoint_.SetToCurrentTime();
  }
  void checkpoint_failed() { checkpoint_failures_.Increment(); }

 private:
  MetricFamilies& f_;
  Labels labels_;
  prometheus::Counter& steps_;
  prometheus::Counter& skipped_;
  prometheus::Counter& clipped_;
  prometheus::Histogram& update_;
  prometheus::Histogram& push_;
  prometheus::Histogram& pull_;
  prometheus::Counter& in_;
  prometheus::Counter& out_;
  prometheus::Histogram& staleness_;
  prometheus::Histogram& checkpoint_;
  prometheus::Gauge& last_checkpoint_;
  prometheus::Counter& checkpoint_failures_;
};

// The scheduler's view of the cluster.
class SchedulerMetrics {
 public:
  SchedulerMetrics(MetricFamilies& f, int rank);
  void set_members(const char* role, int64_t n) { f_.cluster_members.Add(with(role)).Set(static_cast<double>(n)); }
  void failure(const char* role) { f_.node_failures.Add(with(role)).Increment(); }
  void reformed() { f_.job_reforms.Add(labels_).Increment(); }
  void rejected(const char* reason);

 private:
  Labels with(const char* role) const;
  MetricFamilies& f_;
  Labels labels_;
};

// One per process: the /metrics endpoint and the registry behind it. The
// HTTP side is a small server of pst's own on one thread (GET /metrics in
// Prometheus's text format through prometheus-cpp's serializer, GET
// /healthz): prometheus-cpp's Exposer starts civetweb threads with 100 KiB
// stacks, which cannot hold the static TLS of OpenBLAS and cuBLAS, so
// pthread_create fails in the pst binary. Connections are served together,
// non-blocking, each within kRequestSeconds from its accept and at most
// kMaxConnections at once (the oldest is dropped for a new one), so slow or
// idle clients cannot hold up a scrape.
class MetricsServer {
 public:
  // Binds metrics.bind at metrics.port + rank, or when metrics.port = 0 at
  // the first free port of `ephemeral` (cluster.port_range; any: an
  // ephemeral port). backend: "cpu" or "cuda", for pst_build_info.
  // advertise: the address endpoint() names, if not metrics.bind (which
  // may be 0.0.0.0).
  static Result<std::unique_ptr<MetricsServer>> start(const MetricsConfig& config, int rank, const std::string& backend,
                                                      const std::string& advertise = "",
                                                      const PortRange& ephemeral = {});
  ~MetricsServer();

  // host:port where /metrics is served.
  const std::string& endpoint() const { return endpoint_; }
  // /healthz answers 503 ("starting") until this is called, then 200 ("ok"):
  // a process is ready once it has passed the job's rendezvous.
  void set_ready() { ready_ = true; }
  MetricFamilies& families() { return *families_; }

 private:
  static constexpr double kRequestSeconds = 5;
  static constexpr size_t kMaxConnections = 64;
  MetricsServer() = default;
  void serve();
  // The whole HTTP answer to a request (its head, up to the blank line).
  std::string answer(const std::string& request) const;

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<MetricFamilies> families_;
  std::unique_ptr<ProcessMetrics> process_;  // refreshed at each scrape
  int listen_fd_ = -1;
  std::atomic<bool> stop_{false}, ready_{false};
  std::thread thread_;
  std::string endpoint_;
};

// An HTTP GET of http://HOST:PORT/path (HTTP/1.0, IPv4), bounded by
// `seconds` in all and by kMaxHttpAnswerBytes of answer: the status code and
// body. For `pst health` and tests.
inline constexpr size_t kMaxHttpAnswerBytes = size_t{16} << 20;
struct HttpAnswer {
  int status = 0;
  std::string body;
};
Result<HttpAnswer> http_get(const std::string& endpoint, const std::string& path, double seconds);

// A Prometheus file_sd target: the endpoint of a process and its role.
struct ScrapeTarget {
  std::string endpoint;  // host:port
  std::string role;      // scheduler | server | worker | process (several roles)
  int rank = 0;
};

// Writes the file_sd JSON listing every target, atomically (temp + rename),
// so that one scrape config finds the whole job whatever S and W are.
Status write_file_sd(const std::string& path, const std::vector<ScrapeTarget>& targets, uint64_t job_id);

}  // namespace pst
