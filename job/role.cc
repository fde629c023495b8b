// `pst train --role scheduler|server|worker --scheduler ENDPOINT`: the
// processes of a job started one by one, without MPI (containers, a process
// manager). The scheduler binds ENDPOINT; the others connect to it, register
// (servers with the endpoint they bound on cluster.host), get their rank and
// the node table, load their data and pass the start barrier; the servers
// sum their gradient statistics through the scheduler (scheduler/client.h).
// Every process reads the same job file: cluster.servers and
// cluster.workers say how many to wait for.
#include <algorithm>
#include <cstdlib>

#include <spdlog/spdlog.h>

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

// A server or worker: registers, then runs its node.
Status run_role_node(JobConfig& job, const TrainArgs& args, zmq::context_t& ctx, Cluster& cluster) {
  const bool server = args.role == "server";
  std::unique_ptr<Router> router;
  if (server) {
    PST_ASSIGN_OR_RETURN(router, bind_node_router(job, ctx));
  }
  const std::string scheduler_name = "the scheduler (" + args.scheduler + ")";
  PST_ASSIGN_OR_RETURN(auto control, Dealer::connect(ctx, args.scheduler, scheduler_name));
  // A worker whose train.output holds another run may still join a running
  // job (it writes nothing there unless it becomes the lead); it may not be
  // one of the workers a job starts with.
  const Status output = server ? Status() : check_output_is_free(job);
  const NodeRegistration me{server ? wire::Role::SERVER : wire::Role::WORKER, router ? router->endpoint() : "",
                            host_name(), cluster.metrics ? cluster.metrics->endpoint() : "", !output.ok()};
  auto registered = register_with_scheduler(*control, cluster.job_id, cluster.layout, me, job.cluster.start_timeout_s);
  if (!registered.ok() && !output.ok())
    return failed_precondition("{} ({})", output.message(), registered.status().message());
  PST_ASSIGN_OR_RETURN(NodeTable table, std::move(registered));
  cluster.rank = table.rank;
  cluster.servers = std::move(table.servers);
  cluster.joining = table.joined;
  if (!output.ok() && !cluster.joining) return output;
  // A node registers first and loads its data afterwards: the rendezvous
  // waits for nodes that are still starting, not for the slowest loader.
  PST_ASSIGN_OR_RETURN(TaskData data, load_job_data(job));
  init_logging(job.train.log_level, server ? fmt::format("server {}", cluster.layout.server_index(cluster.rank))
                                           : fmt::format("worker {}", cluster.layout.worker_index(cluster.rank)));
  resolve_node_settings(job, cluster.layout, cluster.rank, 1, false);
  PST_RETURN_IF_ERROR(prepare_start(job, data, server, cluster));
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
    return std::shared_ptr<GradStatsReducer>(
        std::make_shared<SchedulerStatsReducer>(std::move(d), cluster.job_id, cluster.rank));
  };
  if (server) return run_server(job, data, ctx, std::move(router), cluster);
  return run_worker(job, data, ctx, cluster);
}

}  // namespace

Status train_role(const TrainArgs& args) {
  setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
  if (args.role != "scheduler" && args.role != "server" && args.role != "worker")
    return invalid_argument("--role {}: allowed are scheduler, server and worker", args.role);
  if (args.scheduler.empty())
    return invalid_argument("--role {} needs --scheduler ENDPOINT (e.g. tcp://scheduler:5555)", args.role);
  PST_ASSIGN_OR_RETURN(JobConfig job, load_config(args.config, args.sets));
  init_logging(job.train.log_level, args.role);
  // Every process checks before it registers (a worker, in run_role_node:
  // it may still join a running job); worker 0 writes the output only after
  // the rendezvous, which waits for all of them.
  if (args.role != "worker") PST_RETURN_IF_ERROR(check_output_is_free(job));
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
