// A node's heartbeat against a scheduler the test plays over a real ZeroMQ
// socket (inproc): the test answers beats, or stops answering, and watches
// when the node takes the scheduler as gone. Silence counts from the last
// acknowledgement or from the start of the scheduler's watch (watch(), once
// the job's start barrier has passed); before either, a scheduler that
// answers nothing (an mpirun job's, still at MPI's barrier) is not gone.
#include "scheduler/heartbeat.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include <gtest/gtest.h>

#include "comm/message.h"
#include "comm/socket.h"
#include "tests/test_util.h"

namespace pst {
namespace {

constexpr uint64_t kJob = 0x4b;
constexpr double kInterval = 0.1;  // seconds between beats
constexpr double kLostAfter = 0.5;

// The scheduler's side: counts the beats that reach it and acknowledges
// each, as scheduler.cc does, while `answering`.
class PlayedScheduler {
 public:
  explicit PlayedScheduler(zmq::context_t& ctx, const std::string& endpoint) {
    auto router = Router::bind(ctx, endpoint);
    EXPECT_TRUE(router.ok()) << router.status().to_string();
    router_ = std::move(*router);
    thread_ = std::thread([this] { run(); });
  }
  ~PlayedScheduler() {
    stop_ = true;
    thread_.join();
  }
  std::atomic<bool> answering{true};
  std::atomic<int> beats{0};

 private:
  void run() {
    while (!stop_) {
      auto m = router_->receive(Deadline::after(0.05), "heartbeats");
      if (!m.ok()) continue;
      Rejection why;
      auto in = InMessage::parse(std::move(m->frames), &why);
      if (!in || in->header().getKind() != wire::Kind::HEARTBEAT) continue;
      ++beats;
      if (!answering) continue;
      OutMessage ack(wire::Kind::HEARTBEAT, kJob, 0, 0, in->header().getRequestId());
      EXPECT_TRUE(router_->send(m->route, ack.finish(), Deadline::after(1)).ok());
    }
  }
  std::unique_ptr<Router> router_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// What on_lost saw.
struct Lost {
  std::atomic<int> calls{0};
  std::atomic<double> silent_s{0};
  Heartbeat::OnLost callback() {
    return [this](double s) {
      silent_s = s;
      ++calls;
    };
  }
  // Waits up to `limit_s` for the call.
  bool wait(double limit_s) const {
    return testing::poll_until(limit_s, [this] { return calls > 0; });
  }
};

// A node's heartbeat line to a played scheduler that acknowledges beats
// from the start, or not.
struct Line {
  Line(const std::string& endpoint, bool answering) : scheduler(ctx, endpoint) {
    scheduler.answering = answering;
    beat = std::make_unique<Heartbeat>(ctx, endpoint, kJob, 1, kInterval, nullptr, kLostAfter, lost.callback());
  }
  void wait_for_beats(int n) const {
    testing::poll_until(30, [&] { return scheduler.beats >= n; });
    ASSERT_GE(scheduler.beats.load(), n) << "the beats did not reach the played scheduler";
  }
  zmq::context_t ctx;
  PlayedScheduler scheduler;
  Lost lost;
  std::unique_ptr<Heartbeat> beat;  // ends first
};

// Beats in `windows` liveness windows.
int beats_in(double windows) { return static_cast<int>(windows * kLostAfter / kInterval); }

TEST(HeartbeatTest, ASchedulerThatStopsAcknowledgingIsTakenAsGone) {
  Line line("inproc://heartbeat-acked", true);
  // Answered beats for several windows: the scheduler is alive.
  line.wait_for_beats(beats_in(3));
  EXPECT_EQ(line.lost.calls.load(), 0);
  line.scheduler.answering = false;
  ASSERT_TRUE(line.lost.wait(30)) << "never taken as gone";
  EXPECT_GT(line.lost.silent_s.load(), kLostAfter);
  // Once only, however long the silence lasts.
  std::this_thread::sleep_for(std::chrono::duration<double>(3 * kLostAfter));
  EXPECT_EQ(line.lost.calls.load(), 1);
}

TEST(HeartbeatTest, SilenceBeforeTheWatchBeganDoesNotCount) {
  Line line("inproc://heartbeat-unwatched", false);
  // Beats go out for six windows and none is answered: still not gone.
  line.wait_for_beats(beats_in(6));
  EXPECT_EQ(line.lost.calls.load(), 0);
}

TEST(HeartbeatTest, ASchedulerThatAnswersNoBeatOnceItsWatchBeganIsTakenAsGone) {
  Line line("inproc://heartbeat-watched", false);
  line.wait_for_beats(2);
  line.beat->watch();  // the start barrier passed; the scheduler died before its first acknowledgement
  ASSERT_TRUE(line.lost.wait(30)) << "never taken as gone";
  EXPECT_GT(line.lost.silent_s.load(), kLostAfter);
}

}  // namespace
}  // namespace pst
