// The servers and workers of a multi-process job, whichever bootstrap
// started them (mpirun: cli/train_mpi.cc; `--role`: cli/train_role.cc).
#include <unistd.h>

#include <chrono>
#include <string_view>
#include <thread>

#include <spdlog/spdlog.h>

#include "cli/train_common.h"
#include "comm/heartbeat.h"
#include "comm/remote_client.h"
#include "core/cpus.h"
#include "model/param_table.h"
#include "ps/shard_server.h"

namespace pst {
namespace {

// Heartbeats go out a few times per timeout, at most once a second.
double heartbeat_interval(const JobConfig& job) { return std::min(1.0, job.cluster.timeout_s / 4); }

}  // namespace

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

int run_server_node(const JobConfig& job, const TaskData& data, zmq::context_t& ctx, std::unique_ptr<Router> router,
                    const NodeBootstrap& node) {
  const JobLayout& layout = node.layout;
  const int k = layout.server_index(node.rank);
  const ParamTable table = build_param_table(job.model, data.src_vocab, data.tgt_vocab);
  auto plan = ShardPlan::make(table.numels(), layout.servers, job.cluster.chunk_bytes);
  if (!plan.ok()) {
    spdlog::error("{}", plan.status().message());
    return 2;
  }
  std::vector<float> initial(static_cast<size_t>(table.total_numel()));
  init_params(table, static_cast<uint64_t>(job.train.seed), initial.data());
  std::unique_ptr<GradStatsReducer> reducer = node.reducer();
  const std::string endpoint = router->endpoint();
  std::unique_ptr<ServerMetrics> metrics;
  if (node.metrics) metrics = std::make_unique<ServerMetrics>(node.metrics->families(), node.rank, k);
  if (k == 0) {
    if (const Status cleared = clear_previous_run(job); !cleared.ok()) {
      spdlog::error("{}", cleared.message());
      return 2;
    }
  }
  ShardServerOptions options = shard_server_options(job, node.job_id, k, layout);
  options.metrics = metrics.get();
  ShardServer server(job, table, *plan, initial.data(), reducer.get(), ctx, std::move(router), options);
  auto resume = resume_point(job, table);
  Status restored = resume.status();
  if (restored.ok() && *resume) restored = restore_server(server, **resume, table, *plan, k);
  if (!restored.ok()) {
    spdlog::error("{}", restored.message());
    return 2;
  }
  spdlog::info("server {} at {}: {} chunks, {:.1f} MiB of weights", k, endpoint, plan->owned(k).size(),
               static_cast<double>(plan->bytes(k)) / (1 << 20));
  Heartbeat heartbeat(ctx, node.scheduler, node.job_id, node.rank, heartbeat_interval(job));
  Status s = node.start_barrier();
  if (s.ok() && node.metrics) node.metrics->set_ready();
  if (s.ok()) s = server.serve();
  if (!s.ok()) {
    spdlog::error("{}", s.message());
    return 1;
  }
  heartbeat.finish();
  spdlog::info("server {}: {} steps, {} messages rejected{}", k, server.version(), server.rejected(),
               server.rejected() > 0 ? fmt::format(" ({})", server.rejected_reasons()) : "");
  return 0;
}

TrainerOptions worker_trainer_options(const JobConfig& job, const JobLayout& layout, int w, const Backend& backend,
                                      std::FILE* metrics) {
  TrainerOptions topt;
  topt.shards = {w};
  topt.workers = layout.workers;
  topt.evaluate = w == 0;
  topt.progress = w == 0;
  topt.stop_at_max_minutes = false;
  topt.metrics = w == 0 ? metrics : nullptr;
  topt.overlap = job.cluster.overlap == Overlap::kOn ||
                 (job.cluster.overlap == Overlap::kAuto && std::string_view(backend.name()) == "cuda");
  if (job.cluster.consistency != Consistency::kBsp) topt.clip_norm = job.optim.clip_norm;
  return topt;
}

int run_worker_node(const JobConfig& job, const TaskData& data, zmq::context_t& ctx, const NodeBootstrap& node) {
  const JobLayout& layout = node.layout;
  const int w = layout.worker_index(node.rank);
  auto backend = make_backend(*parse_device(job.train.device), job.train.matmul, static_cast<int>(job.train.threads));
  if (!backend.ok()) {
    spdlog::error("{}", backend.status().message());
    return 2;
  }
  Transformer model(job.model, data.src_vocab, data.tgt_vocab, backend->get());
  auto plan = ShardPlan::make(model.table().numels(), layout.servers, job.cluster.chunk_bytes);
  if (!plan.ok()) {
    spdlog::error("{}", plan.status().message());
    return 2;
  }
  auto client = RemoteParameterClient::connect(ctx, *plan, node.servers,
                                               RemoteClientOptions{node.job_id, w, layout, job.cluster.timeout_s});
  if (!client.ok()) {
    spdlog::error("{}", client.status().message());
    return 2;
  }
  std::FILE* metrics = w == 0 ? open_output(job) : nullptr;
  if (w == 0 && !metrics) return 2;
  Heartbeat heartbeat(ctx, node.scheduler, node.job_id, node.rank, heartbeat_interval(job));
  const Status ready = node.start_barrier();
  if (!ready.ok()) {
    spdlog::error("{}", ready.message());
    return 1;
  }
  if (node.metrics) node.metrics->set_ready();
  TrainerOptions topt = worker_trainer_options(job, layout, w, **backend, metrics);
  if (w == 0) topt.save = [&] { return save_trained_model(job, data, model); };
  auto resume = resume_point(job, model.table());
  if (!resume.ok()) {
    spdlog::error("{}", resume.status().message());
    return 2;
  }
  if (*resume) topt.first_step = (*resume)->manifest.step;
  std::unique_ptr<WorkerMetrics> monitor;
  if (node.metrics) monitor = std::make_unique<WorkerMetrics>(node.metrics->families(), node.rank);
  topt.monitor = monitor.get();
  Trainer trainer(job, data, &model, client->get(), topt);
  auto summary = trainer.run();
  if (metrics) std::fclose(metrics);
  if (!summary.ok()) {
    spdlog::error("training failed: {}", summary.status().to_string());
    return 1;
  }
  const Status s = (*client)->shutdown();
  if (!s.ok()) {
    spdlog::error("{}", s.message());
    return 1;
  }
  heartbeat.finish();
  if (w != 0) return 0;
  return finish_training(summary);
}

int run_scheduler_node(const JobConfig& job, Router& router, const NodeBootstrap& node, bool rendezvous) {
  spdlog::info("job {:016x}: 1 scheduler, {} servers, {} workers; scheduler at {}", node.job_id, node.layout.servers,
               node.layout.workers, router.endpoint());
  SchedulerOptions options;
  options.job_id = node.job_id;
  options.layout = node.layout;
  options.timeout_s = job.cluster.timeout_s;
  options.start_timeout_s = job.cluster.start_timeout_s;
  options.rendezvous = rendezvous;
  options.on_start = [&node] {
    if (node.metrics) node.metrics->set_ready();
  };
  std::unique_ptr<SchedulerMetrics> metrics;
  if (node.metrics) {
    metrics = std::make_unique<SchedulerMetrics>(node.metrics->families(), node.rank);
    options.metrics = metrics.get();
    options.file_sd = file_sd_path(job);
    options.targets = node.targets;
  }
  if (!rendezvous) {  // under mpirun the ranks meet at an MPI barrier first
    const Status b = node.start_barrier();
    if (!b.ok()) {
      spdlog::error("{}", b.message());
      return 1;
    }
    options.on_start();
  }
  const Status s = run_scheduler(router, options);
  if (!s.ok()) {
    spdlog::error("{}", s.message());
    return 1;
  }
  spdlog::info("every node has finished");
  return 0;
}

Result<std::unique_ptr<JobSecurity>> enable_security(const JobConfig& job, zmq::context_t& ctx,
                                                     const std::optional<JobKeys>& given) {
  const SecurityMode mode = job.security.mode;
  if (mode == SecurityMode::kNone) {
    spdlog::warn("security.mode = none: any process that reaches the job's ports can join, push and pull");
    return std::unique_ptr<JobSecurity>();
  }
  JobKeys keys;
  if (!job.security.key_file.empty()) {
    PST_ASSIGN_OR_RETURN(keys, read_job_keys(job.security.key_file, mode));
  } else if (given) {
    keys = *given;
  } else {
    return invalid_argument(
        "security.mode = {}: processes started with --role need security.key_file (the job's "
        "keys from pst keygen, e.g. a container secret), or security.mode = none on a network "
        "that is private to the job",
        to_string(mode));
  }
  PST_ASSIGN_OR_RETURN(auto security, JobSecurity::enable(ctx, mode, keys));
  spdlog::info(mode == SecurityMode::kCurve
                   ? "CURVE on: sockets are encrypted and admit only holders of the job's key pair"
                   : "job secret on: sockets admit only processes that prove the job's secret (not encrypted)");
  return security;
}

Result<std::optional<ResumePoint>> resume_point(const JobConfig& job, const ParamTable& table) {
  const std::string& r = job.checkpoint.resume;
  if (r.empty()) return std::optional<ResumePoint>();
  std::string dir = r;
  if (r == "auto" && step_dirs(checkpoint_root(job)).empty()) {
    spdlog::info("checkpoint.resume = auto: no checkpoint under {} yet; a fresh start", checkpoint_root(job));
    return std::optional<ResumePoint>();
  }
  if (r == "latest" || r == "auto") {
    PST_ASSIGN_OR_RETURN(dir, latest_checkpoint(checkpoint_root(job)));
  }
  PST_ASSIGN_OR_RETURN(Manifest m, read_checkpoint(dir));
  PST_RETURN_IF_ERROR(check_model(m, table).with_context(dir));
  if (m.step >= job.train.steps)
    return failed_precondition("{} is at step {}; train.steps = {} leaves nothing to do", dir, m.step, job.train.steps);
  return std::optional<ResumePoint>(ResumePoint{dir, std::move(m)});
}

Status restore_server(ShardServer& server, const ResumePoint& from, const ParamTable& table, const ShardPlan& plan,
                      int k) {
  PST_ASSIGN_OR_RETURN(ShardState state, load_shard(from.dir, from.manifest, table, plan.owned(k)));
  server.restore(state, from.manifest.step, from.manifest.applied_steps);
  spdlog::info("server {}: resumed from {} (step {}, {} optimizer steps)", k, from.dir, from.manifest.step,
               from.manifest.applied_steps);
  return Status();
}

Result<std::unique_ptr<MetricsServer>> start_metrics(const JobConfig& job, int port_offset) {
  if (!job.metrics.enabled) return std::unique_ptr<MetricsServer>();
  std::string advertise;  // scrape targets name the process's address, not 0.0.0.0
  if (job.metrics.bind == "0.0.0.0") {
    PST_ASSIGN_OR_RETURN(advertise, resolve_host(job.cluster.host, job.cluster.interface));
  }
  PST_ASSIGN_OR_RETURN(auto m,
                       MetricsServer::start(job.metrics, port_offset, cuda_compiled() ? "cpu+cuda" : "cpu", advertise));
  spdlog::info("metrics at http://{}/metrics", m->endpoint());
  return m;
}

std::string file_sd_path(const JobConfig& job) {
  return job.metrics.file_sd.empty() ? job.train.output + "/prometheus-targets.json" : job.metrics.file_sd;
}

void linger_metrics(const JobConfig& job, const MetricsServer* metrics) {
  if (!metrics || job.metrics.linger_s <= 0) return;
  spdlog::info("metrics stay up for {} s (metrics.linger_s)", job.metrics.linger_s);
  std::this_thread::sleep_for(std::chrono::duration<double>(job.metrics.linger_s));
}

void retire_scrape_targets(const JobConfig& job, uint64_t job_id, const MetricsServer* metrics) {
  if (!metrics) return;
  const std::string path = file_sd_path(job);
  const Status s = write_file_sd(path, {}, job_id);
  if (!s.ok())
    spdlog::warn("the job's scrape targets stay in {}: {}", path, s.message());
  else
    spdlog::info("the job ended well: no scrape targets left in {}", path);
}

void resolve_node_settings(JobConfig& job, const JobLayout& layout, int32_t rank, int local_processes, bool all_local) {
  // Overlap pays where communication does not take cycles from compute: on
  // a host of the process's own (the network's time is then hidden), not
  // where CPU processes of the job share the cores (on 2 shared cores it cost
  // 8-12% of tokens/s). A GPU worker turns auto on itself (run_worker_node).
  const bool shares_host = all_local || local_processes > 1;
  if (job.cluster.overlap == Overlap::kAuto && !shares_host) job.cluster.overlap = Overlap::kOn;
  if (!layout.is_server(rank) && !layout.is_worker(rank)) return;  // the scheduler computes nothing
  // Workers share this host's cores; servers compute only while the
  // workers wait for them (BSP), so they may use every core.
  const int local_workers = all_local ? layout.workers : local_processes;
  job.train.threads = resolve_threads(job.train.threads, layout.is_worker(rank) ? local_workers : 1,
                                      layout.is_worker(rank) ? "worker" : "server");
}

int64_t resolve_threads(int64_t configured, int sharers, const char* who) {
  if (configured > 0) {
    spdlog::info("{}: {} compute threads (train.threads)", who, configured);
    return configured;
  }
  const CpuBudget budget = cpu_budget();
  // A budget set for this process (OMP_NUM_THREADS, a pinned affinity mask,
  // a quota) is its own; the machine's CPUs are shared with the job's other
  // workers on the host.
  const int share = budget.own ? 1 : std::max(1, sharers);
  const int64_t threads = std::max(1, budget.cpus / share);
  if (share > 1)
    spdlog::info("{}: {} compute threads ({}, shared by {} workers)", who, threads, budget.why, share);
  else
    spdlog::info("{}: {} compute threads ({})", who, threads, budget.why);
  return threads;
}

}  // namespace pst
