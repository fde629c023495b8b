// The scheduler against registrations that are broken or late (a real
// Router over inproc, run_scheduler on a thread of its own). A REGISTER
// whose host pointer lies outside its segment, one whose endpoint passes the
// traversal limit once but not twice, and a REGISTER after the rendezvous
// are each answered with an Error naming the problem and counted in
// pst_messages_rejected_total; the real nodes then register, get their
// ranks, and end the job, and the scheduler returns OK.
// (The first two threw an uncaught kj::Exception; the last wrote
// last_seen[-1].)
#include "scheduler/scheduler.h"

#include <cstring>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include <prometheus/registry.h>

#include "comm/message.h"
#include "monitoring/metrics.h"

namespace pst {
namespace {

constexpr uint64_t kJob = 77;

Frames registration(wire::Role role, const std::string& endpoint, const std::string& host, uint64_t request) {
  OutMessage m(wire::Kind::REGISTER, kJob, -1, 0, request);
  auto node = m.header().initNode();
  node.setRole(role);
  node.setEndpoint(endpoint);
  node.setHost(host);
  node.setMetrics("");
  return m.finish();
}

// The reply's kind and, for an Error, its message.
std::pair<wire::Kind, std::string> answer(Dealer& d, int32_t* rank = nullptr) {
  auto frames = d.receive(Deadline::after(20), "the scheduler's answer");
  if (!frames.ok()) return {wire::Kind::HEARTBEAT, frames.status().to_string()};
  Rejection why;
  auto m = InMessage::parse(std::move(*frames), &why);
  if (!m) return {wire::Kind::HEARTBEAT, "unparsable: " + why.message};
  if (rank) *rank = m->header().getRank();
  const wire::Kind kind = m->header().getKind();
  return {kind, kind == wire::Kind::ERROR ? m->header().getError().getMessage().cStr() : ""};
}

TEST(SchedulerTest, BrokenAndLateRegistrationsAreRejectedAndTheJobGoesOn) {
  zmq::context_t ctx;
  auto router = Router::bind(ctx, "inproc://scheduler-test");
  ASSERT_TRUE(router.ok());
  SchedulerOptions o;
  o.job_id = kJob;
  o.layout = JobLayout{1, 1};
  o.timeout_s = 20;
  o.start_timeout_s = 20;
  prometheus::Registry registry;
  MetricFamilies families(registry);
  SchedulerMetrics metrics(families, 0);
  o.metrics = &metrics;
  Status done = failed_precondition("run_scheduler has not returned");
  std::thread scheduler([&] { done = run_scheduler(**router, o); });
  auto connect = [&] {
    auto d = Dealer::connect(ctx, "inproc://scheduler-test", "the scheduler");
    PST_CHECK_MSG(d.ok(), "{}", d.status().to_string());
    return std::move(*d);
  };

  // The host's text pointer (9 bytes: "HOSTNAME" and its NUL) sent far
  // outside the segment.
  auto bad = connect();
  Frames broken = registration(wire::Role::WORKER, "", "HOSTNAME", 1);
  auto* words = static_cast<uint64_t*>(broken[0].data());
  int patched = 0;
  for (size_t i = 0; i < broken[0].size() / 8; ++i) {
    const uint64_t w = words[i];
    if ((w & 3) == 1 && ((w >> 32) & 7) == 2 && (w >> 35) == 9) {
      words[i] = (w & ~uint64_t{0xFFFFFFFC}) | (uint64_t{0x3FFFFFF} << 2);
      ++patched;
    }
  }
  ASSERT_EQ(patched, 1);
  ASSERT_TRUE(bad->send(std::move(broken), Deadline::after(5)).ok());
  auto [kind, message] = answer(*bad);
  EXPECT_EQ(kind, wire::Kind::ERROR) << message;

  // An endpoint of 0.75 MB: within the traversal limit once, not twice.
  ASSERT_TRUE(bad->send(registration(wire::Role::SERVER, std::string(750'000, 'e'), "h", 2), Deadline::after(5)).ok());
  std::tie(kind, message) = answer(*bad);
  EXPECT_EQ(kind, wire::Kind::ERROR) << message;

  // The real server and worker register and get ranks 1 and 2.
  auto server = connect(), worker = connect();
  ASSERT_TRUE(server->send(registration(wire::Role::SERVER, "inproc://s0", "h", 3), Deadline::after(5)).ok());
  ASSERT_TRUE(worker->send(registration(wire::Role::WORKER, "", "h", 4), Deadline::after(5)).ok());
  int32_t server_rank = 0, worker_rank = 0;
  EXPECT_EQ(answer(*server, &server_rank).first, wire::Kind::NODE_TABLE);
  EXPECT_EQ(answer(*worker, &worker_rank).first, wire::Kind::NODE_TABLE);
  EXPECT_EQ(server_rank, 1);
  EXPECT_EQ(worker_rank, 2);

  // One more worker after the rendezvous.
  auto late = connect();
  ASSERT_TRUE(late->send(registration(wire::Role::WORKER, "", "h", 5), Deadline::after(5)).ok());
  std::tie(kind, message) = answer(*late);
  EXPECT_EQ(kind, wire::Kind::ERROR);
  EXPECT_NE(message.find("the job has started"), std::string::npos) << message;

  // The job ends well.
  for (const auto& [d, rank] : {std::pair{server.get(), server_rank}, std::pair{worker.get(), worker_rank}}) {
    OutMessage bye(wire::Kind::SHUTDOWN, kJob, rank, 0, 9);
    ASSERT_TRUE(d->send(bye.finish(), Deadline::after(5)).ok());
  }
  scheduler.join();
  EXPECT_TRUE(done.ok()) << done.to_string();
  // The three rejections are counted, by reason.
  double rejected = 0;
  for (const auto& family : registry.Collect())
    if (family.name == "pst_messages_rejected_total")
      for (const auto& m : family.metric) rejected += m.counter.value;
  EXPECT_EQ(rejected, 3);
}

}  // namespace
}  // namespace pst
