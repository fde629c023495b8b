// libFuzzer target: the scheduler's message handling, for real. Each input
// is one multipart sent through a pst Dealer to run_scheduler's Router over
// inproc (the scheduler runs on its own thread, as in a --role job of 1
// server and 1 worker, with a place for a second worker to join); the target
// waits until the scheduler has handled it.
// Registrations can complete the rendezvous and Shutdowns end the job: a
// scheduler that returns is replaced by a fresh one. A crash, a leak or a
// hang (no progress in 10 s) fails the run.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>

#include "comm/socket.h"
#include "fuzz/frames.h"
#include "scheduler/scheduler.h"

namespace {

using namespace pst;

struct Scheduled {
  zmq::context_t ctx;
  std::unique_ptr<Router> router;
  std::unique_ptr<Dealer> dealer;
  std::atomic<int64_t> received{0};
  std::atomic<bool> done{false};
  std::thread thread;
  int generation = 0;

  Scheduled() { start(); }
  void start() {
    const std::string endpoint = "inproc://fuzz-scheduler-" + std::to_string(generation++);
    auto r = Router::bind(ctx, endpoint);
    if (!r.ok()) __builtin_trap();
    router = std::move(*r);
    done = false;
    thread = std::thread([this] {
      SchedulerOptions o;
      o.job_id = fuzz::kFuzzJob;
      o.layout = JobLayout{1, 2};  // a second worker's place, for joins
      o.start_workers = 1;
      o.joins = true;
      o.timeout_s = 1e6;
      o.start_timeout_s = 1e6;
      o.received = &received;
      (void)run_scheduler(*router, o);
      done = true;
    });
    auto d = Dealer::connect(ctx, endpoint, "the scheduler");
    if (!d.ok()) __builtin_trap();
    dealer = std::move(*d);
  }
  void restart() {
    thread.join();
    dealer.reset();
    router.reset();
    start();
  }
};

Scheduled& scheduled() {
  static Scheduled* s = new Scheduled();  // lives for the process: libFuzzer exits without destructors
  return *s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Scheduled& s = scheduled();
  if (s.done) s.restart();
  fuzz::deliver(
      *s.dealer, fuzz::split_frames(data, size), [&] { return s.received.load(); }, [&] { return s.done.load(); });
  return 0;
}
