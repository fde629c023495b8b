// The parameter server's round against the limits of this machine, measured
// in one run over TCP on loopback, each node a thread.
//
// pst: W workers (RemoteParameterClient) and S servers (ShardServer, the
// real BSP round: aggregation, global norm, AdamW, snapshot). Each round a
// worker pushes its gradient of N bytes (float32) and pulls the new weights.
// Against two baselines, each what one half of the round would cost alone:
//  - raw ZeroMQ: W pairs of PUSH/PULL sockets, each moving the round's 2 x N
//    bytes as zero-copy messages of the shard plan's chunk size;
//  - a plain fused AdamW loop (read w, m, v, g; write w, m, v) over all the
//    round's parameters on every thread (OpenMP), no communication.
// A pipelined round (receive, update and send overlapping) costs about the
// larger of the two: the table prints round / max(zeromq, adamw), the
// three alternated `--repeats` times, the median ratio with its min-max.
// That holds where cores are spare. Each of the three also takes CPU time
// (all the process's threads, the kernel's copies included), and the round
// can take no less than the two halves' CPU time spread over the cores this
// process may use: the table prints that bound too, max(zeromq, adamw,
// (cpu zeromq + cpu adamw) / cores), and round / bound.
// "update ms" is the slowest server's update, timed on its update thread.
//
// The latency of a 4 KiB push + pull round trip (S = W = 1) against a raw
// ZeroMQ round trip of the same bytes (4 KiB up, 4 KiB back, DEALER/ROUTER),
// alternated the same way.
//
// --security-only: what each security.mode costs: rounds of 4 KiB and 4 MiB
// (S = W = 1) with sockets open (none), with the job's secret (PLAIN, checked
// once per connection) and with CURVE (every byte encrypted), as ratios to
// none measured in the same run.
//
// --wire: cluster.wire = bf16 against fp32, rounds of the same parameters
// alternated (fp32, bf16, bf16 with stochastic rounding, fp32, ...)
// `--repeats` times, the median ratio of their round times with its
// min-max, and the bytes each moves.
//
// --latency: only the 4 KiB round trip, with the CPU time and the context
// switches (every thread of the process) a round trip costs on each side.
//
// --update: the server's update alone, no communication: one server's
// ShardOptimizer (W pushes already in their slots; the token-weighted sum,
// the sum of squares, clipped AdamW) writing the next snapshot as the server
// does (ShardOptimizer::apply's next), and the same updating in place and then
// copying the weights into a snapshot (the server before it wrote them in
// place), against the plain fused AdamW loop; the three alternated.
//
//   pushpull [--rounds N] [--repeats K] [--chunk-mib M] [--security-only | --wire | --update | --latency]
#include <sys/resource.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "bench/flat_table.h"
#include "bench/median.h"
#include "comm/remote_client.h"
#include "comm/security.h"
#include "core/cpus.h"
#include "core/memory.h"
#include "core/timer.h"
#include "ps/shard_optimizer.h"
#include "ps/shard_server.h"

using namespace pst;

namespace {

constexpr uint64_t kJob = 0xbe;

// CPU seconds of every thread of this process, user and system.
double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// The cores this process may run on: the machine's, its affinity mask's
// and its cgroup quota's (core/cpus.h), whatever OMP_NUM_THREADS says.
int usable_cores() {
  CpuSources sources = read_cpu_sources();
  sources.omp_num_threads.reset();
  return cpu_budget(sources).cpus;
}

// Context switches of every thread of this process so far, voluntary
// (a wait) and involuntary (preempted).
double process_switches() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_nvcsw + u.ru_nivcsw);
}

// Wall and process CPU time, and context switches, from reset() on, per round.
class Meter {
 public:
  void reset() {
    wall_.reset();
    cpu_ = process_cpu_seconds();
    switches_ = process_switches();
  }
  double wall(int rounds) const { return wall_.seconds() / rounds; }
  double cpu(int rounds) const { return (process_cpu_seconds() - cpu_) / rounds; }
  double switches(int rounds) const { return (process_switches() - switches_) / rounds; }

