// Membership at the servers (docs/design.md, Membership): which pushes a
// step takes when workers are removed, checked against optimizers that only
// ever had the remaining workers.
//  - sum_over_servers keeps the workers every server summed and says redo
//    when some server summed more;
//  - ShardOptimizer::reduce over some slots, again over fewer (the redo),
//    equals a job of just those workers bit for bit, and a step without any
//    push is skipped;
//  - two ShardServers over real ZeroMQ sockets (inproc) and a
//    ThreadStatsReducer, three workers: worker 2's push reaches server 0
//    only and the scheduler's word removes it; both servers take the step
//    with workers 0 and 1 (server 0 sums again without worker 2), the
//    weights are a two-worker job's, the pulls hand worker 2's batch to
//    worker 0, and worker 2's next push is refused by name; a re-form ends
//    both servers and the pulls they hold.
#include <atomic>
#include <functional>
#include <thread>

#include <gtest/gtest.h>

#include "comm/grad_stats.h"
#include "comm/remote_client.h"
#include "comm/shard_plan.h"
#include "ps/shard_optimizer.h"
#include "ps/shard_server.h"
#include "tests/ps/fixtures.h"
#include "tests/test_util.h"

namespace pst {
namespace {

constexpr uint64_t kJob = 0x3e3;

TEST(SumOverServersTest, ContributorsAreTheWorkersOfEveryServer) {
  GradStats a, b;
  a.sum_squares = 1.0;
  a.contributors = {1, 1, 1};
  b.sum_squares = 2.0;
  b.contributors = {1, 1, 0};
  GradStats s = sum_over_servers({a, b});
  EXPECT_EQ(s.sum_squares, 3.0);
  EXPECT_EQ(s.contributors, (std::vector<uint8_t>{1, 1, 0}));
  EXPECT_TRUE(s.redo) << "server 0 summed worker 2, which server 1 does not have";
  a.contributors = {1, 1, 0};
  s = sum_over_servers({a, b});
  EXPECT_FALSE(s.redo);
  EXPECT_EQ(s.contributors, (std::vector<uint8_t>{1, 1, 0}));
  s = sum_over_servers({GradStats{}, GradStats{}});  // a job whose membership is fixed says nothing
  EXPECT_TRUE(s.contributors.empty());
  EXPECT_FALSE(s.redo);
}

class ReduceOverSlotsTest : public ::testing::Test {
 protected:
  ReduceOverSlotsTest() : job_(testing::tiny_job()), table_(build_param_table(job_.model, 12, 12)) {
    w0_.resize(static_cast<size_t>(table_.total_numel()));
    init_params(table_, 3, w0_.data());
    for (uint32_t w = 0; w < 3; ++w) grads_.push_back(testing::random_vec(w0_.size(), 40 + w, 0.3f));
  }
  std::unique_ptr<ShardOptimizer> optimizer() {
    return std::make_unique<ShardOptimizer>(job_, table_, whole_tensors(table_), w0_.data());
  }
  // Weights after one step of an optimizer that had pushes of `workers` only.
  std::vector<float> job_of(const std::vector<int>& workers) {
    auto o = optimizer();
    for (int w : workers) o->add_push(grads_[static_cast<size_t>(w)].data(), kTokens[w], 0.5);
    o->apply(o->reduce());
    std::vector<float> out(w0_.size());
    o->copy_weights(out.data());
    return out;
  }
  static constexpr int64_t kTokens[3] = {5, 7, 11};
  JobConfig job_;
  ParamTable table_;
  std::vector<float> w0_;
  std::vector<std::vector<float>> grads_;
};

TEST_F(ReduceOverSlotsTest, SomeSlotsEqualAJobOfThoseWorkers) {
  // All three, then again without worker 0 (the redo), as two workers.
  for (const std::vector<uint8_t>& second : {std::vector<uint8_t>{0, 1, 1}, std::vector<uint8_t>{0, 0, 1}}) {
    auto o = optimizer();
    for (int w = 0; w < 3; ++w) o->add_push(grads_[static_cast<size_t>(w)].data(), kTokens[w], 0.5);
    (void)o->reduce(std::vector<uint8_t>{1, 1, 1});
    (void)o->reduce(second);
    if (second[1] == 0) (void)o->reduce(second);  // one push taken as it is, twice
    const StepReport r = o->apply(o->reduce(second));
    std::vector<int> kept;
    for (int w = 0; w < 3; ++w)
      if (second[static_cast<size_t>(w)]) kept.push_back(w);
    int64_t tokens = 0;
    for (int w : kept) tokens += kTokens[w];
    EXPECT_EQ(r.tokens, tokens);
    std::vector<float> got(w0_.size());
    o->copy_weights(got.data());
    EXPECT_EQ(got, job_of(kept)) << "bit for bit, " << kept.size() << " workers";
  }
}

TEST_F(ReduceOverSlotsTest, AStepWithoutPushesIsSkipped) {
  auto o = optimizer();
  o->add_push(grads_[0].data(), kTokens[0], 0.5);
  const StepReport r = o->apply(o->reduce(std::vector<uint8_t>{0, 0, 0}));
  EXPECT_FALSE(r.applied);
  EXPECT_EQ(r.version, 1);
  EXPECT_EQ(r.applied_steps, 0);
  std::vector<float> got(w0_.size());
  o->copy_weights(got.data());
  EXPECT_EQ(got, w0_);
}

// The tiny model's initial weights for a seed.
std::vector<float> tiny_initial(uint64_t seed) {
  const ParamTable table = build_param_table(testing::tiny_job().model, 12, 12);
  std::vector<float> w(static_cast<size_t>(table.total_numel()));
  init_params(table, seed, w.data());
  return w;
}

// A ThreadStatsReducer whose sum of one step names a joining worker, as the
// scheduler's answer does once the joiner has passed its start barrier.
class JoiningReducer final : public GradStatsReducer {
 public:
  explicit JoiningReducer(int servers) : inner_(servers) {}
  void join_after(int64_t step, Joiner joiner) {
    step_ = step;
    joiner_ = joiner;
  }
  // The sum of `step` is the scheduler's word that the job re-forms, a
  // second after it was asked for (the workers' pulls wait by then).
  void reform_at(int64_t step) { reform_ = step; }
  Result<GradStats> all_reduce(int server, int64_t step, const GradStats& local, Deadline deadline) override {
    if (step == reform_) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      return aborted("server {}: server 9 is gone; the job re-forms", server);
    }
    PST_ASSIGN_OR_RETURN(GradStats sum, inner_.all_reduce(server, step, local, deadline));
    if (step == step_ && !sum.redo) sum.joined = {joiner_};
    return sum;
  }

