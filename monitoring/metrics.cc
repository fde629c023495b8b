#include "monitoring/metrics.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <prometheus/text_serializer.h>
#include <nlohmann/json.hpp>

#include "core/deadline.h"
#include "core/version.h"

namespace pst {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

// Seconds, from 100 us to about 100 s, a factor of ~2.15 apart.
Histogram::BucketBoundaries seconds_buckets() {
  Histogram::BucketBoundaries b;
  for (double v = 1e-4; v < 200; v *= 2.154434690031884) b.push_back(v);
  return b;
}

Labels node_labels(const char* role, int rank) { return {{"role", role}, {"rank", std::to_string(rank)}}; }

Labels with(Labels l, const std::string& key, const std::string& value) {
  l[key] = value;
  return l;
}

}  // namespace

MetricFamilies::MetricFamilies(prometheus::Registry& r)
    : build_info(
          BuildGauge().Name("pst_build_info").Help("pst's version, git commit and backend (value 1)").Register(r)),
      worker_steps(BuildCounter().Name("pst_worker_steps_total").Help("Training steps a worker finished").Register(r)),
      tokens(BuildCounter().Name("pst_tokens_total").Help("Target tokens a worker trained on").Register(r)),
      last_step_timestamp(BuildGauge()
                              .Name("pst_last_step_timestamp_seconds")
                              .Help("Unix time at which a worker finished its last step")
                              .Register(r)),
      train_loss(BuildGauge()
                     .Name("pst_train_loss")
                     .Help("Mean training loss per token over the last logged interval")
                     .Register(r)),
      eval_loss(
          BuildGauge().Name("pst_eval_loss").Help("Validation loss per token of the last evaluation").Register(r)),
      learning_rate(BuildGauge().Name("pst_learning_rate").Help("Learning rate of the last step").Register(r)),
      grad_norm(BuildGauge()
                    .Name("pst_grad_norm")
                    .Help("Global gradient norm of the last step, before clipping")
                    .Register(r)),
      step_duration(
          BuildHistogram().Name("pst_step_duration_seconds").Help("Wall time of a worker's step").Register(r)),
      phase_duration(BuildHistogram()
                         .Name("pst_phase_duration_seconds")
                         .Help("Wall time of a phase of a worker's step (forward, backward, push, pull, wait)")
                         .Register(r)),
      gpu_memory_used(BuildGauge()
                          .Name("pst_gpu_memory_used_bytes")
                          .Help("Memory in use on a worker's GPU, by every process (label device)")
                          .Register(r)),
      gpu_memory_total(
          BuildGauge().Name("pst_gpu_memory_total_bytes").Help("Memory of a worker's GPU (label device)").Register(r)),
      optimizer_steps(BuildCounter()
                          .Name("pst_optimizer_steps_total")
                          .Help("Optimizer steps a server applied to its shard")
                          .Register(r)),
      skipped_steps(
          BuildCounter().Name("pst_skipped_steps_total").Help("Steps a server skipped, by reason").Register(r)),
      clipped_steps(BuildCounter()
                        .Name("pst_grad_clipped_steps_total")
                        .Help("Steps whose gradient was scaled down by clipping")
                        .Register(r)),
      request_duration(BuildHistogram()
                           .Name("pst_ps_request_duration_seconds")
                           .Help("Server time from a request's arrival to its answer, by op")
                           .Register(r)),
      update_duration(BuildHistogram()
                          .Name("pst_ps_update_duration_seconds")
                          .Help("Server time of one update (aggregation, statistics, optimizer, snapshot)")
                          .Register(r)),
      transport_bytes(BuildCounter()
                          .Name("pst_transport_bytes_total")
                          .Help("Tensor bytes a server received (in) and sent (out)")
                          .Register(r)),
      rejected(BuildCounter()
                   .Name("pst_messages_rejected_total")
                   .Help("Messages a server or the scheduler rejected, by reason")
                   .Register(r)),
      staleness(BuildHistogram()
                    .Name("pst_gradient_staleness_steps")
                    .Help("Versions applied between the weights a push was computed on and its update")
                    .Register(r)),
      checkpoint_duration(BuildHistogram()
                              .Name("pst_checkpoint_duration_seconds")
                              .Help("Time a server took to write its checkpoint file (server 0: and the manifest)")
                              .Register(r)),
      last_checkpoint(BuildGauge()
                          .Name("pst_last_checkpoint_timestamp_seconds")
                          .Help("Unix time of the last checkpoint a server wrote")
                          .Register(r)),
      checkpoint_failures(BuildCounter()
                              .Name("pst_checkpoint_failures_total")
                              .Help("Checkpoints a server could not complete (its file, or server 0: the manifest); "
                                    "the previous checkpoint stays the latest")
                              .Register(r)),
      cluster_members(BuildGauge()
                          .Name("pst_cluster_members")
                          .Help("Members of the job: nodes registered and neither finished nor removed, by role")
                          .Register(r)),
      node_failures(BuildCounter().Name("pst_node_failures_total").Help("Nodes judged dead, by role").Register(r)),
      job_reforms(BuildCounter()
                      .Name("pst_job_reforms_total")
                      .Help("Times the job re-formed from its newest checkpoint after a server was lost")
                      .Register(r)),
      tune_trials(BuildGauge()
                      .Name("pst_tune_trials")
                      .Help("Trials of a pst tune study, by state (running, complete, pruned, failed)")
                      .Register(r)),
      tune_best(BuildGauge()
                    .Name("pst_tune_best_value")
                    .Help("The best objective a pst tune study has seen (label metric: its name)")
                    .Register(r)) {}