 private:
  Stopwatch wall_;
  double cpu_ = 0;
  double switches_ = 0;
};

struct Timing {
  double seconds = 0;      // wall time per round
  double cpu_seconds = 0;  // the process's CPU time per round
  double switches = 0;     // the process's context switches per round
};

struct PstRound : Timing {
  double update_seconds = 0;  // per round, the slowest server's update
};

// The Timings of the repeats of one measurement.
struct Samples {
  std::vector<double> seconds, cpu_seconds, switches;
  void add(const Timing& t) {
    seconds.push_back(t.seconds);
    cpu_seconds.push_back(t.cpu_seconds);
    switches.push_back(t.switches);
  }
};

// Push + pull, averaged over `rounds` after 2 warm-up rounds.
PstRound pst_round(int64_t bytes, int servers, int workers, int rounds, int64_t chunk_bytes,
                   SecurityMode mode = SecurityMode::kNone, bool bf16 = false, bool stochastic = false) {
  const int64_t n = bytes / 4;
  const ParamTable table = flat_table(n);
  JobConfig job;
  job.optim.clip_norm = 1.0;
  auto plan = ShardPlan::make(table.numels(), servers, chunk_bytes);
  std::vector<float> w0(static_cast<size_t>(n), 0.01f);
  zmq::context_t ctx(2);
  auto keys = make_job_keys();
  if (!keys.ok()) std::abort();
  auto security = JobSecurity::enable(ctx, mode, *keys);
  if (!security.ok()) std::abort();
  const JobLayout layout{servers, workers};
  std::unique_ptr<GradStatsReducer> reducer;
  if (servers == 1) {
    reducer = std::make_unique<SingleServerReducer>();
  } else {
    reducer = std::make_unique<ThreadStatsReducer>(servers);
  }
  std::vector<std::unique_ptr<ShardServer>> srv;
  std::vector<std::string> endpoints;
  for (int k = 0; k < servers; ++k) {
    auto r = Router::bind(ctx, "tcp://127.0.0.1:0");
    if (!r.ok()) std::abort();
    endpoints.push_back((*r)->endpoint());
    ShardServerOptions so{kJob, k, layout, 120.0};
    so.bf16_wire = bf16;
    srv.push_back(std::make_unique<ShardServer>(job, table, *plan, w0.data(), reducer.get(), std::move(*r), so));
  }
  std::vector<std::thread> threads;
  for (auto& s : srv)
    threads.emplace_back([&s] {
      const Status st = s->serve();
      if (!st.ok()) std::fprintf(stderr, "%s\n", st.message().c_str());
    });
  std::vector<Timing> timing(static_cast<size_t>(workers));
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      RemoteClientOptions co{kJob, w, layout, 120.0};
      co.bf16_wire = bf16;
      co.stochastic_rounding = stochastic;
      auto c = RemoteParameterClient::connect(ctx, *plan, endpoints, co);
      std::vector<float> g(static_cast<size_t>(n), 0.001f), weights(static_cast<size_t>(n));
      Meter meter;
      for (int r = 0; r < rounds + 2; ++r) {
        if (r == 2) meter.reset();
        if (!(*c)->push(r, 100, 0.0, g.data()).ok() || !(*c)->pull(r + 1, weights.data()).ok()) std::abort();
      }
      timing[static_cast<size_t>(w)] = {meter.wall(rounds), meter.cpu(rounds), meter.switches(rounds)};
      (void)(*c)->shutdown();
    });
  }
  for (auto& t : threads) t.join();
  PstRound r;
  for (const Timing& t : timing) {
    r.seconds = std::max(r.seconds, t.seconds);
    r.cpu_seconds = std::max(r.cpu_seconds, t.cpu_seconds);
    r.switches = std::max(r.switches, t.switches);
  }
  for (auto& s : srv)
    r.update_seconds = std::max(r.update_seconds, s->update_seconds() / static_cast<double>(s->updates()));
  return r;
}