 private:
  ThreadStatsReducer inner_;
  int64_t step_ = -1;
  int64_t reform_ = -1;
  Joiner joiner_;
};

// Gradients of the tiny model's size for three workers, from seed, seed+1, seed+2.
std::vector<std::vector<float>> three_gradients(size_t n, uint32_t seed) {
  std::vector<std::vector<float>> g;
  for (uint32_t w = 0; w < 3; ++w) g.push_back(testing::random_vec(n, seed + w, 0.3f));
  return g;
}

// Two servers of the tiny model for three workers over inproc, each serving
// on a thread of its own, their statistics summed by a ThreadStatsReducer
// (the job starts with start_workers of them; 0: all three).
class TwoServers {
 public:
  static constexpr JobLayout kLayout{2, 3};

  explicit TwoServers(const std::vector<float>& w0, Consistency consistency = Consistency::kBsp, int start_workers = 0,
                      std::function<void(JoiningReducer&)> before = nullptr)
      : job_(testing::tiny_job()),
        table_(build_param_table(job_.model, 12, 12)),
        plan_(*ShardPlan::make(table_.numels(), 2, 512)),
        reducer_(2) {
    if (before) before(reducer_);
    for (int k = 0; k < 2; ++k) {
      endpoints_.push_back("inproc://membership-" + std::to_string(k));
      auto router = Router::bind(ctx_, endpoints_.back());
      PST_CHECK_MSG(router.ok(), "{}", router.status().to_string());
      ShardServerOptions so{kJob, k, kLayout, 30};
      so.consistency = consistency;
      so.staleness = 1;
      so.start_workers = start_workers;
      servers_.push_back(
          std::make_unique<ShardServer>(job_, table_, plan_, w0.data(), &reducer_, std::move(*router), so));
    }
    for (int k = 0; k < 2; ++k)
      threads_.emplace_back([this, k] { served_[k] = servers_[static_cast<size_t>(k)]->serve(); });
  }
  ~TwoServers() { join(); }
  void join() {
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  std::unique_ptr<RemoteParameterClient> client(int worker) {
    auto c = RemoteParameterClient::connect(ctx_, plan_, endpoints_, RemoteClientOptions{kJob, worker, kLayout, 30});
    PST_CHECK_MSG(c.ok(), "{}", c.status().to_string());
    return std::move(*c);
  }
  // A push of step `step` by `worker` to server k alone, by hand; the kind
  // of the answer and its error message.
  std::pair<wire::Kind, std::string> push_to(int k, int worker, int64_t step, const std::vector<float>& g) {
    std::unique_ptr<Dealer>& raw = raw_[k];
    if (!raw) {
      auto d = Dealer::connect(ctx_, endpoints_[static_cast<size_t>(k)], "server");
      PST_CHECK_MSG(d.ok(), "{}", d.status().to_string());
      raw = std::move(*d);
    }
    OutMessage m(wire::Kind::PUSH, kJob, kLayout.worker_rank(worker), step, 7);
    auto push = m.header().initPush();
    push.setTokens(11);
    push.setLossSum(0.5);
    for (const Chunk& c : plan_.chunks())
      if (c.server == k) m.add_chunk(c.key, g.data() + c.begin, c.length, nullptr);
    if (!raw->send(m.finish(), Deadline::after(5)).ok()) return {wire::Kind::HEARTBEAT, "not sent"};
    auto frames = raw->receive(Deadline::after(20), "the answer");
    if (!frames.ok()) return {wire::Kind::HEARTBEAT, frames.status().to_string()};
    Rejection why;
    auto r = InMessage::parse(std::move(*frames), &why);
    if (!r) return {wire::Kind::HEARTBEAT, why.message};
    const wire::Kind kind = r->header().getKind();
    return {kind, kind == wire::Kind::ERROR ? r->header().getError().getMessage().cStr() : ""};
  }
  ShardServer& server(int k) { return *servers_[static_cast<size_t>(k)]; }
  // What server k's serve() returned, once join() has.
  const Status& served(int k) const { return served_[k]; }
  // Runs `work` for workers 0..count-1 on threads of their own, each with
  // its client, and `meanwhile` on this thread; then waits for the servers.
  // Every worker and server ends well.
  void run_workers(const std::function<Status(RemoteParameterClient&, int)>& work,
                   const std::function<void()>& meanwhile = nullptr, int count = 2) {
    std::vector<Status> st(static_cast<size_t>(count));
    std::vector<std::thread> workers;
    for (int w = 0; w < count; ++w) workers.emplace_back([&, w] { st[static_cast<size_t>(w)] = work(*client(w), w); });
    if (meanwhile) meanwhile();
    for (auto& t : workers) t.join();
    join();
    for (int w = 0; w < count; ++w)
      EXPECT_TRUE(st[static_cast<size_t>(w)].ok()) << "worker " << w << ": " << st[static_cast<size_t>(w)].to_string();
    for (int k = 0; k < 2; ++k) EXPECT_TRUE(served_[k].ok()) << served_[k].to_string();
  }

 private:
  zmq::context_t ctx_;
  JobConfig job_;
  ParamTable table_;
  ShardPlan plan_;
  JoiningReducer reducer_;
  std::vector<std::string> endpoints_;
  std::vector<std::unique_ptr<ShardServer>> servers_;
  std::unique_ptr<Dealer> raw_[2];
  Status served_[2];
  std::vector<std::thread> threads_;
};

TEST(ShardServerMembershipTest, AWorkerRemovedMidPushCountsNowhere) {
  const JobConfig job = testing::tiny_job();
  const ParamTable table = build_param_table(job.model, 12, 12);
  const std::vector<float> w0 = tiny_initial(9);
  const std::vector<std::vector<float>> g = three_gradients(w0.size(), 60);

  TwoServers job2(w0);
  // Worker 2's push of step 0 reaches server 0, not server 1.
  auto [kind, message] = job2.push_to(0, 2, 0, g[2]);
  ASSERT_EQ(kind, wire::Kind::PUSH_ACK) << message;
  // Workers 0 and 1 pull version 0 (which batches: 0 and 1), push step 0,
  // and pull version 1, which waits for the removal.
  std::vector<std::vector<float>> weights(2, std::vector<float>(w0.size()));
  std::vector<StepReport> first(2), second(2);
  job2.run_workers(
      [&](RemoteParameterClient& c, int w) -> Status {
        PST_ASSIGN_OR_RETURN(first[w], c.pull(0, weights[w].data()));
        PST_RETURN_IF_ERROR(c.push(0, w == 0 ? 5 : 7, 0.5, g[static_cast<size_t>(w)].data()));
        PST_ASSIGN_OR_RETURN(second[w], c.pull(1, weights[w].data()));
        return c.shutdown();
      },
      [&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        for (int k = 0; k < 2; ++k) job2.server(k).remove_workers({TwoServers::kLayout.worker_rank(2)});
      });

  // The step of workers 0 and 1 only, bit for bit.
  ShardOptimizer ref(job, table, whole_tensors(table), w0.data());
  ref.add_push(g[0].data(), 5, 0.5);
  ref.add_push(g[1].data(), 7, 0.5);
  ref.apply(ref.reduce());
  std::vector<float> want(w0.size());
  ref.copy_weights(want.data());
  EXPECT_EQ(weights[0], want);
  EXPECT_EQ(weights[1], want);
  // Step 0 trained on batches 0 and 1; batch 2, worker 2's, goes to worker 0 next.
  EXPECT_EQ(first[0].batch, 0);
  EXPECT_EQ(first[1].batch, 1);
  EXPECT_EQ(second[0].batch, 2);
  EXPECT_EQ(second[1].batch, 3);
  EXPECT_TRUE(second[0].lead) << "worker 0 is the lowest worker of step 1";
  EXPECT_FALSE(second[1].lead);
  EXPECT_EQ(job2.server(0).version(), 1);
  EXPECT_EQ(job2.server(1).version(), 1);
}

// The job re-forms (another server was lost), told on the heartbeat line
// (reform()) or first in the answer to the statistics of step 0: workers 0
// and 1 have pushed step 0 (and worker 2 too, in the second case) and wait
// for version 1. Both servers' serve() end with kAborted, and the waiting
// pulls are answered with code REFORM, which the workers' clients return as
// kAborted: every node then registers again (job/role.cc). No step was taken.
TEST(ShardServerMembershipTest, AReformEndsTheServersAndTheirWaitingPulls) {
  const std::vector<float> w0 = tiny_initial(9);
  const std::vector<float> g = testing::random_vec(w0.size(), 62, 0.3f);
  for (const bool by_reduction : {false, true}) {
    SCOPED_TRACE(by_reduction ? "told by the reduction" : "told on the heartbeat line");
    TwoServers job2(w0, Consistency::kBsp, 0, [&](JoiningReducer& r) {
      if (by_reduction) r.reform_at(0);
    });
    const int workers = by_reduction ? 3 : 2;
    std::vector<Status> pulled(static_cast<size_t>(workers));
    std::vector<std::thread> threads;
    for (int w = 0; w < workers; ++w)
      threads.emplace_back([&, w] {
        auto c = job2.client(w);
        std::vector<float> weights(w0.size());
        Status& st = pulled[static_cast<size_t>(w)];
        st = c->push(0, 5, 0.5, g.data());
        if (st.ok()) st = c->pull(1, weights.data()).status();
      });
    if (!by_reduction) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      for (int k = 0; k < 2; ++k) job2.server(k).reform("server 2 (rank 3) is gone; the job re-forms");
    }
    for (auto& t : threads) t.join();
    job2.join();
    for (const Status& st : pulled) {
      EXPECT_EQ(st.code(), StatusCode::kAborted) << st.to_string();
      EXPECT_NE(st.message().find("the job re-forms"), std::string::npos) << st.message();
    }
    for (int k = 0; k < 2; ++k) {
      EXPECT_EQ(job2.served(k).code(), StatusCode::kAborted) << job2.served(k).to_string();
      EXPECT_EQ(job2.server(k).version(), 0);
    }
  }
}

TEST(ShardServerMembershipTest, ARemovedWorkerIsRefusedByName) {
  const std::vector<float> w0 = tiny_initial(9);
  const std::vector<float> g = testing::random_vec(w0.size(), 61, 0.3f);
  TwoServers job2(w0);
  // The scheduler names the removed worker's process (this one's).
  for (int k = 0; k < 2; ++k) job2.server(k).remove_workers({TwoServers::kLayout.worker_rank(2)}, {this_process()});
  // The removal is taken before the next message: retry until it is.
  std::pair<wire::Kind, std::string> answer;
  for (int i = 0; i < 100; ++i) {
    answer = job2.push_to(1, 2, 0, g);
    if (answer.first == wire::Kind::ERROR) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(answer.first, wire::Kind::ERROR);
  EXPECT_NE(answer.second.find("worker 2 (rank 5) was removed from the job"), std::string::npos) << answer.second;
  // Workers 0 and 1 train a step and end the job.
  job2.run_workers([&](RemoteParameterClient& c, int) -> Status {
    std::vector<float> weights(w0.size());
    PST_RETURN_IF_ERROR(c.push(0, 5, 0.5, g.data()));
    PST_RETURN_IF_ERROR(c.pull(1, weights.data()).status());
    return c.shutdown();
  });
}

// A worker joins (elastic join): the job starts with workers 0 and 1 of
// three places. Worker 2's push before it is admitted is refused (its place
// is free); its pull of version 2 waits. The reduction of step 1 names it:
// both servers admit it at version 2, its pull is answered with the batch
// after the others' (6), and step 2 waits for its push and takes all three,
// bit for bit as an optimizer that had pushes of 2, 2 and then 3 workers.
TEST(ShardServerMembershipTest, AWorkerJoinsAtTheStepTheReductionNames) {
  const JobConfig job = testing::tiny_job();
  const ParamTable table = build_param_table(job.model, 12, 12);
  const std::vector<float> w0 = tiny_initial(9);
  const std::vector<std::vector<float>> g = three_gradients(w0.size(), 70);
  const int64_t tokens[3] = {5, 7, 11};
  TwoServers job2(w0, Consistency::kBsp, 2, [](JoiningReducer& r) {
    r.join_after(1, {TwoServers::kLayout.worker_rank(2), this_process()});
  });
  auto early = job2.push_to(0, 2, 0, g[2]);
  EXPECT_EQ(early.first, wire::Kind::ERROR);
  EXPECT_NE(early.second.find("worker 2 (rank 5) is not in the job"), std::string::npos) << early.second;
  std::vector<std::vector<float>> weights(3, std::vector<float>(w0.size()));
  std::vector<std::vector<int64_t>> batches(3);
  std::vector<bool> lead(3, false);
  job2.run_workers(
      [&](RemoteParameterClient& c, int w) -> Status {
        const size_t i = static_cast<size_t>(w);
        for (int64_t step = w == 2 ? 2 : 0; step < 3; ++step) {
          PST_ASSIGN_OR_RETURN(StepReport r, c.pull(step, weights[i].data()));
          if (r.version != step)
            return failed_precondition("worker {} pulled version {} for step {}", w, r.version, step);
          batches[i].push_back(r.batch);
          lead[i] = r.lead;
          PST_RETURN_IF_ERROR(c.push(step, tokens[w], 0.5, g[i].data()));
        }
        PST_RETURN_IF_ERROR(c.pull(3, weights[i].data()).status());
        return c.shutdown();
      },
      nullptr, 3);
  ShardOptimizer ref(job, table, whole_tensors(table), w0.data());
  for (int step = 0; step < 3; ++step) {
    for (int w = 0; w < (step < 2 ? 2 : 3); ++w) ref.add_push(g[static_cast<size_t>(w)].data(), tokens[w], 0.5);
    ref.apply(ref.reduce());
  }
  std::vector<float> want(w0.size());
  ref.copy_weights(want.data());
  for (int w = 0; w < 3; ++w) EXPECT_EQ(weights[static_cast<size_t>(w)], want) << "worker " << w << ", bit for bit";
  EXPECT_EQ(batches[0], (std::vector<int64_t>{0, 2, 4}));
  EXPECT_EQ(batches[1], (std::vector<int64_t>{1, 3, 5}));
  EXPECT_EQ(batches[2], (std::vector<int64_t>{6}));
  EXPECT_TRUE(lead[0]);
  EXPECT_FALSE(lead[2]);
  EXPECT_EQ(job2.server(0).version(), 3);
  EXPECT_EQ(job2.server(1).version(), 3);
}

// SSP(1): a worker that never pushes holds the others back once they are
// two clocks ahead; removed, it does not any more.
TEST(ShardServerMembershipTest, SspStopsWaitingForARemovedWorker) {
  const std::vector<float> w0 = tiny_initial(9);
  const std::vector<float> g = testing::random_vec(w0.size(), 62, 0.3f);
  TwoServers job2(w0, Consistency::kSsp);
  std::atomic<int> pushed{0};
  job2.run_workers(
      [&](RemoteParameterClient& c, int) -> Status {
        std::vector<float> weights(w0.size());
        for (int64_t step = 0; step < 3; ++step) {
          PST_ASSIGN_OR_RETURN(StepReport r, c.pull(step, weights.data()));
          PST_RETURN_IF_ERROR(c.push(r.version, 5, 0.5, g.data()));
          ++pushed;
        }
        return c.shutdown();
      },
      [&] {
        // Workers 0 and 1 push twice each, then wait: worker 2 has pushed nothing.
        testing::poll_until(
            20, [&] { return pushed.load() >= 4; }, 5);
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        EXPECT_EQ(pushed.load(), 4) << "the bound held them at a lead of 2";
        for (int k = 0; k < 2; ++k) job2.server(k).remove_workers({TwoServers::kLayout.worker_rank(2)});
      });
  EXPECT_EQ(pushed.load(), 6);
}

}  // namespace
}  // namespace pst
