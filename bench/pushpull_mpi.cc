// Push+pull rounds between processes over each transport, measured in one
// run: cluster.transport = zmq (TCP sockets) against mpi (MPI point-to-point
// messages; on one host Open MPI moves them through shared memory).
//
// Run under mpirun with 1 + S + W ranks: rank 0 idles (the scheduler's
// place), ranks 1..S are servers (the real ShardServer and its BSP round),
// the rest workers (RemoteParameterClient), as in a job. Each round a worker
// pushes N bytes of gradient and pulls the new weights. For each size the
// two transports alternate (zmq, mpi, zmq, mpi, ...) --repeats times; the
// line gives each side's median time per round and the median of the
// per-pair ratios zmq/mpi with its min-max (above 1: MPI is faster). A third
// side, raw ZeroMQ, alternates with them: each worker sends each server its
// bytes / S as one zero-copy message over TCP and gets as many back (what a
// push and a pull move, without pst's protocol or the servers' update).
//
//   mpirun -np 3 build/bin/pushpull_mpi [--servers S] [--rounds N] [--repeats K]
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "bench/flat_table.h"
#include "bench/median.h"
#include "comm/mpi_stats_reducer.h"
#include "comm/mpi_transport.h"
#include "comm/remote_client.h"
#include "core/cpus.h"
#include "core/memory.h"
#include "core/timer.h"
#include "ps/shard_server.h"

using namespace pst;