// Seconds per round of W concurrent PUSH/PULL pairs, each moving 2 x bytes
// in messages of at most chunk_bytes (as pst's shard plan cuts them: a
// message over glibc's largest mmap threshold would be mapped and faulted
// in anew each time).
Timing zmq_round(int64_t bytes, int pairs, int rounds, int64_t chunk_bytes) {
  const int64_t size = std::min(bytes, chunk_bytes);
  const int per_round = static_cast<int>(2 * ((bytes + size - 1) / size));
  zmq::context_t ctx(2);
  std::vector<Timing> timing(static_cast<size_t>(pairs));
  std::vector<std::thread> threads;
  std::vector<std::string> endpoints(static_cast<size_t>(pairs));
  std::vector<std::unique_ptr<zmq::socket_t>> pulls;
  for (int p = 0; p < pairs; ++p) {
    pulls.push_back(std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::pull));
    pulls.back()->bind("tcp://127.0.0.1:0");
    endpoints[static_cast<size_t>(p)] = pulls.back()->get(zmq::sockopt::last_endpoint);
  }
  auto buffer = std::make_shared<std::vector<char>>(static_cast<size_t>(size), 1);
  for (int p = 0; p < pairs; ++p) {
    threads.emplace_back([&, p] {
      zmq::socket_t& in = *pulls[static_cast<size_t>(p)];
      Meter meter;
      for (int r = 0; r < per_round * (rounds + 2); ++r) {
        if (r == 2 * per_round) meter.reset();
        zmq::message_t m;
        if (!in.recv(m)) std::abort();
      }
      timing[static_cast<size_t>(p)] = {meter.wall(rounds), meter.cpu(rounds)};
    });
    threads.emplace_back([&, p] {
      zmq::socket_t out(ctx, zmq::socket_type::push);
      out.connect(endpoints[static_cast<size_t>(p)]);
      for (int r = 0; r < per_round * (rounds + 2); ++r) {
        auto* keep = new std::shared_ptr<std::vector<char>>(buffer);
        zmq::message_t m(
            buffer->data(), buffer->size(),
            [](void*, void* hint) { delete static_cast<std::shared_ptr<std::vector<char>>*>(hint); }, keep);
        out.send(m, zmq::send_flags::none);
      }
    });
  }
  for (auto& t : threads) t.join();
  Timing worst;
  for (const Timing& t : timing) {
    worst.seconds = std::max(worst.seconds, t.seconds);
    worst.cpu_seconds = std::max(worst.cpu_seconds, t.cpu_seconds);
  }
  return worst;
}

// A round trip of `bytes` up and `bytes` back between a DEALER and a ROUTER
// that answers at once.
Timing zmq_round_trip(int64_t bytes, int rounds) {
  zmq::context_t ctx(1);
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.bind("tcp://127.0.0.1:0");
  const std::string endpoint = router.get(zmq::sockopt::last_endpoint);
  std::thread echo([&] {
    for (int r = 0; r < rounds + 2; ++r) {
      zmq::message_t id, m;
      if (!router.recv(id) || !router.recv(m)) std::abort();
      router.send(id, zmq::send_flags::sndmore);
      router.send(m, zmq::send_flags::none);
    }
  });
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.connect(endpoint);
  std::vector<char> out(static_cast<size_t>(bytes), 1);
  Meter meter;
  for (int r = 0; r < rounds + 2; ++r) {
    if (r == 2) meter.reset();
    dealer.send(zmq::buffer(out), zmq::send_flags::none);
    zmq::message_t back;
    if (!dealer.recv(back)) std::abort();
  }
  const Timing t{meter.wall(rounds), meter.cpu(rounds), meter.switches(rounds)};
  echo.join();
  return t;
}