WorkerMetrics::WorkerMetrics(MetricFamilies& f, int rank)
    : steps_(f.worker_steps.Add(node_labels("worker", rank))),
      tokens_(f.tokens.Add(node_labels("worker", rank))),
      last_step_(f.last_step_timestamp.Add(node_labels("worker", rank))),
      train_loss_(f.train_loss.Add(node_labels("worker", rank))),
      eval_loss_(f.eval_loss.Add(node_labels("worker", rank))),
      lr_(f.learning_rate.Add(node_labels("worker", rank))),
      grad_norm_(f.grad_norm.Add(node_labels("worker", rank))),
      step_duration_(f.step_duration.Add(node_labels("worker", rank), seconds_buckets())),
      f_(f),
      labels_(node_labels("worker", rank)) {
  static const char* const kNames[kPhases] = {"forward", "backward", "push", "pull", "wait"};
  for (int p = 0; p < kPhases; ++p)
    phase_[p] = &f.phase_duration.Add(with(node_labels("worker", rank), "phase", kNames[p]), seconds_buckets());
}

void WorkerMetrics::step_done(int64_t tokens, double seconds, double lr, double grad_norm) {
  steps_.Increment();
  tokens_.Increment(static_cast<double>(tokens));
  step_duration_.Observe(seconds);
  lr_.Set(lr);
  grad_norm_.Set(grad_norm);
  last_step_.SetToCurrentTime();
}

void WorkerMetrics::set_gpu_memory(int device, int64_t used_bytes, int64_t total_bytes) {
  const Labels l = with(labels_, "device", std::to_string(device));
  f_.gpu_memory_used.Add(l).Set(static_cast<double>(used_bytes));
  f_.gpu_memory_total.Add(l).Set(static_cast<double>(total_bytes));
}

ServerMetrics::ServerMetrics(MetricFamilies& f, int rank, int shard)
    : f_(f),
      labels_(with(node_labels("server", rank), "shard", std::to_string(shard))),
      steps_(f.optimizer_steps.Add(labels_)),
      skipped_(f.skipped_steps.Add(with(labels_, "reason", "nonfinite"))),
      clipped_(f.clipped_steps.Add(labels_)),
      update_(f.update_duration.Add(labels_, seconds_buckets())),
      push_(f.request_duration.Add(with(labels_, "op", "push"), seconds_buckets())),
      pull_(f.request_duration.Add(with(labels_, "op", "pull"), seconds_buckets())),
      in_(f.transport_bytes.Add(with(labels_, "direction", "in"))),
      out_(f.transport_bytes.Add(with(labels_, "direction", "out"))),
      staleness_(f.staleness.Add(labels_, Histogram::BucketBoundaries{0, 1, 2, 4, 8, 16, 32, 64})),
      checkpoint_(f.checkpoint_duration.Add(labels_, seconds_buckets())),
      last_checkpoint_(f.last_checkpoint.Add(labels_)),
      checkpoint_failures_(f.checkpoint_failures.Add(labels_)) {}

void ServerMetrics::update_done(double seconds, bool applied, bool clipped) {
  update_.Observe(seconds);
  if (applied) {
    steps_.Increment();
  } else {
    skipped_.Increment();
  }
  if (clipped) clipped_.Increment();
}

