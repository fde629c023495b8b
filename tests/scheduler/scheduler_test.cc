// The scheduler against registrations that are broken or late (a real
// Router over inproc, run_scheduler on a thread of its own). A REGISTER
// whose host pointer lies outside its segment, one whose endpoint passes the
// traversal limit once but not twice, and a REGISTER after the rendezvous
// are each answered with an Error naming the problem and counted in
// pst_messages_rejected_total; the real nodes then register, get their
// ranks, and end the job, and the scheduler returns OK.
// (The first two threw an uncaught kj::Exception; the last wrote
// last_seen[-1].) Shutdowns and statistics sent in the registered nodes'
// names by another process are dropped without an answer and do not end the
// job.
#include "scheduler/scheduler.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <prometheus/registry.h>

#include "comm/grad_stats.h"
#include "comm/message.h"
#include "monitoring/metrics.h"
#include "tests/test_util.h"

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

// run_scheduler on a thread of its own behind a Router over inproc://NAME,
// for `layout`, with deadlines of 20 s, metrics and a count of the messages
// it has handled; `adjust` may change the options before it starts.
class ScheduledJob {
 public:
  ScheduledJob(const std::string& name, JobLayout layout,
               const std::function<void(SchedulerOptions&)>& adjust = nullptr)
      : endpoint_("inproc://" + name), families_(registry_), metrics_(families_, 0) {
    auto router = Router::bind(ctx_, endpoint_);
    PST_CHECK_MSG(router.ok(), "{}", router.status().to_string());
    router_ = std::move(*router);
    options_.job_id = kJob;
    options_.layout = layout;
    options_.timeout_s = 20;
    options_.start_timeout_s = 20;
    options_.metrics = &metrics_;
    options_.received = &received_;
    if (adjust) adjust(options_);
    thread_ = std::thread([this] {
      done_ = run_scheduler(*router_, options_);
      returned_ = true;
    });
  }
  ~ScheduledJob() { (void)join(); }

  std::unique_ptr<Dealer> connect() {
    auto d = Dealer::connect(ctx_, endpoint_, "the scheduler");
    PST_CHECK_MSG(d.ok(), "{}", d.status().to_string());
    return std::move(*d);
  }
  // What run_scheduler returned, once it has.
  Status join() {
    if (thread_.joinable()) thread_.join();
    return done_;
  }
  bool returned() const { return returned_; }
  int64_t received() const { return received_.load(); }
  zmq::context_t& context() { return ctx_; }
  const std::string& endpoint() const { return endpoint_; }
  prometheus::Registry& registry() { return registry_; }

 private:
  zmq::context_t ctx_;
  std::string endpoint_;
  std::unique_ptr<Router> router_;
  prometheus::Registry registry_;
  MetricFamilies families_;
  SchedulerMetrics metrics_;
  SchedulerOptions options_;
  std::atomic<int64_t> received_{0};
  std::atomic<bool> returned_{false};
  Status done_ = failed_precondition("run_scheduler has not returned");
  std::thread thread_;
};