// Seconds per pass of a plain fused AdamW loop over n parameters on every
// OpenMP thread: what the servers' update would cost with nothing else to do.
Timing adamw_round(int64_t n, int rounds) {
  std::vector<float> w(static_cast<size_t>(n), 0.01f), m(static_cast<size_t>(n)), v(static_cast<size_t>(n)),
      g(static_cast<size_t>(n), 0.001f);
  float* W = w.data();
  float* M = m.data();
  float* V = v.data();
  const float* G = g.data();
  const float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, decay = 1.0f - 1e-3f * 0.01f;
  Meter meter;
  for (int r = 0; r < rounds + 2; ++r) {
    if (r == 2) meter.reset();
    const float step = -1e-3f / (1.0f - std::pow(beta1, static_cast<float>(r + 1)));
    const float bc2 = std::sqrt(1.0f - std::pow(beta2, static_cast<float>(r + 1)));
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float mi = beta1 * M[i] + (1.0f - beta1) * G[i];
      const float vi = beta2 * V[i] + (1.0f - beta2) * G[i] * G[i];
      M[i] = mi;
      V[i] = vi;
      W[i] = W[i] * decay + step * mi / (std::sqrt(vi) / bc2 + eps);
    }
  }
  const Timing t{meter.wall(rounds), meter.cpu(rounds)};
  if (!std::isfinite(W[n - 1])) std::abort();  // keeps the loop
  return t;
}

// Seconds per update of one server's shard of n floats after `pushes`
// workers' pushes (module comment, --update): the pushes' copies into their
// slots are not timed (the receive thread makes them as chunks arrive).
// copy: update in place, then copy the weights into a snapshot.
double server_update(int64_t n, int pushes, int rounds, bool copy, int64_t chunk_bytes) {
  const ParamTable table = flat_table(n);
  JobConfig job;
  job.optim.clip_norm = 1.0;
  auto plan = ShardPlan::make(table.numels(), 1, chunk_bytes);
  if (!plan.ok()) std::abort();
  std::vector<float> w0(static_cast<size_t>(n), 0.01f), g(static_cast<size_t>(n), 0.001f);
  ShardOptimizer opt(job, table, plan->owned(0), w0.data());
  std::vector<float> snapshots[2] = {std::vector<float>(static_cast<size_t>(n)),
                                     std::vector<float>(static_cast<size_t>(n))};
  double seconds = 0;
  for (int r = 0; r < rounds + 2; ++r) {
    for (int p = 0; p < pushes; ++p) opt.add_push(g.data(), 100, 0.0);
    Stopwatch sw;
    std::vector<float>& next = snapshots[r % 2];
    if (copy) {
      opt.apply(opt.reduce());
      opt.copy_local_weights(next.data());
    } else {
      opt.apply(opt.reduce(), /*clip=*/true, nullptr, next.data());
    }
    if (r >= 2) seconds += sw.seconds();
  }
  if (!std::isfinite(snapshots[0][static_cast<size_t>(n - 1)])) std::abort();
  return seconds / rounds;
}

// The server's update against the fused loop (module comment, --update).
void update_against_loop(int rounds, int repeats, int64_t chunk_bytes) {
  std::printf("%-5s %-7s %13s %12s %10s %22s %22s\n", "MiB", "pushes", "to snapshot", "then copy", "adamw ms",
              "snapshot/adamw", "snapshot/then copy");
  for (int64_t mib : {4, 64}) {
    for (int pushes : {1, 2}) {
      const int64_t n = (mib << 20) / 4;
      const int r = mib >= 64 ? std::max(2, rounds / 2) : rounds * 4;
      std::vector<double> next, copy, adamw, vs_loop, vs_copy;
      for (int rep = 0; rep < repeats; ++rep) {
        next.push_back(server_update(n, pushes, r, false, chunk_bytes));
        copy.push_back(server_update(n, pushes, r, true, chunk_bytes));
        adamw.push_back(adamw_round(n, r).seconds);
        vs_loop.push_back(next.back() / adamw.back());
        vs_copy.push_back(next.back() / copy.back());
      }
      const Spread a = spread(vs_loop), c = spread(vs_copy);
      std::printf("%-5lld %-7d %13.2f %12.2f %10.2f %8.2f [%.2f-%.2f] %10.2f [%.2f-%.2f]\n",
                  static_cast<long long>(mib), pushes, median(next) * 1e3, median(copy) * 1e3, median(adamw) * 1e3,
                  a.median, a.min, a.max, c.median, c.min, c.max);
    }
  }
}