void ServerMetrics::request(const char* op, double seconds) {
  (std::string_view(op) == "push" ? push_ : pull_).Observe(seconds);
}

void ServerMetrics::rejected(const char* reason) { f_.rejected.Add(with(labels_, "reason", reason)).Increment(); }

SchedulerMetrics::SchedulerMetrics(MetricFamilies& f, int rank) : f_(f), labels_(node_labels("scheduler", rank)) {}

Labels SchedulerMetrics::with(const char* role) const { return pst::with(labels_, "node_role", role); }

void SchedulerMetrics::rejected(const char* reason) {
  f_.rejected.Add(pst::with(labels_, "reason", reason)).Increment();
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const MetricsConfig& config, int rank,
                                                            const std::string& backend, const std::string& advertise,
                                                            const PortRange& ephemeral) {
  std::unique_ptr<MetricsServer> m(new MetricsServer());
  m->registry_ = std::make_shared<prometheus::Registry>();
  m->families_ = std::make_unique<MetricFamilies>(*m->registry_);
  m->families_->build_info.Add({{"version", version()}, {"commit", git_commit()}, {"backend", backend}}).Set(1);
  m->process_ = std::make_unique<ProcessMetrics>(*m->registry_);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  if (::inet_pton(AF_INET, config.bind.c_str(), &a.sin_addr) != 1)
    return invalid_argument("metrics.bind = '{}': not an IPv4 address", config.bind);
  // A listening socket on `port`; *error is errno when it fails.
  auto listen_on = [&](int port, int* error) -> Result<int> {
    const std::string address = fmt::format("{}:{}", config.bind, port);
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return io_error("metrics: socket(): {}", std::strerror(errno));
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    a.sin_port = htons(static_cast<uint16_t>(port));
    socklen_t len = sizeof(a);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(fd, 64) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      *error = errno;
      const std::string why = std::strerror(errno);
      ::close(fd);
      return io_error("metrics: cannot serve /metrics at {} (metrics.bind, metrics.port + rank {}): {}", address, rank,
                      why);
    }
    return fd;
  };
  int fd = -1;
  if (config.port > 0) {
    int error = 0;
    PST_ASSIGN_OR_RETURN(fd, listen_on(static_cast<int>(config.port + rank), &error));
  } else {
    PST_ASSIGN_OR_RETURN(fd, bind_in_range<int>(ephemeral, "metrics (metrics.port = 0)", listen_on));
  }
  m->listen_fd_ = fd;
  m->endpoint_ = fmt::format("{}:{}", advertise.empty() ? config.bind : advertise, ntohs(a.sin_port));
  m->thread_ = std::thread([p = m.get()] { p->serve(); });
  return m;
}

MetricsServer::~MetricsServer() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

void MetricsServer::serve() {
  struct Connection {
    int fd;
    Deadline deadline;
    std::string in, out;
    size_t sent = 0;
  };
  std::vector<Connection> conns;
  auto close_at = [&](size_t i) {
    ::close(conns[i].fd);
    conns.erase(conns.begin() + static_cast<std::ptrdiff_t>(i));
  };
  while (!stop_) {
    std::vector<pollfd> fds;
    fds.push_back({listen_fd_, POLLIN, 0});
    for (const Connection& c : conns) fds.push_back({c.fd, static_cast<short>(c.out.empty() ? POLLIN : POLLOUT), 0});
    if (::poll(fds.data(), fds.size(), 100) < 0) continue;
    // Answer what is ready; drop what is done, failed or past its deadline.
    for (size_t i = conns.size(); i-- > 0;) {
      Connection& c = conns[i];
      const short ev = fds[i + 1].revents;
      bool done = c.deadline.expired() || (ev & (POLLERR | POLLNVAL)) != 0;
      if (!done && c.out.empty() && (ev & (POLLIN | POLLHUP))) {
        char buf[1024];
        const ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
        if (n > 0) c.in.append(buf, static_cast<size_t>(n));
        if (c.in.find("\r\n\r\n") != std::string::npos || c.in.size() >= 8192 || n == 0) c.out = answer(c.in);
        if (n < 0 && errno != EAGAIN && errno != EINTR) done = true;
      }
      if (!done && !c.out.empty() && (ev & POLLOUT)) {
        const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
        if (n > 0) c.sent += static_cast<size_t>(n);
        done = (n < 0 && errno != EAGAIN && errno != EINTR) || c.sent == c.out.size();
      }
      if (done) close_at(i);
    }
    if (fds[0].revents & POLLIN) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) {
        if (conns.size() >= kMaxConnections) close_at(0);
        conns.push_back({fd, Deadline::after(kRequestSeconds), {}, {}, 0});
      }
    }
  }
  for (size_t i = conns.size(); i-- > 0;) close_at(i);
}