namespace {

constexpr uint64_t kJob = 0xbf;

void must(const Status& s, const char* what) {
  if (s.ok()) return;
  std::fprintf(stderr, "pushpull_mpi: %s: %s\n", what, s.message().c_str());
  MPI_Abort(MPI_COMM_WORLD, 1);
}

// One session of `rounds` push+pull rounds (after 2 warm-up rounds) over
// `transport`; every rank calls it. Returns the slowest worker's seconds per
// round (on every rank).
double session(int64_t bytes, const JobLayout& layout, int rounds, bool mpi, MPI_Comm transport, MPI_Comm servers) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const int64_t n = bytes / 4;
  const ParamTable table = flat_table(n);
  auto plan = ShardPlan::make(table.numels(), layout.servers, 4 << 20);
  must(plan.status(), "plan");
  zmq::context_t ctx(2);
  JobConfig job;
  job.optim.clip_norm = 1.0;
  std::unique_ptr<ShardServer> server;
  std::unique_ptr<GradStatsReducer> reducer;
  Router* bound = nullptr;
  if (layout.is_server(rank)) {
    auto r = Router::bind(ctx, "tcp://127.0.0.1:0");
    must(r.status(), "bind");
    bound = r->get();
    if (layout.servers == 1) {
      reducer = std::make_unique<SingleServerReducer>();
    } else {
      reducer = std::make_unique<MpiStatsReducer>(servers);
    }
    std::vector<float> w0(static_cast<size_t>(n), 0.01f);
    server = std::make_unique<ShardServer>(job, table, *plan, w0.data(), reducer.get(), std::move(*r),
                                           ShardServerOptions{kJob, layout.server_index(rank), layout, 120.0});
  }
  // Every rank's endpoint (servers' only matter).
  char mine[256] = {};
  if (bound) std::snprintf(mine, sizeof(mine), "%s", bound->endpoint().c_str());
  std::vector<char> all(256 * static_cast<size_t>(layout.nodes()));
  MPI_Allgather(mine, 256, MPI_CHAR, all.data(), 256, MPI_CHAR, MPI_COMM_WORLD);
  double seconds = 0;
  if (server) {
    std::unique_ptr<MpiGateway> gateway;
    if (mpi) {
      std::vector<int> workers;
      for (int w = 0; w < layout.workers; ++w) workers.push_back(layout.worker_rank(w));
      auto g = MpiGateway::start(ctx, *bound, transport, workers, max_frame_bytes(4 << 20), "bench server");
      must(g.status(), "gateway");
      gateway = std::move(*g);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    must(server->serve(), "serve");
  } else if (layout.is_worker(rank)) {
    std::vector<std::unique_ptr<Channel>> channels;
    for (int k = 0; k < layout.servers; ++k) {
      const int peer = layout.server_rank(k);
      if (mpi) {
        channels.push_back(
            std::make_unique<MpiChannel>(transport, peer, fmt::format("server {}", k), max_frame_bytes(4 << 20)));
      } else {
        auto d = Dealer::connect(ctx, std::string(all.data() + 256 * peer), fmt::format("server {}", k));
        must(d.status(), "connect");
        channels.push_back(std::move(*d));
      }
    }
    auto c = RemoteParameterClient::connect(*plan, std::move(channels),
                                            RemoteClientOptions{kJob, layout.worker_index(rank), layout, 120.0});
    must(c.status(), "client");
    MPI_Barrier(MPI_COMM_WORLD);
    std::vector<float> g(static_cast<size_t>(n), 0.001f), weights(static_cast<size_t>(n));
    Stopwatch sw;
    for (int r = 0; r < rounds + 2; ++r) {
      if (r == 2) sw.reset();
      must((*c)->push(r, 100, 0.0, g.data()), "push");
      must((*c)->pull(r + 1, weights.data()).status(), "pull");
    }
    seconds = sw.seconds() / rounds;
    must((*c)->shutdown(), "shutdown");
  } else {
    MPI_Barrier(MPI_COMM_WORLD);
  }
  double worst = 0;
  MPI_Allreduce(&seconds, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}

// Raw ZeroMQ between the same processes: a PAIR socket per (server,
// worker); per round each worker sends each server bytes / S and waits for
// as many back.
double raw_session(int64_t bytes, const JobLayout& layout, int rounds) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  zmq::context_t ctx(2);
  const size_t part = static_cast<size_t>(bytes / layout.servers);
  auto buffer = std::make_shared<std::vector<char>>(part, 1);
  std::vector<std::unique_ptr<zmq::socket_t>> pairs;
  // Server k binds one PAIR per worker; the endpoints go round by MPI.
  std::vector<char> mine(256 * static_cast<size_t>(layout.workers), '\0');
  if (layout.is_server(rank)) {
    for (int w = 0; w < layout.workers; ++w) {
      pairs.push_back(std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::pair));
      pairs.back()->bind("tcp://127.0.0.1:0");
      std::snprintf(mine.data() + 256 * w, 256, "%s", pairs.back()->get(zmq::sockopt::last_endpoint).c_str());
    }
  }
  std::vector<char> all(mine.size() * static_cast<size_t>(layout.nodes()));
  MPI_Allgather(mine.data(), static_cast<int>(mine.size()), MPI_CHAR, all.data(), static_cast<int>(mine.size()),
                MPI_CHAR, MPI_COMM_WORLD);
  if (layout.is_worker(rank)) {
    const int w = layout.worker_index(rank);
    for (int k = 0; k < layout.servers; ++k) {
      pairs.push_back(std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::pair));
      pairs.back()->connect(all.data() + mine.size() * static_cast<size_t>(layout.server_rank(k)) + 256 * w);
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
  auto message = [&] {
    auto* keep = new std::shared_ptr<std::vector<char>>(buffer);
    return zmq::message_t(
        buffer->data(), buffer->size(),
        [](void*, void* hint) { delete static_cast<std::shared_ptr<std::vector<char>>*>(hint); }, keep);
  };
  double seconds = 0;
  if (layout.is_server(rank)) {
    for (int r = 0; r < rounds + 2; ++r)
      for (auto& p : pairs) {
        zmq::message_t in;
        if (!p->recv(in)) std::abort();
        zmq::message_t out = message();
        p->send(out, zmq::send_flags::none);
      }
  } else if (layout.is_worker(rank)) {
    Stopwatch sw;
    for (int r = 0; r < rounds + 2; ++r) {
      if (r == 2) sw.reset();
      for (auto& p : pairs) {
        zmq::message_t out = message();
        p->send(out, zmq::send_flags::none);
      }
      for (auto& p : pairs) {
        zmq::message_t in;
        if (!p->recv(in)) std::abort();
      }
    }
    seconds = sw.seconds() / rounds;
  }
  double worst = 0;
  MPI_Allreduce(&seconds, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  restart_with_passive_openmp();  // as pst does (core/cpus.h): OpenMP threads sleep while they wait
  keep_freed_memory();            // as pst does (core/memory.h)
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int servers = 1, rounds = 20, repeats = 5;
  for (int i = 1; i + 1 < argc; ++i) {
    if (!std::strcmp(argv[i], "--servers"))
      servers = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--rounds"))
      rounds = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--repeats"))
      repeats = std::atoi(argv[++i]);
  }
  if (provided < MPI_THREAD_MULTIPLE || size < servers + 2) {
    if (rank == 0)
      std::fprintf(stderr, "pushpull_mpi: needs MPI_THREAD_MULTIPLE and mpirun -np >= servers + 2 (got %d ranks)\n",
                   size);
    MPI_Finalize();
    return 2;
  }
  const JobLayout layout{servers, size - 1 - servers};
  MPI_Comm transport, server_comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &transport);
  MPI_Comm_set_errhandler(transport, MPI_ERRORS_RETURN);
  MPI_Comm_split(MPI_COMM_WORLD, layout.is_server(rank) ? 1 : 0, rank, &server_comm);
  if (rank == 0)
    std::printf("S=%d W=%d, %d rounds x %d repeats, alternating\n%-8s %12s %12s %12s %26s %14s\n", layout.servers,
                layout.workers, rounds, repeats, "size", "zmq us", "mpi us", "raw zmq us", "zmq/mpi median [min-max]",
                "raw/mpi");
  for (int64_t bytes : {int64_t{4096}, int64_t{4} << 20, int64_t{64} << 20}) {
    const int r = bytes <= 4096 ? rounds * 25 : bytes >= (int64_t{64} << 20) ? std::max(2, rounds / 5) : rounds;
    std::vector<double> zmq_s, mpi_s, raw_s, ratio, raw_ratio;
    for (int k = 0; k < repeats; ++k) {
      zmq_s.push_back(session(bytes, layout, r, false, transport, server_comm));
      mpi_s.push_back(session(bytes, layout, r, true, transport, server_comm));
      raw_s.push_back(raw_session(bytes, layout, r));
      ratio.push_back(zmq_s.back() / mpi_s.back());
      raw_ratio.push_back(raw_s.back() / mpi_s.back());
    }
    const Spread q = spread(ratio);
    if (rank == 0)
      std::printf("%-8s %12.1f %12.1f %12.1f %14.2f [%.2f-%.2f] %14.2f\n",
                  bytes <= 4096 ? "4 KiB" : fmt::format("{} MiB", bytes >> 20).c_str(), median(zmq_s) * 1e6,
                  median(mpi_s) * 1e6, median(raw_s) * 1e6, q.median, q.min, q.max, median(raw_ratio));
  }
  MPI_Comm_free(&server_comm);
  MPI_Comm_free(&transport);
  MPI_Finalize();
  return 0;
}
