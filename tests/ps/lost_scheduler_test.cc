// Two parameter servers of a --role job over real ZeroMQ sockets (inproc),
// whose statistics meet at a scheduler played by the test, and a worker.
// The scheduler answers step 0 to server 0 only and dies: server 1, once it
// takes the scheduler as gone, asks server 0 for the sum and completes the
// step with it, so the worker's pull of step 1 holds the weights of one
// optimizer. At the next step neither server has the sum: both end with an
// error that says a checkpoint of step 1 is written, and that checkpoint is
// complete (server 0's manifest over both files) and holds the same weights.
// Idle servers whose scheduler and workers are lost together keep their
// last step too.
#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "comm/remote_client.h"
#include "comm/shard_plan.h"
#include "ps/checkpoint.h"
#include "ps/shard_optimizer.h"
#include "ps/shard_server.h"
#include "scheduler/client.h"
#include "tests/ps/fixtures.h"
#include "tests/test_util.h"

namespace pst {
namespace {

constexpr uint64_t kJob = 0x105e;
constexpr JobLayout kLayout{2, 1};

// Two live servers whose statistics go to a scheduler the test plays, each
// with the reducer of a --role job (which asks the other server once it has
// given the scheduler up), writing checkpoints under root.
struct TwoServers {
  explicit TwoServers(double timeout_s) {
    init_params(table, 5, w0.data());
    auto router = Router::bind(ctx, "inproc://lost-sched");
    EXPECT_TRUE(router.ok());
    scheduler = std::move(*router);
    for (int k = 0; k < kLayout.servers; ++k) {
      auto d = Dealer::connect(ctx, "inproc://lost-sched", "the scheduler");
      EXPECT_TRUE(d.ok());
      reducers.push_back(std::make_unique<SchedulerStatsReducer>(std::move(*d), kJob, kLayout.server_rank(k),
                                                                 PeerServers{&ctx, endpoints}));
      auto own = Router::bind(ctx, endpoints[static_cast<size_t>(k)]);
      EXPECT_TRUE(own.ok());
      ShardServerOptions so{kJob, k, kLayout, timeout_s};
      so.checkpoint_root = root.path();
      servers.push_back(
          std::make_unique<ShardServer>(job, table, plan, w0.data(), reducers.back().get(), std::move(*own), so));
    }
    for (int k = 0; k < kLayout.servers; ++k)
      serving.emplace_back([this, k] { served[static_cast<size_t>(k)] = servers[static_cast<size_t>(k)]->serve(); });
  }
  ~TwoServers() {
    for (auto& t : serving)
      if (t.joinable()) t.join();
  }
  void join() {
    for (auto& t : serving) t.join();
  }

