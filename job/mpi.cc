// `pst train` under mpirun: rank 0 is the scheduler, ranks 1..S the
// parameter servers (S = cluster.servers), the rest the workers. MPI
// exchanges the ZeroMQ endpoints (MPI_Allgather) and releases everyone at
// once after every server has its shards initialised and its socket bound
// (MPI_Barrier), so no push can reach a server that is not ready; it also
// carries the servers' sum of gradient statistics. Tensors travel over
// ZeroMQ, or with cluster.transport = mpi over MPI point-to-point messages
// (a worker's MpiChannels, a server's MpiGateway). Worker 0 evaluates and
// writes train.output.
#include <cstdlib>

#include <spdlog/spdlog.h>

#include "comm/mpi_session.h"
#include "comm/mpi_stats_reducer.h"
#include "comm/mpi_transport.h"
#include "core/cpus.h"
#include "core/logging.h"
#include "job/cluster.h"
#include "job/launch.h"
#include "job/nodes.h"
#include "job/outputs.h"

namespace pst {
namespace {

// The job file, as every rank reads it, and the job's layout; errors here
// are the same on every rank, so only rank 0 reports them.
Result<JobConfig> rank_config(MpiSession& session, const TrainArgs& args) {
  PST_ASSIGN_OR_RETURN(JobConfig job, load_config(args.config, args.sets));
  const int servers = static_cast<int>(job.cluster.servers);
  const int workers = session.size() - 1 - servers;
  if (workers < 1)
    return invalid_argument(
        "mpirun -np {} with cluster.servers = {} leaves no worker: -np must be at least {} "
        "(1 scheduler + servers + workers)",
        session.size(), servers, servers + 2);
  job.cluster.workers = workers;
  // Every rank checks before its first collective; worker 0 writes the
  // output only after them.
  PST_RETURN_IF_ERROR(check_output_is_free(job));
  return job;
}

// The job's keys: the key file's, or keys rank 0 makes and hands to every
// rank over MPI (the launch is the trusted channel).
Result<std::optional<JobKeys>> share_keys(MpiSession& session, const JobConfig& job) {
  if (job.security.mode == SecurityMode::kNone || !job.security.key_file.empty()) return std::optional<JobKeys>();
  std::string mine;
  if (session.rank() == 0) {
    PST_ASSIGN_OR_RETURN(JobKeys made, make_job_keys());
    mine = made.secret + made.public_key + made.secret_key;
  }
  PST_ASSIGN_OR_RETURN(auto all, session.allgather(mine));
  const std::string& k = all[0];
  return std::optional<JobKeys>(JobKeys{k.substr(0, 40), k.substr(40, 40), k.substr(80)});
}

// The MPI bootstrap: the Cluster of this rank, once every rank's endpoints
// and /metrics are known. `router` is bound here for the scheduler and the
// servers.
Result<Cluster> mpi_cluster(MpiSession& session, const JobConfig& job, const JobLayout& layout, uint64_t job_id,
                            zmq::context_t& ctx, std::unique_ptr<Router>& router, MetricsServer* metrics) {
  const int rank = session.rank();
  if (rank == 0 || layout.is_server(rank)) {
    PST_ASSIGN_OR_RETURN(router, bind_node_router(job, ctx));
  }
  PST_ASSIGN_OR_RETURN(auto endpoints, session.allgather(router ? router->endpoint() : ""));
  PST_ASSIGN_OR_RETURN(auto metric_endpoints, session.allgather(metrics ? metrics->endpoint() : ""));
  MPI_Comm server_comm = session.split(layout.is_server(rank) ? 1 : 0);
  Cluster c;
  c.rank = rank;
  c.layout = layout;
  c.job_id = job_id;
  c.scheduler = endpoints[0];
  c.servers.assign(endpoints.begin() + 1, endpoints.begin() + 1 + layout.servers);
  c.metrics = metrics;
  for (int r = 0; r < session.size(); ++r)
    c.targets.push_back({metric_endpoints[static_cast<size_t>(r)],
                         r == 0                ? "scheduler"
                         : layout.is_server(r) ? "server"
                                               : "worker",
                         r});
  // Every rank passes the barrier after its setup: servers once their
  // shards are initialised and their sockets bound.
  c.start_barrier = [&session] {
    session.barrier();
    return Status();
  };
  if (job.cluster.transport == Transport::kMpi) {
    // Collective: every rank makes the transport's communicator here.
    MPI_Comm transport = session.split(0);
    if (session.thread_level() < MPI_THREAD_MULTIPLE)
      return failed_precondition(
          "cluster.transport = mpi needs MPI_THREAD_MULTIPLE (a server's gateway and its reduction call MPI from "
          "two threads); this MPI library provides thread level {}",
          session.thread_level());
    MPI_Comm_set_errhandler(transport, MPI_ERRORS_RETURN);
    const int64_t max_bytes = max_frame_bytes(job.cluster.chunk_bytes);
    c.server_channel = [transport, layout, max_bytes](int k) -> Result<std::unique_ptr<Channel>> {
      const int rank = layout.server_rank(k);
      return std::unique_ptr<Channel>(
          std::make_unique<MpiChannel>(transport, rank, fmt::format("server {} (MPI rank {})", k, rank), max_bytes));
    };
    c.gateway = [transport, layout, rank, max_bytes](zmq::context_t& context, Router& router) {
      std::vector<int> workers;
      for (int w = 0; w < layout.workers; ++w) workers.push_back(layout.worker_rank(w));
      return MpiGateway::start(context, router, transport, std::move(workers), max_bytes,
                               fmt::format("server {}", layout.server_index(rank)));
    };
  }
  const int servers = layout.servers;
  c.reducer = [servers, server_comm]() -> Result<std::shared_ptr<GradStatsReducer>> {
    if (servers == 1) return std::shared_ptr<GradStatsReducer>(std::make_shared<SingleServerReducer>());
    return std::shared_ptr<GradStatsReducer>(std::make_shared<MpiStatsReducer>(server_comm));
  };
  return c;
}

Status train_rank(MpiSession& session, JobConfig& job) {
  const int rank = session.rank();
  const JobLayout layout{static_cast<int>(job.cluster.servers), static_cast<int>(job.cluster.workers)};
  const std::string who = rank == 0                ? "scheduler"
                          : layout.is_server(rank) ? fmt::format("server {}", layout.server_index(rank))
                                                   : fmt::format("worker {}", layout.worker_index(rank));
  init_logging(job.train.log_level, who);
  spdlog::info("rank {} of {} on host {}", rank, session.size(), host_name());
  if (rank == 0) spdlog::info("resolved config:\n{}", to_toml(job));
  // The job id hashes the settings every rank shares (core/config.h); it is
  // taken before resolve_node_settings adjusts this process's own.
  const uint64_t job_id = pst::job_id(job);
  resolve_node_settings(job, layout, rank, session.local_size(), session.local_size() == session.size());
  PST_ASSIGN_OR_RETURN(TaskData data, load_job_data(job));
  PST_ASSIGN_OR_RETURN(std::optional<JobKeys> keys, share_keys(session, job));
  zmq::context_t ctx;
  PST_ASSIGN_OR_RETURN(auto security, enable_security(job, ctx, keys));
  PST_ASSIGN_OR_RETURN(auto metrics, start_metrics(job, rank));
  std::unique_ptr<Router> router;
  PST_ASSIGN_OR_RETURN(Cluster cluster, mpi_cluster(session, job, layout, job_id, ctx, router, metrics.get()));
  if (rank != 0) PST_RETURN_IF_ERROR(prepare_start(job, data, layout.is_server(rank), cluster));
  if (rank == 0) {
    PST_RETURN_IF_ERROR(run_scheduler(job, *router, cluster, /*rendezvous=*/false));
  } else if (layout.is_server(rank)) {
    PST_RETURN_IF_ERROR(run_server(job, data, ctx, std::move(router), cluster));
  } else {
    PST_RETURN_IF_ERROR(run_worker(job, data, ctx, cluster));
  }
  close_metrics(job, job_id, metrics.get(), /*owns_file_sd=*/rank == 0);
  return Status();
}

}  // namespace

Status train_mpi(const TrainArgs& args) {
  // OpenMP threads of several processes share the cores: they must sleep,
  // not spin, while they wait (before MPI or any thread starts).
  restart_with_passive_openmp();
  PST_ASSIGN_OR_RETURN(auto mpi, MpiSession::init());
  auto job = rank_config(*mpi, args);
  Status s = job.status();
  if (job.ok()) s = check_fixed_size(*job, "an mpirun");
  if (s.ok()) s = train_rank(*mpi, *job);
  if (s.ok()) return s;
  // The other ranks may be waiting for this one in MPI or on a socket: end
  // the whole job now rather than at their deadlines. An error of the job
  // file is every rank's: rank 0 names it.
  if (job.ok() || mpi->rank() == 0) spdlog::error("{}", s.message());
  spdlog::error("rank {} failed (exit code {}); ending the job", mpi->rank(), exit_code(s));
  MPI_Abort(MPI_COMM_WORLD, exit_code(s));
  return s;
}

}  // namespace pst
