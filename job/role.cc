// `pst train --role scheduler|server|worker --scheduler ENDPOINT`: the
// processes of a job started one by one, without MPI (containers, a process
// manager). The scheduler binds ENDPOINT; the others connect to it, register
// (servers with the endpoint they bound on cluster.host), get their rank and
// the node table, load their data and pass the start barrier; the servers
// sum their gradient statistics through the scheduler (scheduler/client.h).
// Every process reads the same job file: cluster.servers and
// cluster.workers say how many to wait for. Under Slurm's srun without MPI,
// --role auto takes the role from the task's rank (role_from_slurm).
#include <algorithm>
#include <cstdlib>
#include <optional>

#include <spdlog/spdlog.h>

#include "core/cpus.h"
#include "core/logging.h"
#include "job/cluster.h"
#include "job/launch.h"
#include "job/nodes.h"
#include "job/outputs.h"
#include "scheduler/client.h"

namespace pst {
namespace {

Status run_role_scheduler(const JobConfig& job, const TrainArgs& args, zmq::context_t& ctx, Cluster& cluster) {
  spdlog::info("resolved config:\n{}", to_toml(job));
  PST_ASSIGN_OR_RETURN(auto router, Router::bind(ctx, args.scheduler, max_frame_bytes(job.cluster.chunk_bytes)));
  if (cluster.metrics) cluster.targets.push_back({cluster.metrics->endpoint(), "scheduler", 0});
  return run_scheduler(job, *router, cluster, /*rendezvous=*/true);
}

// One membership of a server or worker in the job: registers, then runs
// its node. `output` is why train.output may not be written (a worker
// that may only join, a server that may only replace a lost one); the
// job's data is loaded once, into *data.
Status run_role_member(JobConfig& job, const TrainArgs& args, zmq::context_t& ctx, Cluster& cluster,
                       const Status& output, std::optional<TaskData>& data) {
  const bool server = args.role == "server";
  std::unique_ptr<Router> router;
  if (server) {
    PST_ASSIGN_OR_RETURN(router, bind_node_router(job, ctx));
  }
  const std::string scheduler_name = "the scheduler (" + args.scheduler + ")";
  PST_ASSIGN_OR_RETURN(auto control, Dealer::connect(ctx, args.scheduler, scheduler_name));
  const NodeRegistration me{server ? wire::Role::SERVER : wire::Role::WORKER, router ? router->endpoint() : "",
                            host_name(), cluster.metrics ? cluster.metrics->endpoint() : "", !output.ok()};
  auto registered = register_with_scheduler(*control, cluster.job_id, cluster.layout, me, job.cluster.start_timeout_s);
  if (!registered.ok() && !output.ok())
    return failed_precondition("{} ({})", output.message(), registered.status().message());
  PST_ASSIGN_OR_RETURN(NodeTable table, std::move(registered));
  cluster.rank = table.rank;
  cluster.servers = std::move(table.servers);
  cluster.joining = table.joined;
  cluster.join_step = 0;
  if (!output.ok() && !cluster.joining && !table.reformed) return output;
  // The workers the job (re-)starts with: a re-formed job's data position
  // is shared out among the workers it still has.
  if (table.start_workers > 0) job.cluster.workers = table.start_workers;
  if (table.reformed) {
    // The job goes on from its newest complete checkpoint (every node has
    // ended its part of the run before the rendezvous answers), or from
    // where it began when it has none.
    const std::string root = checkpoint_root(job);
    if (latest_checkpoint(root).ok()) job.checkpoint.resume = "latest";
    spdlog::info("the job re-forms; it resumes from {}",
                 job.checkpoint.resume.empty()       ? std::string("the start (no checkpoint yet)")
                 : job.checkpoint.resume == "latest" ? "the newest checkpoint in " + root
                                                     : job.checkpoint.resume);
  }
  // A node registers first and loads its data afterwards: the rendezvous
  // waits for nodes that are still starting, not for the slowest loader.
  if (!data) {
    PST_ASSIGN_OR_RETURN(TaskData loaded, load_job_data(job));
    data = std::move(loaded);
  }
  init_logging(job.train.log_level, server ? fmt::format("server {}", cluster.layout.server_index(cluster.rank))
                                           : fmt::format("worker {}", cluster.layout.worker_index(cluster.rank)));
  resolve_node_settings(job, cluster.layout, cluster.rank, 1, false);
  PST_RETURN_IF_ERROR(prepare_start(job, *data, server, cluster));
  Dealer& ctl = *control;
  cluster.start_barrier = [&]() -> Status {
    PST_ASSIGN_OR_RETURN(const int64_t step, pass_start_barrier(ctl, cluster.job_id, cluster.rank,
                                                                job.cluster.timeout_s, job.cluster.start_timeout_s));
    cluster.join_step = step;
    return Status();
  };
  // The scheduler adds the servers' statistics, even those of one server:
  // its answer is how a stop asked of the scheduler (docker compose stop)
  // reaches the servers at one step (docs/design.md, Checkpoints).
  cluster.reducer = [&]() -> Result<std::shared_ptr<GradStatsReducer>> {
    PST_ASSIGN_OR_RETURN(auto d, Dealer::connect(ctx, args.scheduler, scheduler_name));
    return std::shared_ptr<GradStatsReducer>(std::make_shared<SchedulerStatsReducer>(
        std::move(d), cluster.job_id, cluster.rank, PeerServers{&ctx, cluster.servers}));
  };
  if (server) return run_server(job, *data, ctx, std::move(router), cluster);
  return run_worker(job, *data, ctx, cluster);
}

// A server or worker: a member of the job until it ends, and again each
// time the job re-forms after a server was lost (cluster.max_restarts):
// every node registers anew and resumes from the newest complete checkpoint.
Status run_role_node(JobConfig& job, const TrainArgs& args, zmq::context_t& ctx, Cluster& cluster) {
  // A worker whose train.output holds another run may still join a running
  // job (it writes nothing there unless it becomes the lead); it may not be
  // one of the workers a job starts with.
  // A server too, to take a lost one's place when the job re-forms.
  Status output = check_output_is_free(job);
  std::optional<TaskData> data;
  for (int64_t reforms = 0;; ++reforms) {
    const Status ran = run_role_member(job, args, ctx, cluster, output, data);
    if (ran.code() != StatusCode::kAborted || reforms >= job.cluster.max_restarts) return ran;
    spdlog::warn("{}; registering again", ran.message());
    output = Status();  // this process is one of the job's now, whatever train.output holds
  }
}

// A number >= 0 from the environment variable `name`.
Result<int64_t> env_count(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0')
    return failed_precondition("--role auto: {} is not set (auto takes the role from Slurm's srun)", name);
  const auto n = parse_count(value);
  if (!n) return invalid_argument("--role auto: {} = '{}' is not a count", name, value);
  return *n;
}

}  // namespace

Result<std::string> role_from_slurm(JobConfig& job) {
  PST_ASSIGN_OR_RETURN(const int64_t procid, env_count("SLURM_PROCID"));
  PST_ASSIGN_OR_RETURN(const int64_t ntasks, env_count("SLURM_NTASKS"));
  const int64_t servers = job.cluster.servers;
  if (ntasks < servers + 2)
    return invalid_argument(
        "--role auto: SLURM_NTASKS = {} with cluster.servers = {} leaves no worker: the job needs at least {} tasks "
        "(1 scheduler + servers + workers)",
        ntasks, servers, servers + 2);
  if (procid >= ntasks) return invalid_argument("--role auto: SLURM_PROCID = {} >= SLURM_NTASKS = {}", procid, ntasks);
  job.cluster.workers = ntasks - 1 - servers;
  return std::string(procid == 0 ? "scheduler" : procid <= servers ? "server" : "worker");
}

Status train_role(const TrainArgs& given) {
  // OpenMP threads of several processes share the cores: they must sleep,
  // not spin, while they wait (before MPI or any thread starts).
  restart_with_passive_openmp();
  TrainArgs args = given;
  if (args.role != "scheduler" && args.role != "server" && args.role != "worker" && args.role != "auto")
    return invalid_argument("--role {}: allowed are scheduler, server, worker and auto (from srun's task rank)",
                            args.role);
  if (args.scheduler.empty())
    return invalid_argument("--role {} needs --scheduler ENDPOINT (e.g. tcp://scheduler:5555)", args.role);
  PST_ASSIGN_OR_RETURN(JobConfig job, load_config(args.config, args.sets));
  if (args.role == "auto") {
    PST_ASSIGN_OR_RETURN(args.role, role_from_slurm(job));
    spdlog::info("--role auto: {} (SLURM_PROCID {} of SLURM_NTASKS {}; {} servers, {} workers)", args.role,
                 std::getenv("SLURM_PROCID"), std::getenv("SLURM_NTASKS"), job.cluster.servers, job.cluster.workers);
  }
  init_logging(job.train.log_level, args.role);
  PST_RETURN_IF_ERROR(check_zmq_transport(job, "a --role"));
  // Started again after the end (a StatefulSet restarts a server whatever
  // its status): a success that changes nothing, before any rendezvous.
  if (const auto finished = finished_run(job)) {
    spdlog::info("{}", *finished);
    return Status();
  }
  // Every process checks before it registers (a worker or server, in
  // run_role_node: it may still join a running job, or take a lost
  // server's place); worker 0 writes the output only after the rendezvous,
  // which waits for all of them.
  if (args.role == "scheduler") PST_RETURN_IF_ERROR(check_output_is_free(job));
  Cluster cluster;
  // Workers have cluster.max_workers places: the job starts with
  // cluster.workers, and others may join (docs/design.md, Membership).
  cluster.layout = JobLayout{static_cast<int>(job.cluster.servers),
                             static_cast<int>(std::max(job.cluster.workers, job.cluster.max_workers))};
  cluster.job_id = job_id(job);
  cluster.scheduler = args.scheduler;
  zmq::context_t ctx;
  PST_ASSIGN_OR_RETURN(auto security, enable_security(job, ctx, std::nullopt));
  // Each role normally has a host (a container) of its own: metrics.port as
  // it is, no rank offset (the rank is not known before the rendezvous).
  PST_ASSIGN_OR_RETURN(auto metrics, start_metrics(job, 0));
  cluster.metrics = metrics.get();
  const bool scheduler = args.role == "scheduler";
  PST_RETURN_IF_ERROR(scheduler ? run_role_scheduler(job, args, ctx, cluster) : run_role_node(job, args, ctx, cluster));
  close_metrics(job, cluster.job_id, cluster.metrics, /*owns_file_sd=*/scheduler);
  return Status();
}

}  // namespace pst
