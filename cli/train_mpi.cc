// `pst train` under mpirun: rank 0 is the scheduler, ranks 1..S the
// parameter servers (S = cluster.servers), the rest the workers. MPI
// exchanges the ZeroMQ endpoints (MPI_Allgather) and releases everyone at
// once after every server has its shards initialised and its socket bound
// (MPI_Barrier), so no push can reach a server that is not ready; it also
// carries the servers' sum of gradient statistics. Tensors travel over
// ZeroMQ. Worker 0 evaluates and writes train.output.
#include <cstdlib>
#include <thread>

#include <spdlog/spdlog.h>

#include "cli/train_common.h"
#include "comm/heartbeat.h"
#include "comm/mpi_session.h"
#include "comm/remote_client.h"
#include "core/logging.h"
#include "core/philox.h"
#include "model/param_table.h"
#include "ps/shard_server.h"
#include "scheduler/watch.h"

namespace pst {
namespace {

// Heartbeats go out a few times per timeout, at most once a second.
double heartbeat_interval(const JobConfig& job) { return std::min(1.0, job.cluster.timeout_s / 4); }

int run_scheduler(const JobConfig& job, MpiSession& mpi, zmq::context_t&, std::unique_ptr<Router> router,
                  const JobLayout& layout, uint64_t job_id) {
  spdlog::info("job {:016x}: 1 scheduler, {} servers, {} workers; scheduler at {}", job_id, layout.servers,
               layout.workers, router->endpoint());
  mpi.barrier();
  const Status s = watch_job(*router, WatchOptions{job_id, layout, job.cluster.timeout_s});
  if (!s.ok()) {
    spdlog::error("{}", s.message());
    return 1;
  }
  spdlog::info("every node has finished");
  return 0;
}

int run_server(const JobConfig& job, const TaskData& data, MpiSession& mpi, MPI_Comm servers,
               zmq::context_t& ctx, std::unique_ptr<Router> router, const JobLayout& layout, uint64_t job_id,
               const std::string& scheduler) {
  const int k = layout.server_index(mpi.rank());
  const ParamTable table = build_param_table(job.model, data.src_vocab, data.tgt_vocab);
  auto plan = ShardPlan::make(table.numels(), layout.servers, job.cluster.chunk_bytes);
  if (!plan.ok()) {
    spdlog::error("{}", plan.status().message());
    return 2;
  }
  std::vector<float> initial(static_cast<size_t>(table.total_numel()));
  init_params(table, static_cast<uint64_t>(job.train.seed), initial.data());
  std::unique_ptr<GradStatsReducer> reducer;
  if (layout.servers == 1) {
    reducer = std::make_unique<SingleServerReducer>();
  } else {
    reducer = std::make_unique<MpiStatsReducer>(servers);
  }
  const std::string endpoint = router->endpoint();
  ShardServer server(job, table, *plan, initial.data(), reducer.get(), ctx, std::move(router),
                     ShardServerOptions{job_id, k, layout, job.cluster.timeout_s, job.cluster.consistency,
                                        job.cluster.staleness});
  spdlog::info("server {} at {}: {} chunks, {:.1f} MiB of weights", k, endpoint, plan->owned(k).size(),
               static_cast<double>(plan->bytes(k)) / (1 << 20));
  Heartbeat heartbeat(ctx, scheduler, job_id, mpi.rank(), heartbeat_interval(job));
  mpi.barrier();
  const Status s = server.serve();
  if (!s.ok()) {
    spdlog::error("{}", s.message());
    return 1;
  }
  heartbeat.finish();
  spdlog::info("server {}: {} steps, {} messages rejected", k, server.version(), server.rejected());
  return 0;
}

int run_worker(const JobConfig& job, const TaskData& data, MpiSession& mpi, zmq::context_t& ctx,
               const JobLayout& layout, uint64_t job_id, const std::vector<std::string>& endpoints) {
  const int w = layout.worker_index(mpi.rank());
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
  const std::vector<std::string> server_endpoints(endpoints.begin() + 1, endpoints.begin() + 1 + layout.servers);
  auto client = RemoteParameterClient::connect(ctx, *plan, server_endpoints,
                                               RemoteClientOptions{job_id, w, layout, job.cluster.timeout_s});
  if (!client.ok()) {
    spdlog::error("{}", client.status().message());
    return 2;
  }
  std::FILE* metrics = w == 0 ? open_output(job) : nullptr;
  if (w == 0 && !metrics) return 2;
  Heartbeat heartbeat(ctx, endpoints[0], job_id, mpi.rank(), heartbeat_interval(job));
  mpi.barrier();
  TrainerOptions topt;
  topt.shards = {w};
  topt.workers = layout.workers;
  topt.evaluate = w == 0;
  topt.progress = w == 0;
  topt.stop_at_max_minutes = false;
  topt.metrics = metrics;
  if (job.cluster.consistency != Consistency::kBsp) topt.clip_norm = job.optim.clip_norm;
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
  return finish_training(job, data, model, summary);
}

int train_rank(MpiSession& session, const ConfigArgs& args) {
  const int rank = session.rank();
  auto job = load_config(args.config, args.sets);
  if (!job.ok()) {
    if (rank == 0) spdlog::error("{}", job.status().message());
    return 2;
  }
  const int servers = static_cast<int>(job->cluster.servers);
  const int workers = session.size() - 1 - servers;
  if (workers < 1) {
    if (rank == 0)
      spdlog::error("mpirun -np {} with cluster.servers = {} leaves no worker: -np must be at least {} "
                    "(1 scheduler + servers + workers)",
                    session.size(), servers, servers + 2);
    return 2;
  }
  job->cluster.workers = workers;
  const JobLayout layout{servers, workers};
  const std::string who = rank == 0 ? "scheduler"
                          : layout.is_server(rank) ? fmt::format("server {}", layout.server_index(rank))
                                                   : fmt::format("worker {}", layout.worker_index(rank));
  init_logging(job->train.log_level, who);
  if (rank == 0) spdlog::info("resolved config:\n{}", to_toml(*job));
  // The job id is a hash of the resolved config, the same on every rank, so
  // it is taken before any per-process setting.
  const uint64_t job_id = fnv1a64(to_toml(*job));
  if (job->train.threads == 0) {
    // Workers share this host's cores; servers compute only while the
    // workers wait for them (BSP), so they may use every core.
    const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
    const int64_t local_workers = session.local_size() == session.size() ? workers : session.local_size();
    job->train.threads = layout.is_worker(rank) ? std::max<int64_t>(1, cores / std::max<int64_t>(1, local_workers)) : cores;
  }

  auto data = load_task_data(*job);
  if (!data.ok()) {
    spdlog::error("{}", data.status().message());
    return 2;
  }
  zmq::context_t ctx;
  std::unique_ptr<Router> router;
  if (rank == 0 || layout.is_server(rank)) {
    auto r = Router::bind(ctx, fmt::format("tcp://{}:0", job->cluster.host));
    if (!r.ok()) {
      spdlog::error("{}", r.status().message());
      return 2;
    }
    router = std::move(*r);
  }
  auto endpoints = session.allgather(router ? router->endpoint() : "");
  if (!endpoints.ok()) {
    spdlog::error("{}", endpoints.status().message());
    return 2;
  }
  MPI_Comm server_comm = session.split(layout.is_server(rank) ? 1 : 0);
  if (rank == 0) return run_scheduler(*job, session, ctx, std::move(router), layout, job_id);
  if (layout.is_server(rank))
    return run_server(*job, *data, session, server_comm, ctx, std::move(router), layout, job_id, (*endpoints)[0]);
  return run_worker(*job, *data, session, ctx, layout, job_id, *endpoints);
}

}  // namespace

int run_train_mpi(const ConfigArgs& args) {
  // OpenMP threads of several processes share the cores: they must sleep,
  // not spin, while they wait.
  setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
  auto mpi = MpiSession::init();
  if (!mpi.ok()) {
    spdlog::error("{}", mpi.status().message());
    return 2;
  }
  const int rc = train_rank(**mpi, args);
  if (rc != 0) {
    // The other ranks may be waiting for this one in MPI or on a socket:
    // end the whole job now rather than at their deadlines.
    spdlog::error("rank {} failed (exit code {}); ending the job", (*mpi)->rank(), rc);
    MPI_Abort(MPI_COMM_WORLD, rc);
  }
  return rc;
}

}  // namespace pst
