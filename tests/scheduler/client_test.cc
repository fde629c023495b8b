// Both sides of every scheduler conversation of a --role job, over real
// sockets (inproc): run_scheduler on a thread, and two servers and a worker
// that use scheduler/client.h. Each gets a rank of its role and the
// servers' endpoints by index; the start barrier lets all through; the
// servers' statistics come back as their sum with the control flags of
// either; a registration after the rendezvous is refused with an error
// that says so; Shutdowns end the job and the scheduler returns OK.
// Once the scheduler is gone (a scheduler played by hand that answers one
// server only), the servers ask each other: the one the scheduler did not
// answer takes the sum from the one it did; when none has it, every server
// fails; a server that still hears the scheduler says LATER, and a sum
// that comes after a server gave the scheduler up is not taken.
#include "scheduler/client.h"

#include <atomic>
#include <chrono>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "scheduler/heartbeat.h"
#include "scheduler/scheduler.h"
#include "tests/test_util.h"

namespace pst {
namespace {

constexpr uint64_t kJob = 91;

TEST(SchedulerClientTest, RendezvousBarrierStatisticsAndShutdown) {
  zmq::context_t ctx;
  const std::string endpoint = "inproc://scheduler-client-test";
  auto router = Router::bind(ctx, endpoint);
  ASSERT_TRUE(router.ok()) << router.status().to_string();
  SchedulerOptions options;
  options.job_id = kJob;
  options.layout = JobLayout{2, 1};
  options.timeout_s = 30;
  options.start_timeout_s = 30;
  Status scheduled = failed_precondition("run_scheduler has not returned");
  std::thread scheduler([&] { scheduled = run_scheduler(**router, options); });

  const JobLayout layout{2, 1};
  // Node i: servers 0 and 1 (endpoints inproc://s0, inproc://s1), then the worker.
  std::vector<Result<NodeTable>> tables(3, failed_precondition("not registered"));
  std::vector<std::unique_ptr<Dealer>> dealers(3);
  for (int i = 0; i < 3; ++i) {
    auto d = Dealer::connect(ctx, endpoint, "the scheduler");
    ASSERT_TRUE(d.ok());
    dealers[static_cast<size_t>(i)] = std::move(*d);
  }
  std::vector<std::thread> nodes;
  for (int i = 0; i < 3; ++i)
    nodes.emplace_back([&, i] {
      const bool server = i < 2;
      const NodeRegistration me{server ? wire::Role::SERVER : wire::Role::WORKER,
                                server ? "inproc://s" + std::to_string(i) : "", "host", ""};
      tables[static_cast<size_t>(i)] = register_with_scheduler(*dealers[static_cast<size_t>(i)], kJob, layout, me, 30);
    });
  for (auto& t : nodes) t.join();
  nodes.clear();
  std::set<int32_t> server_ranks;
  for (int i = 0; i < 3; ++i) {
    const auto& t = tables[static_cast<size_t>(i)];
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    ASSERT_EQ(t->servers.size(), 2u);
    // The table maps each server index to the endpoint that server registered.
    for (int32_t r : {1, 2}) {
      const int server_node = tables[0]->rank == r ? 0 : 1;
      EXPECT_EQ(t->servers[static_cast<size_t>(layout.server_index(r))], "inproc://s" + std::to_string(server_node));
    }
    if (i < 2) server_ranks.insert(t->rank);
  }
  EXPECT_EQ(server_ranks, (std::set<int32_t>{1, 2}));
  EXPECT_EQ(tables[2]->rank, 3);

  // A fourth node after the rendezvous is refused, and says why.
  auto late = Dealer::connect(ctx, endpoint, "the scheduler");
  ASSERT_TRUE(late.ok());
  auto refused = register_with_scheduler(**late, kJob, layout, {wire::Role::WORKER, "", "host", ""}, 30);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition) << refused.status().to_string();
  EXPECT_NE(refused.status().message().find("refused the registration"), std::string::npos);

  std::vector<Status> passed(3);
  for (int i = 0; i < 3; ++i)
    nodes.emplace_back([&, i] {
      passed[static_cast<size_t>(i)] =
          pass_start_barrier(*dealers[static_cast<size_t>(i)], kJob, tables[static_cast<size_t>(i)]->rank, 30, 30)
              .status();
    });
  for (auto& t : nodes) t.join();
  nodes.clear();
  for (const Status& s : passed) EXPECT_TRUE(s.ok()) << s.to_string();