// A 4 KiB push + pull round trip against a raw ZeroMQ one (module comment),
// with each one's CPU time and context switches (every thread of the
// process) per round trip.
void small_round_trip(int rounds, int repeats, int64_t chunk_bytes) {
  Samples pst, raw;
  std::vector<double> ratio;
  for (int rep = 0; rep < repeats; ++rep) {
    pst.add(pst_round(4096, 1, 1, rounds, chunk_bytes));
    raw.add(zmq_round_trip(4096, rounds));
    ratio.push_back(pst.seconds.back() / raw.seconds.back());
  }
  const Spread q = spread(ratio);
  std::printf(
      "4 KiB push+pull round trip (S=W=1): %.1f us; raw ZeroMQ round trip of 4 KiB: %.1f us; "
      "pst/zeromq %.2f [%.2f-%.2f]\n"
      "  CPU us per round trip: pst %.1f, raw %.1f; context switches per round trip: pst %.1f, raw %.1f\n",
      median(pst.seconds) * 1e6, median(raw.seconds) * 1e6, q.median, q.min, q.max, median(pst.cpu_seconds) * 1e6,
      median(raw.cpu_seconds) * 1e6, median(pst.switches), median(raw.switches));
}

// The round against its two limits (module comment).
void round_against_limits(int rounds, int repeats, int64_t chunk_bytes) {
  const int cores = usable_cores();
  std::printf("%d cores; CPU ms per round: every thread of the process, the kernel's work for it included\n", cores);
  std::printf("%-8s %-5s %9s %10s %9s %20s %9s %9s %9s %9s %20s %10s\n", "MiB/wkr", "S/W", "round ms", "zeromq ms",
              "adamw ms", "round/max [min-max]", "cpu round", "cpu zmq", "cpu adamw", "bound ms", "round/bound [m-M]",
              "update ms");
  for (int64_t mib : {4, 64}) {
    for (auto [s, w] : {std::pair{1, 1}, std::pair{2, 2}}) {
      const int64_t bytes = mib << 20;
      const int r = mib >= 64 ? std::max(2, rounds / 4) : rounds;
      Samples pst, raw, adamw;
      std::vector<double> bound, update, ratio, to_bound;
      for (int rep = 0; rep < repeats; ++rep) {
        const PstRound round = pst_round(bytes, s, w, r, chunk_bytes);
        const Timing z = zmq_round(bytes, w, r, chunk_bytes);
        const Timing a = adamw_round(bytes / 4, r);  // the model, whatever W
        pst.add(round);
        update.push_back(round.update_seconds);
        raw.add(z);
        adamw.add(a);
        bound.push_back(std::max({z.seconds, a.seconds, (z.cpu_seconds + a.cpu_seconds) / cores}));
        ratio.push_back(round.seconds / std::max(z.seconds, a.seconds));
        to_bound.push_back(round.seconds / bound.back());
      }
      const Spread q = spread(ratio), b = spread(to_bound);
      std::printf(
          "%-8lld %d/%-3d %9.2f %10.2f %9.2f %8.2f [%.2f-%.2f] %9.2f %9.2f %9.2f %9.2f %8.2f [%.2f-%.2f] %10.2f\n",
          static_cast<long long>(mib), s, w, median(pst.seconds) * 1e3, median(raw.seconds) * 1e3,
          median(adamw.seconds) * 1e3, q.median, q.min, q.max, median(pst.cpu_seconds) * 1e3,
          median(raw.cpu_seconds) * 1e3, median(adamw.cpu_seconds) * 1e3, median(bound) * 1e3, b.median, b.min, b.max,
          median(update) * 1e3);
    }
  }
  small_round_trip(rounds * 50, repeats, chunk_bytes);
}

