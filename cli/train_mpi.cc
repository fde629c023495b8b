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

namespace pst {
namespace {

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
      spdlog::error(
          "mpirun -np {} with cluster.servers = {} leaves no worker: -np must be at least {} "
          "(1 scheduler + servers + workers)",
          session.size(), servers, servers + 2);
    return 2;
  }
  job->cluster.workers = workers;
  const JobLayout layout{servers, workers};
  const std::string who = rank == 0                ? "scheduler"
                          : layout.is_server(rank) ? fmt::format("server {}", layout.server_index(rank))
                                                   : fmt::format("worker {}", layout.worker_index(rank));
  init_logging(job->train.log_level, who);
  spdlog::info("rank {} of {} on host {}", rank, session.size(), host_name());
  if (rank == 0) spdlog::info("resolved config:\n{}", to_toml(*job));
  // Every rank checks before its first collective; worker 0 writes the
  // output only after them.
  if (const Status free = check_output_is_free(*job); !free.ok()) {
    if (rank == 0) spdlog::error("{}", free.message());
    return 2;
  }
  // The job id hashes the settings every rank shares (core/config.h); it is
  // taken before resolve_node_settings adjusts this process's own.
  const uint64_t job_id = pst::job_id(*job);
  resolve_node_settings(*job, layout, rank, session.local_size(), session.local_size() == session.size());

  auto data = load_job_data(*job);
  if (!data.ok()) {
    spdlog::error("{}", data.status().message());
    return 2;
  }
  // The job's keys: the key file's, or keys rank 0 makes and hands to every
  // rank over MPI (the launch is the trusted channel).
  std::optional<JobKeys> keys;
  if (job->security.mode != SecurityMode::kNone && job->security.key_file.empty()) {
    std::string mine;
    if (rank == 0) {
      auto made = make_job_keys();
      if (!made.ok()) {
        spdlog::error("{}", made.status().message());
        return 2;
      }
      mine = made->secret + made->public_key + made->secret_key;
    }
    auto all = session.allgather(mine);
    if (!all.ok()) {
      spdlog::error("{}", all.status().message());
      return 2;
    }
    const std::string& k = (*all)[0];
    keys = JobKeys{k.substr(0, 40), k.substr(40, 40), k.substr(80)};
  }
  zmq::context_t ctx;
  auto security = enable_security(*job, ctx, keys);
  if (!security.ok()) {
    spdlog::error("{}", security.status().message());
    return 2;
  }
  std::unique_ptr<Router> router;
  if (rank == 0 || layout.is_server(rank)) {
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
  auto endpoints = session.allgather(router ? router->endpoint() : "");
  if (!endpoints.ok()) {
    spdlog::error("{}", endpoints.status().message());
    return 2;
  }
  auto metrics = start_metrics(*job, rank);
  if (!metrics.ok()) {
    spdlog::error("{}", metrics.status().message());
    return 2;
  }
  auto metric_endpoints = session.allgather(*metrics ? (*metrics)->endpoint() : "");
  if (!metric_endpoints.ok()) {
    spdlog::error("{}", metric_endpoints.status().message());
    return 2;
  }
  MPI_Comm server_comm = session.split(layout.is_server(rank) ? 1 : 0);
  NodeBootstrap node;
  node.rank = rank;
  node.layout = layout;
  node.job_id = job_id;
  node.scheduler = (*endpoints)[0];
  node.servers.assign(endpoints->begin() + 1, endpoints->begin() + 1 + servers);
  node.metrics = metrics->get();
  for (int r = 0; r < session.size(); ++r)
    node.targets.push_back({(*metric_endpoints)[static_cast<size_t>(r)],
                            r == 0                ? "scheduler"
                            : layout.is_server(r) ? "server"
                                                  : "worker",
                            r});
  // Every rank passes the barrier after its setup: servers once their
  // shards are initialised and their sockets bound.
  node.start_barrier = [&session] {
    session.barrier();
    return Status();
  };
  node.reducer = [&]() -> std::unique_ptr<GradStatsReducer> {
    if (servers == 1) return std::make_unique<SingleServerReducer>();
    return std::make_unique<MpiStatsReducer>(server_comm);
  };
  int rc = 0;
  if (rank == 0) {
    rc = run_scheduler_node(*job, *router, node, /*rendezvous=*/false);
  } else if (layout.is_server(rank)) {
    rc = run_server_node(*job, *data, ctx, std::move(router), node);
  } else {
    rc = run_worker_node(*job, *data, ctx, node);
  }
  if (rc == 0) linger_metrics(*job, node.metrics);
  if (rc == 0 && rank == 0) retire_scrape_targets(*job, job_id, node.metrics);
  return rc;
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