  // Two rounds of statistics: 1.5 + 2.25, server 1 wants a checkpoint;
  // then a non-finite part and a stop from server 0.
  std::vector<Result<GradStats>> sums(2, GradStats{});
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 2; ++i)
      nodes.emplace_back([&, i, round] {
        auto d = Dealer::connect(ctx, endpoint, "the scheduler");
        ASSERT_TRUE(d.ok());
        SchedulerStatsReducer reducer(std::move(*d), kJob, tables[static_cast<size_t>(i)]->rank);
        GradStats local;
        local.sum_squares = i == 0 ? 1.5 : 2.25;
        local.control.checkpoint = round == 0 && i == 1;
        local.nonfinite = round == 1 && i == 1;
        local.control.stop = round == 1 && i == 0;
        sums[static_cast<size_t>(i)] = reducer.all_reduce(layout.server_index(tables[static_cast<size_t>(i)]->rank),
                                                          round, local, Deadline::after(30));
      });
    for (auto& t : nodes) t.join();
    nodes.clear();
    for (const auto& s : sums) {
      ASSERT_TRUE(s.ok()) << s.status().to_string();
      EXPECT_EQ(s->sum_squares, 3.75);
      EXPECT_EQ(s->control.checkpoint, round == 0);
      EXPECT_EQ(s->nonfinite, round == 1);
      EXPECT_EQ(s->control.stop, round == 1);
    }
  }

  for (int i = 0; i < 3; ++i) Heartbeat(ctx, endpoint, kJob, tables[static_cast<size_t>(i)]->rank, 0.2).finish();
  scheduler.join();
  EXPECT_TRUE(scheduled.ok()) << scheduled.to_string();
}

// Two servers (ranks 1 and 2) whose reducers meet at a scheduler played by
// the test, each answering the other's questions from its own Router as a
// ShardServer does (answer_sum_question).
class LostSchedulerTest : public ::testing::Test {
 protected:
  static constexpr int kServers = 2;
  void SetUp() override {
    auto r = Router::bind(ctx_, "inproc://lost-scheduler");
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    scheduler_ = std::move(*r);
    for (int k = 0; k < kServers; ++k) {
      auto line = Router::bind(ctx_, "inproc://lost-server" + std::to_string(k));
      ASSERT_TRUE(line.ok()) << line.status().to_string();
      lines_.push_back(std::move(*line));
    }
    const PeerServers peers{&ctx_, {"inproc://lost-server0", "inproc://lost-server1"}};
    for (int k = 0; k < kServers; ++k) {
      auto d = Dealer::connect(ctx_, "inproc://lost-scheduler", "the scheduler");
      ASSERT_TRUE(d.ok());
      reducers_.push_back(std::make_unique<SchedulerStatsReducer>(std::move(*d), kJob, layout_.server_rank(k), peers));
    }
    for (int k = 0; k < kServers; ++k)
      answering_.emplace_back([this, k] {
        while (!done_) {
          auto q = lines_[static_cast<size_t>(k)]->receive(Deadline::after(0.02), "a question");
          if (!q.ok()) continue;
          Rejection why;
          auto m = InMessage::parse(std::move(q->frames), &why);
          ASSERT_TRUE(m) << why.message;
          ++questions_[k];
          const SumAnswer a = reducers_[static_cast<size_t>(k)]->sum_of(m->header().getStep(), question_round(*m));
          (void)lines_[static_cast<size_t>(k)]->send(
              q->route, answer_sum_question(a, *m, kJob, layout_.server_rank(k), k), Deadline::after(1));
        }
      });
  }
  void TearDown() override {
    stop_answering();
    for (auto& r : reducers_) r->abandon("the test has ended");
    join();  // the reducing threads of a test that ended at a failed ASSERT
  }
  // From now on nobody answers questions: the answering threads have
  // returned (one still waiting in receive() would answer a question that
  // came within its wait).
  void stop_answering() {
    done_ = true;
    for (auto& t : answering_) t.join();
    answering_.clear();
  }

  // Each server's statistics of `step`, to the scheduler, on its own thread.
  void report(int64_t step, double seconds = 20) {
    for (int k = 0; k < kServers; ++k)
      reducing_.emplace_back([this, k, step, seconds] {
        GradStats local;
        local.sum_squares = k == 0 ? 1.5 : 2.25;
        local.control.checkpoint = k == 1;
        sums_[k] = reducers_[static_cast<size_t>(k)]->all_reduce(k, step, local, Deadline::after(seconds));
      });
  }
  // The scheduler receives both parts; returns the routes by server.
  std::vector<zmq::message_t> receive_parts(uint64_t* request) {
    std::vector<zmq::message_t> routes(kServers);
    for (int i = 0; i < kServers; ++i) {
      auto msg = scheduler_->receive(Deadline::after(20), "a part");
      EXPECT_TRUE(msg.ok()) << msg.status().to_string();
      if (!msg.ok()) return routes;
      Rejection why;
      auto m = InMessage::parse(std::move(msg->frames), &why);
      const int k = layout_.server_index(m->header().getSender());
      request[k] = m->header().getRequestId();
      routes[static_cast<size_t>(k)] = std::move(msg->route);
    }
    return routes;
  }
  void answer(const zmq::message_t& route, int64_t step, uint64_t request) {
    OutMessage reply(wire::Kind::REPORT, kJob, 0, step, request);
    to_wire(total(), reply.header().initStats());
    ASSERT_TRUE(scheduler_->send(route, reply.finish(), Deadline::after(5)).ok());
  }
  static GradStats total() {
    GradStats t;
    t.sum_squares = 3.75;
    t.control.checkpoint = true;
    return t;
  }
  void join() {
    for (auto& t : reducing_) t.join();
    reducing_.clear();
  }

