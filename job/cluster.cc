#include "job/cluster.h"

#include <unistd.h>

#include <algorithm>

#include <spdlog/spdlog.h>

#include "core/cpus.h"
#include "core/philox.h"
#include "core/ports.h"
#include "model/param_table.h"

namespace pst {

Result<TaskData> load_job_data(JobConfig& job) {
  PST_ASSIGN_OR_RETURN(TaskData data, load_task_data(job));
  PST_RETURN_IF_ERROR(check_fits_in_memory(build_param_table(job.model, data.src_vocab, data.tgt_vocab), 4));
  resolve_epochs(job, *data.train);
  return data;
}

void resolve_epochs(JobConfig& job, const Dataset& train) {
  TrainConfig& t = job.train;
  if (t.epochs > 0) {
    const int64_t batches =
        BatchIterator(&train, job.data.batch_size, static_cast<uint64_t>(t.seed)).batches_per_epoch();
    const int64_t per_step = job.cluster.workers * t.accumulate;
    const int64_t per_epoch = (batches + per_step - 1) / per_step;
    t.steps = t.epochs * per_epoch;
    spdlog::info(
        "train.epochs = {}: {} batches of {} per epoch, {} per step ({} workers x {} accumulated): "
        "train.steps = {} x {} = {}",
        t.epochs, batches, job.data.batch_size, per_step, job.cluster.workers, t.accumulate, t.epochs, per_epoch,
        t.steps);
  }
  if (job.schedule.warmup_steps > t.steps)
    spdlog::warn("schedule.warmup_steps = {} is more than train.steps = {}: the learning rate never reaches optim.lr",
                 job.schedule.warmup_steps, t.steps);
}

Status prepare_start(const JobConfig& job, const TaskData& data, bool servers, Cluster& cluster) {
  const ParamTable table = build_param_table(job.model, data.src_vocab, data.tgt_vocab);
  PST_ASSIGN_OR_RETURN(cluster.resume, resume_point(job, table));
  if (!servers) return Status();
  auto initial = std::make_shared<std::vector<float>>(static_cast<size_t>(table.total_numel()));
  init_params(table, static_cast<uint64_t>(job.train.seed), initial->data());
  cluster.initial = std::move(initial);
  return Status();
}

RemoteClientOptions worker_client_options(const JobConfig& job, uint64_t job_id, int worker, const JobLayout& layout,
                                          const Interrupt* interrupt) {
  RemoteClientOptions o;
  o.job_id = job_id;
  o.worker = worker;
  o.layout = layout;
  o.timeout_s = job.cluster.timeout_s;
  o.interrupt = interrupt;
  o.bf16_wire = job.cluster.wire == WireFormat::kBf16;
  o.stochastic_rounding = job.cluster.wire_rounding == WireRounding::kStochastic;
  o.rounding_seed = static_cast<uint64_t>(job.train.seed);
  return o;
}

Result<std::unique_ptr<Router>> bind_node_router(const JobConfig& job, zmq::context_t& ctx) {
  PST_ASSIGN_OR_RETURN(std::string host, resolve_host(job.cluster.host, job.cluster.interface));
  PST_ASSIGN_OR_RETURN(const PortRange range, parse_port_range(job.cluster.port_range));
  return bind_in_range<std::unique_ptr<Router>>(range, "the ZeroMQ socket on " + host, [&](int port, int* error) {
    return Router::bind(ctx, fmt::format("tcp://{}:{}", host, port), max_frame_bytes(job.cluster.chunk_bytes), error);
  });
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
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

void resolve_node_settings(JobConfig& job, const JobLayout& layout, int32_t rank, int local_processes, bool all_local) {
  // Overlap pays where communication does not take cycles from compute: on
  // a host of the process's own (the network's time is then hidden), not
  // where CPU processes of the job share the cores (on 2 shared cores it once
  // cost 8-12% of tokens/s, and gains nothing measurable now: bench/overlap.sh,
  // docs/operations.md). A GPU worker turns auto on itself (run_worker).
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
  if (const std::string note = openblas_kernels_note(); !note.empty()) spdlog::info("{}: {}", who, note);
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