  // The scheduler's side of step `step`: `count` parts, their sum, and
  // where to answer each server.
  struct Parts {
    GradStats total;
    std::vector<std::pair<zmq::message_t, uint64_t>> routes;
  };
  Parts receive_parts(int64_t step, int count) {
    std::vector<GradStats> parts(kLayout.servers);
    Parts got;
    got.routes.resize(kLayout.servers);
    for (int i = 0; i < count; ++i) {
      auto msg = scheduler->receive(Deadline::after(60), "a part");
      EXPECT_TRUE(msg.ok()) << msg.status().to_string();
      if (!msg.ok()) break;
      Rejection why;
      auto m = InMessage::parse(std::move(msg->frames), &why);
      EXPECT_TRUE(m) << why.message;
      EXPECT_EQ(m->header().getStep(), step);
      const size_t k = static_cast<size_t>(kLayout.server_index(m->header().getSender()));
      parts[k] = from_wire(m->header().getStats());
      got.routes[k] = {std::move(msg->route), m->header().getRequestId()};
    }
    got.total = sum_over_servers(parts);
    return got;
  }
  // Answers server k with the sum, and waits until its reducer has it.
  void answer(Parts& parts, int k, int64_t step) {
    auto& route = parts.routes[static_cast<size_t>(k)];
    OutMessage reply(wire::Kind::REPORT, kJob, 0, 0, route.second);
    to_wire(parts.total, reply.header().initStats());
    EXPECT_TRUE(scheduler->send(route.first, reply.finish(), Deadline::after(5)).ok());
    const Deadline limit = Deadline::after(60);
    while (!reducers[static_cast<size_t>(k)]->sum_of(step, 1).sum && !limit.expired())
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  // Both servers ended at step 1 with a checkpoint of it, whose weights
  // (server 0's manifest over both files) are `want`.
  void expect_kept_step_1(const std::vector<float>& want, const std::string& why) {
    for (int k = 0; k < kLayout.servers; ++k) {
      const Status& s = served[static_cast<size_t>(k)];
      EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.to_string();
      EXPECT_NE(s.message().find("a checkpoint of step 1 is written"), std::string::npos) << s.to_string();
      EXPECT_NE(s.message().find(why), std::string::npos) << s.to_string();
    }
    const std::string dir = checkpoint_dir(root.path(), 1);
    auto m = read_checkpoint(dir);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    EXPECT_EQ(m->step, 1);
    auto state = load_shard(dir, *m, table, whole_tensors(table));
    ASSERT_TRUE(state.ok()) << state.status().to_string();
    EXPECT_EQ(state->weights, want);
  }

  zmq::context_t ctx;
  testing::TempDir root;
  const JobConfig job = testing::tiny_job();
  const ParamTable table = build_param_table(job.model, 12, 12);
  const ShardPlan plan = *ShardPlan::make(table.numels(), kLayout.servers, 256);
  std::vector<float> w0 = std::vector<float>(static_cast<size_t>(table.total_numel()));
  const std::vector<std::string> endpoints{"inproc://lost-s0", "inproc://lost-s1"};
  std::unique_ptr<Router> scheduler;
  std::vector<std::unique_ptr<SchedulerStatsReducer>> reducers;
  std::vector<std::unique_ptr<ShardServer>> servers;
  std::vector<Status> served = std::vector<Status>(kLayout.servers);
  std::vector<std::thread> serving;
};

TEST(LostSchedulerTest, AServerTheSchedulerDidNotAnswerCompletesTheStepAndTheCheckpointIsWhole) {
  TwoServers s(30.0);
  const std::vector<float> g = testing::random_vec(s.w0.size(), 11, 0.1f);

  // The worker: step 0, then step 1, whose weights never come.
  std::vector<float> step1(s.w0.size());
  Status first, second;
  std::thread worker([&] {
    auto c = RemoteParameterClient::connect(s.ctx, s.plan, s.endpoints, RemoteClientOptions{kJob, 0, kLayout, 30.0});
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    first = (*c)->push(0, 7, 0.0, g.data());
    if (first.ok()) first = (*c)->pull(1, step1.data()).status();
    if (!first.ok()) return;
    second = (*c)->push(1, 7, 0.0, g.data());
    std::vector<float> step2(s.w0.size());
    if (second.ok()) second = (*c)->pull(2, step2.data()).status();
  });

  // The scheduler sums step 0 and answers server 0 only.
  auto parts = s.receive_parts(0, 2);
  s.answer(parts, 0, 0);
  // Server 1's heartbeat takes the scheduler as gone; server 0 still hears it.
  s.servers[1]->scheduler_lost("the scheduler is gone (a test)");
  // Server 0 reports step 1 (the worker pushed it; server 1, having given
  // the scheduler up, reports nothing); then server 0 too takes the
  // scheduler as gone.
  (void)s.receive_parts(1, 1);
  s.servers[0]->scheduler_lost("the scheduler is gone (a test)");
  worker.join();
  s.join();

  ASSERT_TRUE(first.ok()) << first.to_string();
  const std::vector<float> want = testing::one_step(s.job, s.table, s.w0, g, {7});
  EXPECT_EQ(step1, want);
  EXPECT_FALSE(second.ok());
  s.expect_kept_step_1(want, "no other server has the sum");
}

// The scheduler and the worker are lost together (one machine, say) after
// step 0: the servers, idle at step 1, wait out cluster.timeout_s for
// pushes and keep step 1 all the same.
TEST(LostSchedulerTest, IdleServersWhoseSchedulerAndWorkersAreGoneKeepTheirLastStep) {
  TwoServers s(3.0);
  const std::vector<float> g = testing::random_vec(s.w0.size(), 11, 0.1f);
  std::vector<float> step1(s.w0.size());
  Status first;
  std::thread worker([&] {
    auto c = RemoteParameterClient::connect(s.ctx, s.plan, s.endpoints, RemoteClientOptions{kJob, 0, kLayout, 30.0});
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    first = (*c)->push(0, 7, 0.0, g.data());
    if (first.ok()) first = (*c)->pull(1, step1.data()).status();
  });  // and then it is gone, without a Shutdown
  auto parts = s.receive_parts(0, 2);
  for (int k = 0; k < kLayout.servers; ++k) s.answer(parts, k, 0);
  for (auto& server : s.servers) server->scheduler_lost("the scheduler is gone (a test)");
  worker.join();
  s.join();

  ASSERT_TRUE(first.ok()) << first.to_string();
  const std::vector<float> want = testing::one_step(s.job, s.table, s.w0, g, {7});
  EXPECT_EQ(step1, want);
  s.expect_kept_step_1(want, "while waiting for pushes of step 1");
}

}  // namespace
}  // namespace pst