  zmq::context_t ctx_;
  const JobLayout layout_{kServers, 1};
  std::unique_ptr<Router> scheduler_;
  std::vector<std::unique_ptr<Router>> lines_;
  std::vector<std::unique_ptr<SchedulerStatsReducer>> reducers_;
  std::vector<std::thread> answering_, reducing_;
  std::atomic<bool> done_{false};
  std::atomic<int> questions_[kServers] = {};
  Result<GradStats> sums_[kServers] = {failed_precondition("not run"), failed_precondition("not run")};
};

TEST_F(LostSchedulerTest, TheServerTheSchedulerDidNotAnswerTakesTheSumFromTheOther) {
  report(7);
  uint64_t request[kServers];
  auto routes = receive_parts(request);
  answer(routes[0], 7, request[0]);  // and dies before answering server 1
  ASSERT_TRUE(testing::poll_until(20, [&] { return reducers_[0]->sum_of(7, 1).sum.has_value(); }))
      << "server 0 never took the scheduler's sum";
  reducers_[1]->abandon("the scheduler is gone");
  join();
  for (const auto& s : sums_) {
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    EXPECT_EQ(s->sum_squares, 3.75);
    EXPECT_TRUE(s->control.checkpoint);
  }
  EXPECT_GE(questions_[0].load(), 1);
  EXPECT_EQ(questions_[1].load(), 0);  // server 0 had its sum: it asked nobody
  // Server 1 keeps the sum it was given, for a third server's question.
  ASSERT_TRUE(reducers_[1]->sum_of(7, 1).sum);
  EXPECT_EQ(reducers_[1]->sum_of(7, 1).sum->sum_squares, 3.75);
  EXPECT_FALSE(reducers_[1]->sum_of(7, 2).sum);  // another round's is not that one
}

TEST_F(LostSchedulerTest, WhenNoServerHasTheSumEveryServerFailsAndALaterAnswerIsNotTaken) {
  report(3);
  uint64_t request[kServers];
  auto routes = receive_parts(request);
  // Server 1 gives the scheduler up first; server 0 still hears it, so
  // server 1 hears LATER until server 0 gives it up too.
  reducers_[1]->abandon("the scheduler is gone (server 1's heartbeat)");
  ASSERT_TRUE(testing::poll_until(20, [&] { return questions_[0].load() >= 3; }))
      << "server 1 asked server 0 " << questions_[0].load() << " times, not 3";
  EXPECT_FALSE(reducers_[0]->sum_of(3, 1).lasting);
  reducers_[0]->abandon("the scheduler is gone (server 0's heartbeat)");
  EXPECT_TRUE(reducers_[0]->sum_of(3, 1).lasting);
  // The scheduler's answer, after both gave it up, is taken by neither:
  // server 1 may have been told that server 0 has none.
  answer(routes[0], 3, request[0]);
  answer(routes[1], 3, request[1]);
  join();
  for (int k = 0; k < kServers; ++k) {
    ASSERT_FALSE(sums_[k].ok());
    EXPECT_EQ(sums_[k].status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(sums_[k].status().message().find("cannot be summed: the scheduler is gone"), std::string::npos)
        << sums_[k].status().message();
    EXPECT_NE(sums_[k].status().message().find("no other server has the sum"), std::string::npos)
        << sums_[k].status().message();
    EXPECT_FALSE(reducers_[static_cast<size_t>(k)]->sum_of(3, 1).sum);
  }
}

TEST_F(LostSchedulerTest, AServerThatDoesNotAnswerIsNamedAtTheDeadline) {
  stop_answering();
  report(5, 2);
  uint64_t request[kServers];
  auto routes = receive_parts(request);
  reducers_[0]->abandon("the scheduler is gone");
  reducers_[1]->abandon("the scheduler is gone");
  join();
  for (int k = 0; k < kServers; ++k) {
    ASSERT_FALSE(sums_[k].ok());
    EXPECT_NE(sums_[k].status().message().find(fmt::format("server {} did not say whether it has the sum", 1 - k)),
              std::string::npos)
        << sums_[k].status().message();
  }
}

}  // namespace
}  // namespace pst