TEST(SchedulerTest, BrokenAndLateRegistrationsAreRejectedAndTheJobGoesOn) {
  ScheduledJob job("scheduler-test", JobLayout{1, 1});
  auto connect = [&] { return job.connect(); };

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

  // Another process (a raw socket with a routing id of its own) in the
  // registered nodes' names: Shutdowns that would end the job and
  // statistics that would stop it are dropped without an answer.
  zmq::socket_t impostor(job.context(), zmq::socket_type::dealer);
  impostor.set(zmq::sockopt::linger, 0);
  impostor.set(zmq::sockopt::routing_id, std::string("impostor-process-id0"));
  impostor.connect(job.endpoint());
  // Every message so far handled (2 broken registrations, 2 real ones, the
  // late one: its answer goes out before the scheduler counts it).
  const int64_t before = 5;
  testing::poll_until(20, [&] { return job.received() >= before; });
  ASSERT_EQ(job.received(), before);
  std::vector<Frames> forged;
  for (int32_t rank : {server_rank, worker_rank}) {
    OutMessage bye(wire::Kind::SHUTDOWN, kJob, rank, 0, 10);
    forged.push_back(bye.finish());
  }
  {
    OutMessage stats(wire::Kind::REPORT, kJob, server_rank, 0, 11);
    stats.header().initStats().setStop(true);
    forged.push_back(stats.finish());
  }
  for (Frames& f : forged)
    for (size_t i = 0; i < f.size(); ++i)
      ASSERT_TRUE(impostor.send(f[i], i + 1 < f.size() ? zmq::send_flags::sndmore : zmq::send_flags::none));
  testing::poll_until(20, [&] { return job.received() >= before + 3; });
  EXPECT_EQ(job.received(), before + 3);
  EXPECT_FALSE(job.returned()) << "forged Shutdowns ended the job";
  zmq::pollitem_t item{impostor.handle(), 0, ZMQ_POLLIN, 0};
  EXPECT_EQ(zmq::poll(&item, 1, std::chrono::milliseconds(300)), 0) << "a spoofed message gets no answer";

  // The job ends well.
  for (const auto& [d, rank] : {std::pair{server.get(), server_rank}, std::pair{worker.get(), worker_rank}}) {
    OutMessage bye(wire::Kind::SHUTDOWN, kJob, rank, 0, 9);
    ASSERT_TRUE(d->send(bye.finish(), Deadline::after(5)).ok());
  }
  const Status done = job.join();
  EXPECT_TRUE(done.ok()) << done.to_string();
  // The six rejections are counted, by reason.
  double rejected = 0, spoofed = 0;
  for (const auto& family : job.registry().Collect())
    if (family.name == "pst_messages_rejected_total")
      for (const auto& m : family.metric) {
        rejected += m.counter.value;
        for (const auto& l : m.label)
          if (l.name == "reason" && l.value == "spoofed") spoofed += m.counter.value;
      }
  EXPECT_EQ(rejected, 6);
  EXPECT_EQ(spoofed, 3);
}

}  // namespace
}  // namespace pst

namespace pst {
namespace {

// A server that reports the statistics of many rounds the other server has
// not reached (a bug, or a rogue member): the scheduler keeps at most 8
// rounds open and rejects the next, so its memory stays bounded (spoofed
// reports grew it by 86 MiB); the open rounds still complete when the other
// server reports, each with the sum of both.
TEST(SchedulerTest, OpenRoundsAreBounded) {
  ScheduledJob job("scheduler-rounds", JobLayout{2, 1});
  std::vector<std::unique_ptr<Dealer>> nodes;
  std::vector<int32_t> ranks;
  for (int i = 0; i < 3; ++i) {
    nodes.push_back(job.connect());
    const wire::Role role = i < 2 ? wire::Role::SERVER : wire::Role::WORKER;
    ASSERT_TRUE(
        nodes.back()->send(registration(role, i < 2 ? "inproc://s" : "", "h", 20 + i), Deadline::after(5)).ok());
  }
  for (auto& d : nodes) {
    int32_t rank = 0;
    ASSERT_EQ(answer(*d, &rank).first, wire::Kind::NODE_TABLE);
    ranks.push_back(rank);
  }
  auto report = [&](int node, int64_t step, double sum) {
    OutMessage m(wire::Kind::REPORT, kJob, ranks[static_cast<size_t>(node)], step, 100 + static_cast<uint64_t>(step));
    m.header().initStats().setSumSquares(sum);
    return nodes[static_cast<size_t>(node)]->send(m.finish(), Deadline::after(5));
  };
  for (int64_t step = 0; step < 8; ++step) ASSERT_TRUE(report(0, step, 1.0).ok());
  ASSERT_TRUE(report(0, 8, 1.0).ok());
  auto [kind, message] = answer(*nodes[0]);
  EXPECT_EQ(kind, wire::Kind::ERROR);
  EXPECT_NE(message.find("while 8 rounds are open (at most 8)"), std::string::npos) << message;
  // The other server reaches the 8 open rounds: each completes, for both.
  for (int64_t step = 0; step < 8; ++step) {
    ASSERT_TRUE(report(1, step, 2.0).ok());
    for (int node : {0, 1}) {
      auto frames = nodes[static_cast<size_t>(node)]->receive(Deadline::after(20), "the sum");
      ASSERT_TRUE(frames.ok()) << frames.status().to_string();
      Rejection why;
      auto m = InMessage::parse(std::move(*frames), &why);
      ASSERT_TRUE(m);
      ASSERT_EQ(m->header().getKind(), wire::Kind::REPORT);
      EXPECT_EQ(m->header().getStep(), step);
      EXPECT_EQ(m->header().getStats().getSumSquares(), 3.0);
    }
  }
  for (size_t i = 0; i < nodes.size(); ++i) {
    OutMessage bye(wire::Kind::SHUTDOWN, kJob, ranks[i], 0, 9);
    ASSERT_TRUE(nodes[i]->send(bye.finish(), Deadline::after(5)).ok());
  }
  const Status done = job.join();
  EXPECT_TRUE(done.ok()) << done.to_string();
}

}  // namespace
}  // namespace pst

