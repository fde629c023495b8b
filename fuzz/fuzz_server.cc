// libFuzzer target: a parameter server's message handling, for real. Each
// input is one multipart sent through a pst Dealer to a ShardServer's Router
// over inproc (the server runs on its own thread, as in a job); the target
// waits until the server has taken the message off its socket and handled
// it. A server that stops (both workers said Shutdown, or an error) is
// replaced by a fresh one. A crash, a leak, a hang (no progress in 10 s)
// or a server that takes a spoofed or invalid message fail the run.
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>

#include "comm/grad_stats.h"
#include "comm/socket.h"
#include "fuzz/frames.h"
#include "model/param_table.h"
#include "ps/shard_server.h"

namespace {

using namespace pst;

struct Served {
  JobConfig job = fuzz::fuzz_job();
  ParamTable table = build_param_table(job.model, 12, 12);
  ShardPlan plan = *ShardPlan::make(table.numels(), 1, fuzz::kFuzzChunkBytes);
  std::vector<float> w0;
  zmq::context_t ctx;
  SingleServerReducer reducer;
  std::unique_ptr<ShardServer> server;
  std::unique_ptr<Dealer> dealer;
  std::thread thread;
  std::atomic<bool> done{false};
  int generation = 0;

  Served() : w0(static_cast<size_t>(table.total_numel())) {
    init_params(table, 1, w0.data());
    start();
  }
  void start() {
    const std::string endpoint = "inproc://fuzz-server-" + std::to_string(generation++);
    auto router = Router::bind(ctx, endpoint);
    if (!router.ok()) __builtin_trap();
    ShardServerOptions so{fuzz::kFuzzJob, 0, JobLayout{1, 2}, 1e6};
    server = std::make_unique<ShardServer>(job, table, plan, w0.data(), &reducer, std::move(*router), so);
    done = false;
    thread = std::thread([this] {
      (void)server->serve();
      done = true;
    });
    auto d = Dealer::connect(ctx, endpoint, "server 0");
    if (!d.ok()) __builtin_trap();
    dealer = std::move(*d);
  }
  void restart() {
    thread.join();
    dealer.reset();
    server.reset();
    start();
  }
};

Served& served() {
  static Served* s = new Served();  // lives for the process: libFuzzer exits without destructors
  return *s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Served& s = served();
  if (s.done) s.restart();
  fuzz::deliver(
      *s.dealer, fuzz::split_frames(data, size), [&] { return s.server->received(); }, [&] { return s.done.load(); });
  return 0;
}