// cluster.wire = bf16 against fp32 (module comment).
void compare_wire(int rounds, int repeats, int64_t chunk_bytes) {
  std::printf("%-8s %-5s %13s %13s %10s %10s %10s %8s %13s %8s %13s\n", "MiB", "S/W", "fp32 MiB/rnd", "bf16 MiB/rnd",
              "fp32 ms", "bf16 ms", "sr ms", "bf16/fp32", "[min-max]", "sr/bf16", "[min-max]");
  for (int64_t mib : {4, 64}) {
    for (auto [s, w] : {std::pair{1, 1}, std::pair{2, 2}}) {
      const int64_t bytes = mib << 20;
      const int r = mib >= 64 ? std::max(2, rounds / 4) : rounds;
      std::vector<double> fp32, bf16, sr, ratio, sr_ratio;
      for (int rep = 0; rep < repeats; ++rep) {
        fp32.push_back(pst_round(bytes, s, w, r, chunk_bytes, SecurityMode::kNone, false).seconds);
        bf16.push_back(pst_round(bytes, s, w, r, chunk_bytes, SecurityMode::kNone, true).seconds);
        sr.push_back(pst_round(bytes, s, w, r, chunk_bytes, SecurityMode::kNone, true, true).seconds);
        ratio.push_back(bf16.back() / fp32.back());
        sr_ratio.push_back(sr.back() / bf16.back());
      }
      // A round moves each worker's gradient up and the weights back down.
      const double moved = 2.0 * static_cast<double>(mib) * w;
      const Spread q = spread(ratio), qs = spread(sr_ratio);
      std::printf("%-8lld %d/%-3d %13.0f %13.0f %10.2f %10.2f %10.2f %8.2f   [%.2f-%.2f] %8.2f   [%.2f-%.2f]\n",
                  static_cast<long long>(mib), s, w, moved, moved / 2, median(fp32) * 1e3, median(bf16) * 1e3,
                  median(sr) * 1e3, q.median, q.min, q.max, qs.median, qs.min, qs.max);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  restart_with_passive_openmp();  // as pst does (core/cpus.h): OpenMP threads sleep while they wait
  keep_freed_memory();            // as pst does (core/memory.h)
  int rounds = 10;
  int64_t chunk_mib = 4;
  bool security_only = false, wire = false, update = false, latency = false;
  int repeats = 5;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--security-only"))
      security_only = true;
    else if (!std::strcmp(argv[i], "--wire"))
      wire = true;
    else if (!std::strcmp(argv[i], "--update"))
      update = true;
    else if (!std::strcmp(argv[i], "--latency"))
      latency = true;
    else if (!std::strcmp(argv[i], "--repeats") && i + 1 < argc)
      repeats = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--rounds") && i + 1 < argc)
      rounds = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--chunk-mib") && i + 1 < argc)
      chunk_mib = std::atoll(argv[++i]);
  }
  if (wire) {
    compare_wire(rounds, repeats, chunk_mib << 20);
    return 0;
  }
  if (update) {
    update_against_loop(rounds, repeats, chunk_mib << 20);
    return 0;
  }
  if (latency) {
    small_round_trip(rounds * 50, repeats, chunk_mib << 20);
    return 0;
  }
  if (!security_only) {
    round_against_limits(rounds, repeats, chunk_mib << 20);
    return 0;
  }
  // security.mode: the modes interleaved, three times each, the best kept.
  std::printf("%-8s %12s %12s %12s %14s %14s\n", "size", "none us", "secret us", "curve us", "secret/none",
              "curve/none");
  for (int64_t bytes : {int64_t{4096}, int64_t{4} << 20}) {
    const int r = bytes <= 4096 ? rounds * 50 : rounds;
    double best[3] = {1e30, 1e30, 1e30};
    for (int rep = 0; rep < 3; ++rep) {
      const SecurityMode modes[3] = {SecurityMode::kNone, SecurityMode::kSecret, SecurityMode::kCurve};
      for (int i = 0; i < 3; ++i)
        best[i] = std::min(best[i], pst_round(bytes, 1, 1, r, chunk_mib << 20, modes[i]).seconds);
    }
    std::printf("%-8s %12.1f %12.1f %12.1f %14.2f %14.2f\n", bytes <= 4096 ? "4 KiB" : "4 MiB", best[0] * 1e6,
                best[1] * 1e6, best[2] * 1e6, best[1] / best[0], best[2] / best[0]);
  }
  return 0;
}