std::string MetricsServer::answer(const std::string& request) const {
  // One request per connection (HTTP/1.0 style): the request line decides.
  const std::string line = request.substr(0, request.find("\r\n"));
  std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
  if (line.rfind("GET /metrics ", 0) == 0 || line == "GET /metrics") {
    process_->update();
    body = prometheus::TextSerializer().Serialize(registry_->Collect());
  } else if (line.rfind("GET /healthz ", 0) == 0 || line == "GET /healthz") {
    if (ready_) {
      body = "ok\n";
    } else {
      status = "503 Service Unavailable";
      body = "starting: the job's rendezvous is not complete\n";
    }
  } else if (line.rfind("GET ", 0) == 0) {
    status = "404 Not Found";
    body = "pst serves /metrics and /healthz\n";
  } else {
    status = "405 Method Not Allowed";
    body = "only GET\n";
  }
  return fmt::format("HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}", status,
                     type, body.size(), body);
}

Result<HttpAnswer> http_get(const std::string& endpoint, const std::string& path, double seconds) {
  const auto colon = endpoint.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == endpoint.size())
    return invalid_argument("'{}': expected HOST:PORT (e.g. 127.0.0.1:9100)", endpoint);
  const std::string host = endpoint.substr(0, colon), port = endpoint.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0)
    return not_found("'{}': {}", endpoint, ::gai_strerror(rc));
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    ::freeaddrinfo(found);
    return io_error("socket: {}", std::strerror(errno));
  }
  const Deadline deadline = Deadline::after(seconds);
  auto wait = [&](short events) {
    pollfd p{fd, events, 0};
    return ::poll(&p, 1, static_cast<int>(deadline.remaining_ms())) > 0;
  };
  const int c = ::connect(fd, found->ai_addr, found->ai_addrlen);
  ::freeaddrinfo(found);
  int err = c == 0 ? 0 : errno;
  if (err == EINPROGRESS && wait(POLLOUT)) {
    socklen_t len = sizeof(err);
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  } else if (err == EINPROGRESS) {
    err = ETIMEDOUT;
  }
  std::string answer;
  if (err == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: " + endpoint + "\r\n\r\n";
    size_t sent = 0;
    while (sent < request.size() && wait(POLLOUT)) {
      const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    char buf[4096];
    while (sent == request.size() && answer.size() <= kMaxHttpAnswerBytes && wait(POLLIN)) {
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      answer.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  if (err != 0) return io_error("connect to {}: {}", endpoint, std::strerror(err));
  // A peer that answers without end must not fill memory until the deadline.
  if (answer.size() > kMaxHttpAnswerBytes)
    return data_loss("{}: the answer exceeds {} MiB (pst's endpoints answer in far less)", endpoint,
                     kMaxHttpAnswerBytes >> 20);
  // "HTTP/1.x CODE reason\r\n...\r\n\r\nbody"
  const auto body = answer.find("\r\n\r\n");
  HttpAnswer a;
  if (answer.rfind("HTTP/1.", 0) != 0 || answer.size() < 12 || body == std::string::npos ||
      std::sscanf(answer.c_str() + 9, "%3d", &a.status) != 1)
    return data_loss("{}: not an HTTP answer within {} s", endpoint, seconds);
  a.body = answer.substr(body + 4);
  return a;
}

Status write_file_sd(const std::string& path, const std::vector<ScrapeTarget>& targets, uint64_t job_id) {
  nlohmann::json groups = nlohmann::json::array();
  for (const ScrapeTarget& t : targets) {
    if (t.endpoint.empty()) continue;
    // Target labels must not be role or rank: the series carry those, and
    // Prometheus would rename them.
    groups.push_back({{"targets", {t.endpoint}},
                      {"labels",
                       {{"pst_job", fmt::format("{:016x}", job_id)},
                        {"pst_node_role", t.role},
                        {"pst_node_rank", std::to_string(t.rank)}}}});
  }
  std::error_code ec;
  const std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << groups.dump(2) << "\n";
    if (!out.flush()) return io_error("metrics.file_sd: cannot write {}", tmp);
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) return io_error("metrics.file_sd: cannot rename {} to {}: {}", tmp, path, ec.message());
  return Status();
}

}  // namespace pst
