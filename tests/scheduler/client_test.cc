// Both sides of every scheduler conversation of a --role job, over real
// sockets (inproc): run_scheduler on a thread, and two servers and a worker
// that use scheduler/client.h. Each gets a rank of its role and the
// servers' endpoints by index; the start barrier lets all through; the
// servers' statistics come back as their sum with the control flags of
// either; a registration after the rendezvous is refused with an error
// that says so; Shutdowns end the job and the scheduler returns OK.
#include "scheduler/client.h"

#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "scheduler/heartbeat.h"
#include "scheduler/scheduler.h"

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

}  // namespace
}  // namespace pst