namespace pst {
namespace {

// A gauge or counter of the scheduler's registry, by name and node_role.
double metric(prometheus::Registry& registry, const std::string& name, const std::string& node_role) {
  for (const auto& family : registry.Collect())
    if (family.name == name)
      for (const auto& m : family.metric)
        for (const auto& l : m.label)
          if (l.name == "node_role" && l.value == node_role)
            return family.type == prometheus::MetricType::Gauge ? m.gauge.value : m.counter.value;
  return -1;
}

// The sum of a counter family's values over all its label sets.
double counter_total(prometheus::Registry& registry, const std::string& name) {
  double total = 0;
  for (const auto& family : registry.Collect())
    if (family.name == name)
      for (const auto& m : family.metric) total += m.counter.value;
  return total;
}

// A server's statistics of `step` (its sum of squares, the workers it
// summed) sent on its line to the scheduler; the scheduler's sum, or an
// empty one when no sum came.
GradStats sum_of(Dealer& server, int32_t rank, int64_t step, double sum_squares, std::vector<uint8_t> contributors) {
  OutMessage m(wire::Kind::REPORT, kJob, rank, step, 50 + static_cast<uint64_t>(step));
  GradStats mine;
  mine.sum_squares = sum_squares;
  mine.contributors = std::move(contributors);
  to_wire(mine, m.header().initStats());
  EXPECT_TRUE(server.send(m.finish(), Deadline::after(5)).ok());
  auto frames = server.receive(Deadline::after(20), "the sum");
  if (!frames.ok()) return GradStats{};
  Rejection why;
  auto r = InMessage::parse(std::move(*frames), &why);
  if (!r || r->header().getKind() != wire::Kind::REPORT) return GradStats{};
  return from_wire(r->header().getStats());
}

// Membership (docs/design.md): a job of 1 server and 3 workers that met at
// the rendezvous, with a liveness window of 2 s and cluster.min_workers =
// 2. Worker 2 goes silent: it is removed (not the job's end), the server
// hears it on its heartbeat line with the list of removed ranks, the members
// gauge drops to 2 workers, and the removed worker's next message is
// refused by name. With 2 workers the statistics' answer carries the
// contributors and no stop; when worker 1 goes silent too, the job is below
// its minimum and the answer says stop. The job then ends when the server
// and worker 0 have sent Shutdown, and the scheduler's status says it
// stopped short, and why.
TEST(SchedulerTest, ASilentWorkerIsRemovedAndTheServersAreTold) {
  ScheduledJob job("scheduler-members", JobLayout{1, 3}, [](SchedulerOptions& o) {
    o.liveness_s = 2.0;  // 20 beats of 0.1 s: a busy machine may delay several
    o.min_workers = 2;
  });
  std::vector<std::unique_ptr<Dealer>> nodes;
  std::vector<int32_t> ranks;
  for (int i = 0; i < 4; ++i) {
    nodes.push_back(job.connect());
    const wire::Role role = i == 0 ? wire::Role::SERVER : wire::Role::WORKER;
    ASSERT_TRUE(
        nodes.back()->send(registration(role, i == 0 ? "inproc://s" : "", "h", 30 + i), Deadline::after(5)).ok());
  }
  for (auto& d : nodes) {
    int32_t rank = 0;
    ASSERT_EQ(answer(*d, &rank).first, wire::Kind::NODE_TABLE);
    ranks.push_back(rank);
  }
  auto send = [&](int node, wire::Kind kind, uint64_t request) {
    OutMessage m(kind, kJob, ranks[static_cast<size_t>(node)], 0, request);
    return nodes[static_cast<size_t>(node)]->send(m.finish(), Deadline::after(5));
  };
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(send(i, wire::Kind::BARRIER, 40).ok());
  for (auto& d : nodes) ASSERT_EQ(answer(*d).first, wire::Kind::BARRIER);
  EXPECT_EQ(metric(job.registry(), "pst_cluster_members", "worker"), 3);

  // The server's heartbeat line, as scheduler/heartbeat.cc has one.
  auto beat = job.connect();
  // Beats from `alive` (the server on its line) every 0.1 s until a
  // Membership arrives there; its removed ranks.
  auto beat_until_membership = [&](const std::vector<int>& alive) -> std::vector<int32_t> {
    const Deadline d = Deadline::after(20);
    while (!d.expired()) {
      OutMessage hb(wire::Kind::HEARTBEAT, kJob, ranks[0], 0, 1);
      if (!beat->send(hb.finish(), Deadline::after(5)).ok()) return {};
      for (int node : alive)
        if (node != 0 && !send(node, wire::Kind::HEARTBEAT, 2).ok()) return {};
      auto frames = beat->receive(Deadline::after(0.1), "a membership");
      if (!frames.ok()) continue;
      Rejection why;
      auto m = InMessage::parse(std::move(*frames), &why);
      if (m && m->header().getKind() == wire::Kind::HEARTBEAT) continue;  // the beat's acknowledgement
      if (!m || m->header().getKind() != wire::Kind::MEMBERSHIP) return {};
      std::vector<int32_t> removed;
      for (int32_t r : m->header().getDeparted()) removed.push_back(r);
      return removed;
    }
    return {};
  };
  EXPECT_EQ(beat_until_membership({0, 1, 2}), std::vector<int32_t>{ranks[3]});
  EXPECT_EQ(metric(job.registry(), "pst_cluster_members", "worker"), 2);
  EXPECT_EQ(metric(job.registry(), "pst_node_failures_total", "worker"), 1);
  EXPECT_FALSE(job.returned()) << "a dead worker ended the job";

  // Worker 2 speaks again (it was stopped, not dead): refused by name.
  ASSERT_TRUE(send(3, wire::Kind::HEARTBEAT, 3).ok());
  auto [kind, message] = answer(*nodes[3]);
  EXPECT_EQ(kind, wire::Kind::ERROR);
  EXPECT_NE(message.find("was removed from the job"), std::string::npos) << message;

  // The server's statistics of step 0, with the workers it summed.
  auto stats_answer = [&](int64_t step) { return sum_of(*nodes[0], ranks[0], step, 4.0, {1, 1, 0}); };
  GradStats sum = stats_answer(0);
  EXPECT_EQ(sum.sum_squares, 4.0);
  EXPECT_EQ(sum.contributors, (std::vector<uint8_t>{1, 1, 0}));
  EXPECT_FALSE(sum.redo);
  EXPECT_FALSE(sum.control.stop) << "2 workers are not below cluster.min_workers = 2";

  // Worker 1 goes silent too: 1 worker is below the minimum.
  // The list is in rank order; which worker got the lower rank depends on
  // the order their registrations arrived in.
  EXPECT_EQ(beat_until_membership({0, 1}),
            (std::vector<int32_t>{std::min(ranks[2], ranks[3]), std::max(ranks[2], ranks[3])}));
  sum = stats_answer(1);
  EXPECT_TRUE(sum.control.stop) << "1 worker is below cluster.min_workers = 2";

  for (int node : {0, 1}) ASSERT_TRUE(send(node, wire::Kind::SHUTDOWN, 9).ok());
  // The job has stopped short: the scheduler says why (exit code 1: a rerun
  // with more workers may succeed).
  const Status done = job.join();
  EXPECT_EQ(done.code(), StatusCode::kDeadlineExceeded) << done.to_string();
  EXPECT_NE(done.message().find("1 of 3 workers remain"), std::string::npos) << done.message();
  EXPECT_NE(done.message().find("cluster.min_workers = 2"), std::string::npos) << done.message();
  EXPECT_EQ(metric(job.registry(), "pst_cluster_members", "worker"), 0);
}

// Elastic join: a job of 1 server that starts with 1 worker and has places
// for 2. A second worker registering during the rendezvous waits for the job
// to run, then gets the free place (rank 3) in a node table that says it
// joins; a third is refused by name. The joiner's start barrier is answered
// only with the next statistics, whose sum names it (rank and process):
// every server admits it at that step, and its barrier says it starts at
// the step after. The members gauge counts it, and the job ends when all
// three have sent Shutdown.
TEST(SchedulerTest, AWorkerJoinsAtTheNextStatistics) {
  ScheduledJob job("scheduler-joins", JobLayout{1, 2}, [](SchedulerOptions& o) {
    o.start_workers = 1;
    o.joins = true;
  });
  std::vector<std::unique_ptr<Dealer>> nodes;
  for (int i = 0; i < 3; ++i) {
    nodes.push_back(job.connect());
    const wire::Role role = i == 0 ? wire::Role::SERVER : wire::Role::WORKER;
    ASSERT_TRUE(
        nodes.back()->send(registration(role, i == 0 ? "inproc://s" : "", "h", 60 + i), Deadline::after(5)).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // in this order
  }
  std::vector<int32_t> ranks;
  std::vector<bool> joined;
  for (auto& d : nodes) {
    auto frames = d->receive(Deadline::after(20), "the node table");
    ASSERT_TRUE(frames.ok()) << frames.status().to_string();
    Rejection why;
    auto m = InMessage::parse(std::move(*frames), &why);
    ASSERT_TRUE(m && m->header().getKind() == wire::Kind::NODE_TABLE);
    ranks.push_back(m->header().getRank());
    joined.push_back(m->header().getJoined());
  }
  EXPECT_EQ(ranks, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(joined, (std::vector<bool>{false, false, true}));
  auto third = job.connect();
  ASSERT_TRUE(third->send(registration(wire::Role::WORKER, "", "h", 70), Deadline::after(5)).ok());
  auto [kind, message] = answer(*third);
  EXPECT_EQ(kind, wire::Kind::ERROR);
  EXPECT_NE(message.find("has all the workers it takes (cluster.max_workers = 2, with 1 joining)"), std::string::npos)
      << message;

  auto send = [&](int node, wire::Kind kind, int64_t step, uint64_t request) {
    OutMessage m(kind, kJob, ranks[static_cast<size_t>(node)], step, request);
    return nodes[static_cast<size_t>(node)]->send(m.finish(), Deadline::after(5));
  };
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(send(i, wire::Kind::BARRIER, 0, 40).ok());
  for (int i = 0; i < 2; ++i) ASSERT_EQ(answer(*nodes[static_cast<size_t>(i)]).first, wire::Kind::BARRIER);
  EXPECT_FALSE(nodes[2]->receive(Deadline::after(0.3), "the joiner's start").ok()) << "admitted before a step";
  EXPECT_EQ(metric(job.registry(), "pst_cluster_members", "worker"), 1);

  auto stats_answer = [&](int64_t step) { return sum_of(*nodes[0], ranks[0], step, 1.0, {1, 0}); };
  const GradStats sum = stats_answer(4);
  ASSERT_EQ(sum.joined.size(), 1u);
  EXPECT_EQ(sum.joined[0], (Joiner{3, this_process()}));
  EXPECT_EQ(sum.contributors, (std::vector<uint8_t>{1, 0}));
  auto frames = nodes[2]->receive(Deadline::after(20), "the joiner's start");
  ASSERT_TRUE(frames.ok()) << frames.status().to_string();
  Rejection why;
  auto start = InMessage::parse(std::move(*frames), &why);
  ASSERT_TRUE(start && start->header().getKind() == wire::Kind::BARRIER);
  EXPECT_EQ(start->header().getStep(), 5) << "it starts at the step after the statistics that named it";
  EXPECT_EQ(metric(job.registry(), "pst_cluster_members", "worker"), 2);
  EXPECT_TRUE(stats_answer(5).joined.empty()) << "named once";

  for (int node : {0, 1, 2}) ASSERT_TRUE(send(node, wire::Kind::SHUTDOWN, 0, 9).ok());
  const Status done = job.join();
  EXPECT_TRUE(done.ok()) << done.to_string();
}

// The first error that comes on `d` (acknowledgements of beats are passed
// over), with its code; kind HEARTBEAT when none came within `seconds`.
struct Said {
  wire::Kind kind = wire::Kind::HEARTBEAT;
  wire::ErrorCode code = wire::ErrorCode::INTERNAL;
  std::string message;
};
Said next_error(Dealer& d, double seconds) {
  const Deadline end = Deadline::after(seconds);
  while (!end.expired()) {
    auto frames =
        d.receive(Deadline::after(std::max(0.01, static_cast<double>(end.remaining_ms()) / 1000)), "an error");
    if (!frames.ok()) break;
    Rejection why;
    auto m = InMessage::parse(std::move(*frames), &why);
    if (!m || m->header().getKind() == wire::Kind::HEARTBEAT) continue;
    Said s{m->header().getKind(), wire::ErrorCode::INTERNAL, ""};
    if (s.kind == wire::Kind::ERROR) {
      s.code = m->header().getError().getCode();
      s.message = m->header().getError().getMessage().cStr();
    }
    return s;
  }
  return {};
}

// Registers servers first (in this order), then workers, after the nodes
// already in *nodes (registered before); every node's rank, and what its
// node table says; then all pass the start barrier.
void form(ScheduledJob& job, int servers, int workers, uint64_t request, std::vector<std::unique_ptr<Dealer>>* nodes,
          std::vector<int32_t>* ranks, std::vector<bool>* reformed, std::vector<int32_t>* start) {
  for (int i = 0; i < servers + workers; ++i) {
    nodes->push_back(job.connect());
    const bool server = i < servers;
    ASSERT_TRUE(nodes->back()
                    ->send(registration(server ? wire::Role::SERVER : wire::Role::WORKER,
                                        server ? fmt::format("inproc://s{}", i) : "", "h", request + i),
                           Deadline::after(5))
                    .ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  }
  for (auto& d : *nodes) {
    auto frames = d->receive(Deadline::after(20), "the node table");
    ASSERT_TRUE(frames.ok()) << frames.status().to_string();
    Rejection why;
    auto m = InMessage::parse(std::move(*frames), &why);
    ASSERT_TRUE(m && m->header().getKind() == wire::Kind::NODE_TABLE)
        << (m ? kind_name(m->header().getKind()) : why.message)
        << (m && m->header().getKind() == wire::Kind::ERROR ? m->header().getError().getMessage().cStr() : "");
    ranks->push_back(m->header().getRank());
    reformed->push_back(m->header().getReformed());
    start->push_back(m->header().getStartWorkers());
  }
  for (size_t i = 0; i < nodes->size(); ++i) {
    OutMessage b(wire::Kind::BARRIER, kJob, (*ranks)[i], 0, 1);
    ASSERT_TRUE((*nodes)[i]->send(b.finish(), Deadline::after(5)).ok());
  }
  for (auto& d : *nodes) ASSERT_EQ(next_error(*d, 20).kind, wire::Kind::BARRIER);
}

// A heartbeat from each node from index `from` on.
void beat(std::vector<std::unique_ptr<Dealer>>& nodes, const std::vector<int32_t>& ranks, size_t from) {
  for (size_t i = from; i < nodes.size(); ++i) {
    OutMessage hb(wire::Kind::HEARTBEAT, kJob, ranks[i], 0, 2);
    (void)nodes[i]->send(hb.finish(), Deadline::after(1));
  }
}

// Beats from nodes[from..] every 0.1 s until `listener` hears a message
// other than a beat's acknowledgement (for at most 20 s, or until the
// scheduler returns); that message.
Said beat_until_told(ScheduledJob& job, std::vector<std::unique_ptr<Dealer>>& nodes, const std::vector<int32_t>& ranks,
                     size_t from, Dealer& listener) {
  Said told;
  for (int i = 0; i < 200 && told.kind == wire::Kind::HEARTBEAT && !job.returned(); ++i) {
    beat(nodes, ranks, from);
    told = next_error(listener, 0.1);
  }
  return told;
}

// Waits (up to 10 s) until the scheduler has handled more than `handled`
// messages.
void await_handled(ScheduledJob& job, int64_t handled) {
  for (int i = 0; i < 2000 && job.received() == handled; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

// A server's statistics of `step` (of 2 workers), sent on `d`.
Status stats(Dealer& d, int32_t rank, int64_t step) {
  OutMessage m(wire::Kind::REPORT, kJob, rank, step, 70);
  GradStats mine;
  mine.sum_squares = 1;
  mine.contributors = {1, 1};
  to_wire(mine, m.header().initStats());
  return d.send(m.finish(), Deadline::after(5));
}

// Re-forms (cluster.max_restarts = 1): a job of 2 servers and 2 workers
// with a liveness window of 2 s. Server 0 goes silent while server 1
// waits for the sum of step 4: server 1's round and the workers' heartbeat
// lines are told, with code REFORM, that the job re-forms, naming server 0.
// What the old lines send meanwhile is dropped unanswered. A replacement
// server that registered while the job still ran (before server 0 was taken
// as gone) waits unanswered, and is the re-formed job's server 0 when
// server 1 and worker 0 register again; worker 1 does not, and after the
// liveness window the job re-forms without it: every node table says the
// job re-formed and starts with 1 worker; pst_job_reforms_total is 1. When
// a server goes silent again no restart is left: the job ends with an error
// that names it, and the waiting round hears it without REFORM.
TEST(SchedulerTest, ALostServerReformsTheJobOnce) {
  ScheduledJob job("scheduler-reform", JobLayout{2, 2}, [](SchedulerOptions& o) {
    o.liveness_s = 2.0;  // 20 beats of 0.1 s: a busy machine may delay several
    o.max_restarts = 1;
    o.joins = true;
  });
  std::vector<std::unique_ptr<Dealer>> nodes;
  std::vector<int32_t> ranks, start;
  std::vector<bool> reformed;
  form(job, 2, 2, 100, &nodes, &ranks, &reformed, &start);
  EXPECT_EQ(reformed, (std::vector<bool>{false, false, false, false}));
  EXPECT_EQ(start, (std::vector<int32_t>{2, 2, 2, 2}));
  // A replacement server registers while the job runs (a container
  // restarted at once): it waits, unanswered, for a re-form.
  auto spare = job.connect();
  ASSERT_TRUE(spare->send(registration(wire::Role::SERVER, "inproc://spare", "h", 300), Deadline::after(5)).ok());
  EXPECT_EQ(next_error(*spare, 0.3).kind, wire::Kind::HEARTBEAT) << "a spare server was answered before a re-form";
  // Server 1's round of step 4 waits for server 0, which says nothing more.
  auto round = job.connect();
  ASSERT_TRUE(stats(*round, ranks[1], 4).ok());
  const Said told = beat_until_told(job, nodes, ranks, 1, *nodes[2]);
  ASSERT_EQ(told.kind, wire::Kind::ERROR) << "no word to worker 0 on its line";
  EXPECT_EQ(told.code, wire::ErrorCode::REFORM) << told.message;
  EXPECT_NE(told.message.find("server 0 (rank 1) sent nothing"), std::string::npos) << told.message;
  EXPECT_NE(told.message.find("the job re-forms"), std::string::npos) << told.message;
  const Said in_round = next_error(*round, 5);
  EXPECT_EQ(in_round.code, wire::ErrorCode::REFORM) << in_round.message;
  EXPECT_EQ(next_error(*nodes[3], 5).code, wire::ErrorCode::REFORM);
  EXPECT_EQ(next_error(*nodes[1], 5).code, wire::ErrorCode::REFORM);
  EXPECT_FALSE(job.returned()) << "a lost server ended a job that may re-form";
  EXPECT_EQ(counter_total(job.registry(), "pst_job_reforms_total"), 1);

  // An old line's beat during the re-form: dropped, not answered.
  beat(nodes, ranks, 2);
  EXPECT_EQ(next_error(*nodes[2], 0.5).kind, wire::Kind::HEARTBEAT) << "an old line was answered";

  // Server 1 and worker 0 register again, worker 1 does not (it died before
  // the scheduler noticed); the spare is the re-formed job's server 0. Once
  // the servers are in, the rendezvous waits the liveness window for worker
  // 1, then the job re-forms with 1 worker.
  std::vector<std::unique_ptr<Dealer>> again;
  again.push_back(std::move(spare));
  std::vector<int32_t> ranks2, start2;
  std::vector<bool> reformed2;
  form(job, 1, 1, 200, &again, &ranks2, &reformed2, &start2);
  EXPECT_EQ(reformed2, (std::vector<bool>{true, true, true}));
  EXPECT_EQ(start2, (std::vector<int32_t>{1, 1, 1}));
  EXPECT_EQ(ranks2[0], 1) << "the spare is not server 0";
  EXPECT_FALSE(job.returned());
  EXPECT_EQ(metric(job.registry(), "pst_cluster_members", "worker"), 1);

  // Server 0 of the re-formed job (the spare) goes silent.
  // No restart is left: the job ends, naming it.
  auto round2 = job.connect();
  ASSERT_TRUE(stats(*round2, ranks2[1], 7).ok());
  for (int i = 0; i < 200 && !job.returned(); ++i) {
    beat(again, ranks2, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const Status done = job.join();
  EXPECT_EQ(done.code(), StatusCode::kDeadlineExceeded) << done.to_string();
  EXPECT_NE(done.message().find("server 0 (rank 1) sent nothing"), std::string::npos) << done.message();
  const Said last = next_error(*round2, 5);
  EXPECT_EQ(last.kind, wire::Kind::ERROR);
  EXPECT_EQ(last.code, wire::ErrorCode::INTERNAL) << last.message;
  EXPECT_EQ(counter_total(job.registry(), "pst_job_reforms_total"), 1);
}

// A node that dies between asking the scheduler and being answered: server
// 0 sends its statistics of step 4 on a line of its own and dies (the line
// closes) before server 1's arrive. The sum goes to server 1 all the same,
// and server 0's absence is the liveness check's to judge: the job re-forms,
// as for a server lost at any other moment. (The scheduler ended the job
// when the answer to the dead line failed, "the peer is not connected": the
// chaos test's kill of a server landed there on a Xeon.)
TEST(SchedulerTest, AServerLostAfterItsStatisticsIsJudgedByLiveness) {
  ScheduledJob job("scheduler-lost-round", JobLayout{2, 2}, [](SchedulerOptions& o) {
    o.liveness_s = 2.0;  // 20 beats of 0.1 s: a busy machine may delay several
    o.max_restarts = 1;
    o.start_timeout_s = 5;  // the re-form's rendezvous, which no node joins, ends the job
  });
  std::vector<std::unique_ptr<Dealer>> nodes;
  std::vector<int32_t> ranks, start;
  std::vector<bool> reformed;
  form(job, 2, 2, 100, &nodes, &ranks, &reformed, &start);
  const int64_t handled = job.received();
  auto dying = job.connect();
  ASSERT_TRUE(stats(*dying, ranks[0], 4).ok());
  await_handled(job, handled);
  ASSERT_GT(job.received(), handled) << "the scheduler did not take server 0's statistics";
  dying.reset();
  nodes[0].reset();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto round = job.connect();
  ASSERT_TRUE(stats(*round, ranks[1], 4).ok());
  const Said sum = next_error(*round, 20);
  EXPECT_EQ(sum.kind, wire::Kind::REPORT) << sum.message;
  EXPECT_FALSE(job.returned()) << "a server lost before its answer ended the job: " << job.join().to_string();
  const Said told = beat_until_told(job, nodes, ranks, 1, *nodes[2]);
  ASSERT_EQ(told.kind, wire::Kind::ERROR) << "no word to the worker on its line";
  EXPECT_EQ(told.code, wire::ErrorCode::REFORM) << told.message;
  EXPECT_NE(told.message.find("server 0 (rank 1) sent nothing"), std::string::npos) << told.message;
  EXPECT_FALSE(job.returned()) << "a lost server ended a job that may re-form";
  EXPECT_EQ(counter_total(job.registry(), "pst_job_reforms_total"), 1);
}

// The same at the start barrier: a worker that sends its barrier and dies
// before the release. The server and the other worker are released, and the
// dead worker is removed once silent past the liveness window, which the
// server hears on its heartbeat line; the job goes on.
TEST(SchedulerTest, AWorkerLostAtTheStartBarrierIsRemoved) {
  ScheduledJob job("scheduler-lost-barrier", JobLayout{1, 2}, [](SchedulerOptions& o) { o.liveness_s = 2.0; });
  std::vector<std::unique_ptr<Dealer>> nodes;
  std::vector<int32_t> ranks;
  for (int i = 0; i < 3; ++i) {
    nodes.push_back(job.connect());
    const wire::Role role = i == 0 ? wire::Role::SERVER : wire::Role::WORKER;
    ASSERT_TRUE(
        nodes.back()->send(registration(role, i == 0 ? "inproc://s" : "", "h", 30 + i), Deadline::after(5)).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  }
  for (auto& d : nodes) {
    int32_t rank = 0;
    ASSERT_EQ(answer(*d, &rank).first, wire::Kind::NODE_TABLE);
    ranks.push_back(rank);
  }
  // Worker 1 (the last node) passes the barrier first, then dies.
  for (int i : {2, 1, 0}) {
    const int64_t handled = job.received();
    OutMessage b(wire::Kind::BARRIER, kJob, ranks[static_cast<size_t>(i)], 0, 1);
    ASSERT_TRUE(nodes[static_cast<size_t>(i)]->send(b.finish(), Deadline::after(5)).ok());
    if (i != 2) continue;
    await_handled(job, handled);
    nodes.pop_back();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(next_error(*nodes[0], 20).kind, wire::Kind::BARRIER);
  EXPECT_EQ(next_error(*nodes[1], 20).kind, wire::Kind::BARRIER);
  EXPECT_FALSE(job.returned()) << "a worker lost at the barrier ended the job: " << job.join().to_string();
  const Said membership = beat_until_told(job, nodes, ranks, 0, *nodes[0]);
  EXPECT_EQ(membership.kind, wire::Kind::MEMBERSHIP) << "the server was not told of the removal";
  EXPECT_EQ(metric(job.registry(), "pst_cluster_members", "worker"), 1);
  EXPECT_FALSE(job.returned());
}

}  // namespace
}  // namespace pst
