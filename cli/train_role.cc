// `pst train --role scheduler|server|worker --scheduler ENDPOINT`: the
// processes of a job started one by one, without MPI (containers, a process
// manager). The scheduler binds ENDPOINT; the others connect to it, register
// (servers with the endpoint they bound on cluster.host), get their rank and
// the node table, load their data and pass the start barrier; the servers sum their
// gradient statistics through the scheduler. Every process reads the same
// job file: cluster.servers and cluster.workers say how many to wait for.
#include <algorithm>
#include <cstdlib>
#include <random>

#include <spdlog/spdlog.h>

#include "cli/train_common.h"
#include "comm/message.h"
#include "core/logging.h"
#include "core/philox.h"
#include "core/stop.h"

namespace pst {
namespace {

// The scheduler's answer, waiting at most timeout_s (the start deadline,
// cluster.start_timeout_s), or less when the process is asked to stop
// meanwhile (docker compose stop before the job has started).
Result<Frames> answer_or_stop(Dealer& scheduler, double timeout_s, const std::string& waiting_for) {
  const Deadline end = Deadline::after(timeout_s);
  while (true) {
    auto frames =
        scheduler.receive(Deadline::after(std::min(1.0, static_cast<double>(end.remaining_ms()) / 1000)), waiting_for);
    if (frames.ok() || end.expired()) return frames;
    if (stop_requested())
      return failed_precondition("stopped by signal {} while waiting for {}", stop_signal(), waiting_for);
  }
}

// Registers with the scheduler; fills rank and the servers' endpoints.
Status register_node(Dealer& scheduler, wire::Role role, const std::string& endpoint, const std::string& metrics,
                     NodeBootstrap& node, double timeout_s) {
  const uint64_t request = std::random_device{}();
  OutMessage m(wire::Kind::REGISTER, node.job_id, -1, 0, request);
  auto info = m.header().initNode();
  info.setRole(role);
  info.setEndpoint(endpoint);
  info.setHost(host_name());
  info.setMetrics(metrics);
  PST_RETURN_IF_ERROR(scheduler.send(m.finish(), Deadline::after(timeout_s)));
  auto answer = answer_or_stop(scheduler, timeout_s, "the node table (rendezvous)");
  if (!answer.ok() && answer.status().code() == StatusCode::kDeadlineExceeded)
    return deadline_exceeded(
        "{} (is the scheduler running, and does this process have the job's security.mode and "
        "security.key_file? The scheduler refuses a connection that does not prove them, "
        "without an answer)",
        answer.status().message());
  PST_ASSIGN_OR_RETURN(Frames frames, std::move(answer));
  Rejection why;
  auto reply = InMessage::parse(std::move(frames), &why);
  if (!reply) return data_loss("{}: a bad answer to the registration: {}", scheduler.peer(), why.message);
  const auto h = reply->header();
  if (h.getKind() == wire::Kind::ERROR)
    return failed_precondition("{} refused the registration: {}", scheduler.peer(), h.getError().getMessage().cStr());
  if (h.getKind() != wire::Kind::NODE_TABLE || h.which() != wire::Header::NODES || h.getRequestId() != request)
    return data_loss("{}: answered the registration with {}", scheduler.peer(), kind_name(h.getKind()));
  node.rank = h.getRank();
  node.servers.assign(static_cast<size_t>(node.layout.servers), "");
  for (auto n : h.getNodes())
    if (n.getRole() == wire::Role::SERVER && n.getIndex() >= 0 && n.getIndex() < node.layout.servers)
      node.servers[static_cast<size_t>(n.getIndex())] = n.getEndpoint().cStr();
  for (const std::string& e : node.servers)
    if (e.empty()) return data_loss("{}: the node table lacks a server", scheduler.peer());
  if (!(role == wire::Role::SERVER ? node.layout.is_server(node.rank) : node.layout.is_worker(node.rank)))
    return data_loss("{}: gave rank {}, not one of a {}", scheduler.peer(), node.rank,
                     role == wire::Role::SERVER ? "server" : "worker");
  return Status();
}

}  // namespace

int run_train_role(const ConfigArgs& args, const std::string& role, const std::string& scheduler) {
  setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
  if (role != "scheduler" && role != "server" && role != "worker") {
    spdlog::error("--role {}: allowed are scheduler, server and worker", role);
    return 2;
  }
  if (scheduler.empty()) {
    spdlog::error("--role {} needs --scheduler ENDPOINT (e.g. tcp://scheduler:5555)", role);
    return 2;
  }
  auto job = load_config(args.config, args.sets);
  if (!job.ok()) {
    spdlog::error("{}", job.status().message());
    return 2;
  }
  init_logging(job->train.log_level, role);
  // Every process checks before it registers; worker 0 writes the output
  // only after the rendezvous, which waits for all of them.
  if (const Status free = check_output_is_free(*job); !free.ok()) {
    spdlog::error("{}", free.message());
    return 2;
  }
  NodeBootstrap node;
  node.layout = JobLayout{static_cast<int>(job->cluster.servers), static_cast<int>(job->cluster.workers)};
  node.job_id = job_id(*job);
  node.scheduler = scheduler;
  zmq::context_t ctx;
  auto security = enable_security(*job, ctx, std::nullopt);
  if (!security.ok()) {
    spdlog::error("{}", security.status().message());
    return 2;
  }
  const double timeout = job->cluster.timeout_s, start_timeout = job->cluster.start_timeout_s;
  // Each role normally has a host (a container) of its own: metrics.port as
  // it is, no rank offset (the rank is not known before the rendezvous).
  auto metrics = start_metrics(*job, 0);
  if (!metrics.ok()) {
    spdlog::error("{}", metrics.status().message());
    return 2;
  }
  node.metrics = metrics->get();
  auto finish = [&](int rc) {
    if (rc == 0) linger_metrics(*job, node.metrics);
    if (rc == 0 && role == "scheduler") retire_scrape_targets(*job, node.job_id, node.metrics);
    return rc;
  };

  if (role == "scheduler") {
    spdlog::info("resolved config:\n{}", to_toml(*job));
    auto router = Router::bind(ctx, scheduler, max_frame_bytes(job->cluster.chunk_bytes));
    if (!router.ok()) {
      spdlog::error("{}", router.status().message());
      return 2;
    }
    if (node.metrics) node.targets.push_back({node.metrics->endpoint(), "scheduler", 0});
    return finish(run_scheduler_node(*job, **router, node, /*rendezvous=*/true));
  }
  std::unique_ptr<Router> router;
  if (role == "server") {
    auto host = resolve_host(job->cluster.host, job->cluster.interface);
    if (!host.ok()) {
      spdlog::error("{}", host.status().message());
      return 2;
    }
    auto r = Router::bind(ctx, fmt::format("tcp://{}:0", *host), max_frame_bytes(job->cluster.chunk_bytes));
    if (!r.ok()) {
      spdlog::error("{}", r.status().message());
      return 2;
    }
    router = std::move(*r);
  }
  auto control = Dealer::connect(ctx, scheduler, "the scheduler (" + scheduler + ")");
  if (!control.ok()) {
    spdlog::error("{}", control.status().message());
    return 2;
  }
  const Status reg = register_node(**control, role == "server" ? wire::Role::SERVER : wire::Role::WORKER,
                                   router ? router->endpoint() : "", node.metrics ? node.metrics->endpoint() : "", node,
                                   start_timeout);
  if (!reg.ok()) {
    spdlog::error("{}", reg.message());
    return 1;
  }
  // A node registers first and loads its data afterwards: the rendezvous
  // waits for nodes that are still starting, not for the slowest loader.
  auto data = load_job_data(*job);
  if (!data.ok()) {
    spdlog::error("{}", data.status().message());
    return 2;
  }
  init_logging(job->train.log_level, role == "server" ? fmt::format("server {}", node.layout.server_index(node.rank))
                                                      : fmt::format("worker {}", node.layout.worker_index(node.rank)));
  resolve_node_settings(*job, node.layout, node.rank, 1, false);
  Dealer& ctl = **control;
  node.start_barrier = [&]() -> Status {
    OutMessage b(wire::Kind::BARRIER, node.job_id, node.rank, 0, 1);
    PST_RETURN_IF_ERROR(ctl.send(b.finish(), Deadline::after(timeout)));
    PST_ASSIGN_OR_RETURN(Frames frames, answer_or_stop(ctl, start_timeout, "the start barrier (every server ready)"));
    Rejection why;
    auto reply = InMessage::parse(std::move(frames), &why);
    if (!reply || reply->header().getKind() != wire::Kind::BARRIER)
      return data_loss("{}: a bad answer at the start barrier", ctl.peer());
    return Status();
  };
  // The scheduler adds the servers' statistics, even those of one server:
  // its answer is how a stop asked of the scheduler (docker compose stop)
  // reaches the servers at one step (docs/design.md, Checkpoints).
  node.reducer = [&]() -> std::unique_ptr<GradStatsReducer> {
    auto d = Dealer::connect(ctx, scheduler, "the scheduler (" + scheduler + ")");
    PST_CHECK_MSG(d.ok(), "{}", d.status().message());
    return std::make_unique<SchedulerStatsReducer>(std::move(*d), node.job_id, node.rank);
  };
  if (role == "server") return finish(run_server_node(*job, *data, ctx, std::move(router), node));
  return finish(run_worker_node(*job, *data, ctx, node));
}

}  // namespace pst
