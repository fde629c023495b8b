// The parameter server over real ZeroMQ sockets (inproc), driven by hand:
// pulls waiting for an update get it in parts; a stop asked by one worker
// ends the job at that step with a checkpoint; a malformed push is rejected
// with an Error reply and leaves the round intact. ASP and SSP: with one
// slow worker the servers' clocks show how far the others run ahead; SSP(s)
// never answers a pull beyond s, and the loss still falls. (Whole BSP jobs
// of S servers and W workers as threads are tests/job's.)
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <thread>

#include <gtest/gtest.h>

#include "comm/grad_stats.h"
#include "comm/remote_client.h"
#include "comm/shard_plan.h"
#include "core/stop.h"
#include "ps/checkpoint.h"
#include "ps/local_client.h"
#include "ps/shard_server.h"
#include "tests/ps/fixtures.h"
#include "tests/test_util.h"

namespace pst {
namespace {

constexpr uint64_t kJob = 0xb5b;

// Worker w's examples: (source, target) word pairs.
using Words = std::vector<std::vector<int32_t>>;
const std::vector<std::pair<Words, Words>> kShards = {
    {{{4, 5, 6, 2}, {7, 3}}, {{7, 8, 9}, {5}}},
    {{{8, 3, 3, 5, 6}}, {{6, 6, 7, 8}}},
    {{{9, 4}, {5, 5, 7}, {3}}, {{4}, {8, 9}, {10, 11, 4}}},
};

// One server of the tiny model, for two workers, serving on its own thread
// over inproc://NAME (or over TCP on loopback when NAME is "tcp") from the
// initial weights w0.
class ServedShard {
 public:
  static constexpr JobLayout kLayout{1, 2};

  ServedShard(const std::string& name, const std::vector<float>& w0, int64_t chunk_bytes, double timeout_s,
              int64_t stream_bytes = ShardServerOptions{}.stream_bytes, const std::string& checkpoint_root = "")
      : job_(testing::tiny_job()),
        table_(build_param_table(job_.model, 12, 12)),
        endpoint_(name == "tcp" ? "tcp://127.0.0.1:0" : "inproc://" + name),
        plan_(*ShardPlan::make(table_.numels(), 1, chunk_bytes)) {
    auto router = Router::bind(ctx_, endpoint_);
    PST_CHECK_MSG(router.ok(), "{}", router.status().to_string());
    endpoint_ = (*router)->endpoint();
    ShardServerOptions so{kJob, 0, kLayout, timeout_s};
    so.stream_bytes = stream_bytes;
    so.checkpoint_root = checkpoint_root;
    server_ = std::make_unique<ShardServer>(job_, table_, plan_, w0.data(), &reducer_, std::move(*router), so);
    thread_ = std::thread([this] { served_ = server_->serve(); });
  }
  ~ServedShard() { (void)join(); }

  // What serve() returned, once it has.
  Status join() {
    if (thread_.joinable()) thread_.join();
    return served_;
  }
  std::unique_ptr<RemoteParameterClient> client(int worker, double timeout_s) {
    auto c =
        RemoteParameterClient::connect(ctx_, plan_, {endpoint_}, RemoteClientOptions{kJob, worker, kLayout, timeout_s});
    PST_CHECK_MSG(c.ok(), "{}", c.status().to_string());
    return std::move(*c);
  }
  // Runs `work` for workers 0 and 1 on threads of their own, each with its
  // client; their statuses.
  std::vector<Status> run_workers(const std::function<Status(RemoteParameterClient&, int)>& work) {
    std::vector<Status> st(2);
    std::vector<std::thread> threads;
    for (int w = 0; w < 2; ++w)
      threads.emplace_back([&, w] { st[static_cast<size_t>(w)] = work(*client(w, 30.0), w); });
    for (auto& t : threads) t.join();
    return st;
  }

  const JobConfig& job() const { return job_; }
  const ParamTable& table() const { return table_; }
  const ShardPlan& plan() const { return plan_; }
  const std::string& endpoint() const { return endpoint_; }
  zmq::context_t& context() { return ctx_; }
  ShardServer& server() { return *server_; }

 private:
  JobConfig job_;
  ParamTable table_;
  std::string endpoint_;
  ShardPlan plan_;
  zmq::context_t ctx_;
  SingleServerReducer reducer_;
  std::unique_ptr<ShardServer> server_;
  Status served_;
  std::thread thread_;
};

// The initial weights of the tiny model for a seed.
std::vector<float> initial_weights(uint64_t seed) {
  const ParamTable table = build_param_table(testing::tiny_job().model, 12, 12);
  std::vector<float> w(static_cast<size_t>(table.total_numel()));
  init_params(table, seed, w.data());
  return w;
}

// One BSP round of both workers on the served shard: each (after
// before_push(w), if given) pushes g with `tokens`, pulls step 1 and shuts
// down; every status is OK, and both hold the oracle's step from w0.
void expect_one_round(ServedShard& s, const std::vector<float>& w0, const std::vector<float>& g, int64_t tokens,
                      const std::function<void(int)>& before_push = nullptr) {
  std::vector<std::vector<float>> weights(2, std::vector<float>(w0.size()));
  const auto st = s.run_workers([&](RemoteParameterClient& c, int w) -> Status {
    if (before_push) before_push(w);
    PST_RETURN_IF_ERROR(c.push(0, tokens, 0.0, g.data()));
    PST_RETURN_IF_ERROR(c.pull(1, weights[static_cast<size_t>(w)].data()).status());
    return c.shutdown();
  });
  const Status served = s.join();
  EXPECT_TRUE(st[0].ok()) << st[0].to_string();
  EXPECT_TRUE(st[1].ok()) << st[1].to_string();
  EXPECT_TRUE(served.ok()) << served.to_string();
  const std::vector<float> want = testing::one_step(s.job(), s.table(), w0, g, {tokens, tokens});
  EXPECT_EQ(weights[0], want);
  EXPECT_EQ(weights[1], want);
}

// Blocks until the server holds `n` waiting pulls (at most 20 s).
void await_waiting_pulls(ShardServer& server, int64_t n) {
  testing::poll_until(20, [&] { return server.waiting_pulls() >= n; });
}

// Three BSP rounds over TCP: two workers with gradients and token counts of
// their own, each pulling right after its push, hold after every round the
// weights of one in-process optimizer fed the same pushes. The tiny shard is
// updated on the receive thread (ShardServer::update_here) with the default
// stream_bytes, and on the update thread, streamed, with 4.
class RoundsOverTcp : public ::testing::TestWithParam<int64_t> {};

TEST_P(RoundsOverTcp, GiveTheStepsOfOneOptimizer) {
  const std::vector<float> w0 = initial_weights(8);
  ServedShard s("tcp", w0, 96, 30.0, GetParam());
  auto grad = [&](int step, int w) {
    return testing::random_vec(w0.size(), static_cast<uint32_t>(10 * step + w), 0.2f);
  };
  const int64_t tokens[2] = {6, 11};
  std::vector<std::vector<std::vector<float>>> got(3, std::vector<std::vector<float>>(2));
  const auto st = s.run_workers([&](RemoteParameterClient& c, int w) -> Status {
    for (int step = 0; step < 3; ++step) {
      PST_RETURN_IF_ERROR(c.push(step, tokens[w], 0.0, grad(step, w).data()));
      auto& weights = got[static_cast<size_t>(step)][static_cast<size_t>(w)];
      weights.resize(w0.size());
      PST_RETURN_IF_ERROR(c.pull(step + 1, weights.data()).status());
    }
    return c.shutdown();
  });
  ASSERT_TRUE(st[0].ok()) << st[0].to_string();
  ASSERT_TRUE(st[1].ok()) << st[1].to_string();
  ASSERT_TRUE(s.join().ok());
  ShardOptimizer ref(s.job(), s.table(), whole_tensors(s.table()), w0.data());
  for (int step = 0; step < 3; ++step) {
    for (int w = 0; w < 2; ++w) ref.add_push(grad(step, w).data(), tokens[w], 0.0);
    ref.apply(ref.reduce());
    std::vector<float> want(w0.size());
    ref.copy_weights(want.data());
    EXPECT_EQ(got[static_cast<size_t>(step)][0], want) << "step " << step;
    EXPECT_EQ(got[static_cast<size_t>(step)][1], want) << "step " << step;
  }
}

INSTANTIATE_TEST_SUITE_P(StreamBytes, RoundsOverTcp, ::testing::Values(ShardServerOptions{}.stream_bytes, 4));

// A pull that waits while the update runs gets the new weights in parts as
// AdamW gets through the chunks, all but the last before the update ends;
// the assembled weights are those of the whole step.
TEST(ShardServerTest, PullsWaitingForAnUpdateGetItInParts) {
  const std::vector<float> w0 = initial_weights(4);
  ServedShard s("stream-test", w0, 128, 30.0, /*stream_bytes=*/4);
  const std::vector<float> g = testing::random_vec(w0.size(), 9, 0.1f);
  // Worker 1 pushes only once worker 0's pull is waiting at the server.
  expect_one_round(s, w0, g, 5, [&](int w) {
    if (w == 1) await_waiting_pulls(s.server(), 1);
  });
  EXPECT_GT(s.server().streamed_parts(), 0) << "nothing went out before the update ended";
}

// A job's servers stream in BSP whatever cluster.overlap says (it decides
// what the workers do): only cluster.stream_bytes sets the parts' size.
TEST(ShardServerTest, AJobsServersStreamWhateverOverlapSays) {
  for (const Overlap overlap : {Overlap::kOff, Overlap::kAuto, Overlap::kOn}) {
    JobConfig job;
    job.cluster.overlap = overlap;
    job.cluster.stream_bytes = 12345;
    EXPECT_EQ(shard_server_options(job, 7, 0, JobLayout{1, 1}).stream_bytes, 12345) << to_string(overlap);
  }
}

// A graceful stop asked by one worker (core/stop.h; the flag rides on its
// push, as when a signal reaches only that worker's process): the update of
// that step reports the stop to both workers' pulls, a complete checkpoint
// of the step holds the step's weights, and the server records where the job
// stopped.
TEST(ShardServerTest, AStopAskedByOneWorkerEndsTheJobAtThatStepWithACheckpoint) {
  const std::vector<float> w0 = initial_weights(6);
  testing::TempDir root;
  ServedShard s("stop-test", w0, 256, 30.0, ShardServerOptions{}.stream_bytes, root.path());
  const std::vector<float> g = testing::random_vec(w0.size(), 10, 0.1f);
  std::vector<StepReport> info(2);
  const auto st = s.run_workers([&](RemoteParameterClient& c, int w) -> Status {
    if (w == 0) {
      request_stop();
      const Status pushed = c.push(0, 5, 0.0, g.data());
      clear_stop_request();  // only the flag on worker 0's push is left to carry it
      PST_RETURN_IF_ERROR(pushed);
    } else {
      await_waiting_pulls(s.server(), 1);  // worker 0 has pushed and waits
      PST_RETURN_IF_ERROR(c.push(0, 5, 0.0, g.data()));
    }
    std::vector<float> weights(w0.size());
    PST_ASSIGN_OR_RETURN(info[static_cast<size_t>(w)], c.pull(1, weights.data()));
    return c.shutdown();
  });
  const Status served = s.join();
  ASSERT_TRUE(st[0].ok()) << st[0].to_string();
  ASSERT_TRUE(st[1].ok()) << st[1].to_string();
  ASSERT_TRUE(served.ok()) << served.to_string();
  EXPECT_TRUE(info[0].stop);
  EXPECT_TRUE(info[1].stop);
  EXPECT_EQ(s.server().stopped_at(), 1);
  const std::string dir = checkpoint_dir(root.path(), 1);
  auto m = read_checkpoint(dir);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->step, 1);
  EXPECT_EQ(m->applied_steps, 1);
  auto state = load_shard(dir, *m, s.table(), whole_tensors(s.table()));
  ASSERT_TRUE(state.ok()) << state.status().to_string();
  EXPECT_EQ(state->weights, testing::one_step(s.job(), s.table(), w0, g, {5, 5}));
}

// Without a stop, the pulls carry none and nothing is written.
TEST(ShardServerTest, NoStopNoCheckpoint) {
  const std::vector<float> w0 = initial_weights(6);
  testing::TempDir root;
  ServedShard s("no-stop-test", w0, 256, 30.0, ShardServerOptions{}.stream_bytes, root.path());
  const std::vector<float> g = testing::random_vec(w0.size(), 10, 0.1f);
  std::vector<StepReport> info(2);
  const auto st = s.run_workers([&](RemoteParameterClient& c, int w) -> Status {
    PST_RETURN_IF_ERROR(c.push(0, 5, 0.0, g.data()));
    std::vector<float> weights(w0.size());
    PST_ASSIGN_OR_RETURN(info[static_cast<size_t>(w)], c.pull(1, weights.data()));
    return c.shutdown();
  });
  ASSERT_TRUE(s.join().ok());
  ASSERT_TRUE(st[0].ok() && st[1].ok());
  EXPECT_FALSE(info[0].stop || info[1].stop);
  EXPECT_EQ(s.server().stopped_at(), -1);
  EXPECT_FALSE(std::filesystem::exists(checkpoint_dir(root.path(), 1)));
}

// The servers' reduction carries the control flags: one server's stop or
// checkpoint reaches all of them, with the statistics' sum unchanged.
TEST(ThreadStatsReducerTest, ControlFlagsReachEveryServer) {
  ThreadStatsReducer reducer(3);
  std::vector<Result<GradStats>> out(3, GradStats{});
  std::vector<std::thread> threads;
  for (int k = 0; k < 3; ++k)
    threads.emplace_back([&, k] {
      GradStats local;
      local.sum_squares = k + 1.0;
      local.control.stop = k == 2;
      local.control.checkpoint = k == 0;
      out[static_cast<size_t>(k)] = reducer.all_reduce(k, 7, local, Deadline::after(20));
    });
  for (auto& t : threads) t.join();
  for (const auto& r : out) {
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(r->sum_squares, 6.0);
    EXPECT_TRUE(r->control.stop);
    EXPECT_TRUE(r->control.checkpoint);
    EXPECT_FALSE(r->nonfinite);
  }
}

// One server, two workers, and worker 1 speaks through a raw socket: a push
// with another job id, a part that repeats a chunk, a part whose tokens
// differ from its first part's, and an empty part get Error replies naming
// the problem; the server counts them, and the push goes on unharmed: its
// last part completes it and the round ends with both workers' gradients.
TEST(ShardServerTest, BadPushesAreRejectedAndTheRoundGoesOn) {
  const std::vector<float> w0 = initial_weights(3);
  ServedShard s("bad-push-test", w0, 256, 30.0);
  const auto& chunks = s.plan().chunks();
  ASSERT_GT(chunks.size(), 2u);
  auto raw = Dealer::connect(s.context(), s.endpoint(), "server 0");
  ASSERT_TRUE(raw.ok());
  const std::vector<float> g(w0.size(), 0.01f);
  // Sends a part of worker 1's push of step 0 with chunks [first, last) and
  // returns the reply: "ack" or the Error's message.
  uint64_t reply_job = 0;  // the job id of the last reply
  auto send_part = [&](uint64_t job_id, size_t first, size_t last, int64_t tokens) -> std::string {
    OutMessage m(wire::Kind::PUSH, job_id, ServedShard::kLayout.worker_rank(1), 0, 5);
    m.header().initPush().setTokens(tokens);
    for (size_t i = first; i < last; ++i)
      m.add_chunk(chunks[i].key, g.data() + chunks[i].begin, chunks[i].length, nullptr);
    EXPECT_TRUE((*raw)->send(m.finish(), Deadline::after(10)).ok());
    auto reply = (*raw)->receive(Deadline::after(10), "a reply");
    if (!reply.ok()) return reply.status().to_string();
    Rejection why;
    auto in = InMessage::parse(std::move(*reply), &why);
    if (!in) return "unparsable reply: " + why.message;
    reply_job = in->header().getJobId();
    if (in->header().getKind() == wire::Kind::PUSH_ACK) return "ack";
    EXPECT_EQ(in->header().getKind(), wire::Kind::ERROR);
    return in->header().getError().getMessage().cStr();
  };
  const size_t n = chunks.size();
  const std::string other_job = send_part(kJob + 1, 0, n, 3);
  EXPECT_NE(other_job.find("is not this job's"), std::string::npos) << other_job;
  EXPECT_EQ(reply_job, 0u) << "a peer that does not know the job's id must not learn it";
  EXPECT_EQ(other_job.find(fmt::format("{:016x}", kJob)), std::string::npos) << other_job;
  EXPECT_EQ(send_part(kJob, 0, n - 1, 3), "ack");
  EXPECT_EQ(reply_job, kJob);
  const std::string repeat = send_part(kJob, 0, 1, 3);
  EXPECT_NE(repeat.find("repeats chunk"), std::string::npos) << repeat;
  const std::string mismatch = send_part(kJob, n - 1, n, 4);
  EXPECT_NE(mismatch.find("does not match its first part"), std::string::npos) << mismatch;
  const std::string empty = send_part(kJob, 0, 0, 3);
  EXPECT_NE(empty.find("empty part"), std::string::npos) << empty;
  EXPECT_EQ(s.server().rejected(), 4);
  EXPECT_EQ(s.server().version(), 0) << "a rejected part must not count";
  EXPECT_EQ(send_part(kJob, n - 1, n, 3), "ack");

  // Worker 0 pushes the same gradient; both pull the step and finish.
  std::vector<std::vector<float>> weights(2, std::vector<float>(w0.size()));
  const auto st = s.run_workers([&](RemoteParameterClient& c, int w) -> Status {
    if (w == 0) PST_RETURN_IF_ERROR(c.push(0, 10, 0.0, g.data()));
    PST_RETURN_IF_ERROR(c.pull(1, weights[static_cast<size_t>(w)].data()).status());
    return c.shutdown();
  });
  const Status served = s.join();
  EXPECT_TRUE(st[0].ok()) << st[0].to_string();
  EXPECT_TRUE(st[1].ok()) << st[1].to_string();
  EXPECT_TRUE(served.ok()) << served.to_string();
  EXPECT_EQ(s.server().version(), 1);
  EXPECT_EQ(s.server().rejected(), 4);
  // The step used the mean gradient g: one AdamW step from w0.
  const std::vector<float> want = testing::one_step(s.job(), s.table(), w0, g, {13});
  EXPECT_EQ(weights[0], want);
  EXPECT_EQ(weights[1], want);
}

// The push that completes a round and the pull sent right behind it, as a
// worker sends them, over TCP (the server takes both from its queue without
// polling in between): the two answers come in the order of the requests,
// the acknowledgement first, then the weights of the step the push
// completed. A push part with nothing behind it is acknowledged at once.
TEST(ShardServerTest, APushAndThePullBehindItAreAnsweredInOrder) {
  const std::vector<float> w0 = initial_weights(5);
  ServedShard s("tcp", w0, 256, 30.0);
  const auto& chunks = s.plan().chunks();
  const std::vector<float> g(w0.size(), 0.01f);
  auto raw = Dealer::connect(s.context(), s.endpoint(), "server 0");
  ASSERT_TRUE(raw.ok());
  const int32_t rank = ServedShard::kLayout.worker_rank(1);
  auto reply = [&](const char* what) -> std::unique_ptr<InMessage> {
    auto frames = (*raw)->receive(Deadline::after(10), what);
    EXPECT_TRUE(frames.ok()) << frames.status().to_string();
    if (!frames.ok()) return nullptr;
    Rejection why;
    auto in = InMessage::parse(std::move(*frames), &why);
    EXPECT_TRUE(in != nullptr) << why.message;
    return in;
  };
  auto push_part = [&](size_t first, size_t last, uint64_t request) {
    OutMessage m(wire::Kind::PUSH, kJob, rank, 0, request);
    m.header().initPush().setTokens(10);
    for (size_t i = first; i < last; ++i) m.add_chunk_copy(chunks[i].key, g.data() + chunks[i].begin, chunks[i].length);
    return (*raw)->send(m.finish(), Deadline::after(10));
  };
  // A first part alone: its acknowledgement comes though nothing follows it.
  ASSERT_TRUE(push_part(0, 1, 21).ok());
  auto ack = reply("the acknowledgement of a part");
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->header().getKind(), wire::Kind::PUSH_ACK);
  EXPECT_EQ(ack->header().getRequestId(), 21u);

  auto c0 = s.client(0, 30.0);
  ASSERT_TRUE(c0->push(0, 10, 0.0, g.data()).ok());
  // The rest of worker 1's push completes the round; its pull follows at once.
  ASSERT_TRUE(push_part(1, chunks.size(), 21).ok());
  OutMessage pull(wire::Kind::PULL, kJob, rank, 1, 22);
  pull.header().setDtype(wire::DType::FLOAT32);
  ASSERT_TRUE((*raw)->send(pull.finish(), Deadline::after(10)).ok());

  ack = reply("the acknowledgement of the last part");
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->header().getKind(), wire::Kind::PUSH_ACK) << "the push's answer comes before the pull's";
  EXPECT_EQ(ack->header().getRequestId(), 21u);
  std::vector<float> weights(w0.size(), -1.0f);
  size_t received = 0;
  while (received < chunks.size()) {
    auto part = reply("the weights");
    ASSERT_TRUE(part);
    ASSERT_EQ(part->header().getKind(), wire::Kind::PULL_REPLY);
    EXPECT_EQ(part->header().getRequestId(), 22u);
    EXPECT_EQ(part->header().getStep(), 1);
    for (size_t i = 0; i < part->chunks(); ++i, ++received) {
      ASSERT_LT(received, chunks.size());
      const Chunk& c = chunks[received];
      ASSERT_TRUE(part->key(i) == c.key);
      std::copy_n(part->chunk_data(i), c.length, weights.begin() + c.begin);
    }
  }
  const std::vector<float> want = testing::one_step(s.job(), s.table(), w0, g, {10, 10});
  EXPECT_EQ(weights, want);

  std::vector<float> pulled(w0.size());
  ASSERT_TRUE(c0->pull(1, pulled.data()).ok());
  EXPECT_EQ(pulled, want);
  ASSERT_TRUE(c0->shutdown().ok());
  OutMessage bye(wire::Kind::SHUTDOWN, kJob, rank, 0, 23);
  ASSERT_TRUE((*raw)->send(bye.finish(), Deadline::after(10)).ok());
  const Status served = s.join();
  EXPECT_TRUE(served.ok()) << served.to_string();
  EXPECT_EQ(s.server().rejected(), 0);
}

// A peer that floods the server with bad messages and never reads the
// Error replies: once its queue is full the server drops them, and the
// round of the real workers goes on (it used to spin on that one peer
// forever, ignoring its deadline).
TEST(ShardServerTest, APeerThatDoesNotReadItsErrorsHoldsUpNobody) {
  const std::vector<float> w0 = initial_weights(4);
  ServedShard s("flood-test", w0, 256, 30.0);
  auto flood = Dealer::connect(s.context(), s.endpoint(), "server 0");
  ASSERT_TRUE(flood.ok());
  (*flood)->socket().set(zmq::sockopt::rcvhwm, 1);
  constexpr int kBad = 3000;  // well past the pipe's high-water marks
  int sent = 0;
  for (int i = 0; i < kBad; ++i) {
    Frames junk;
    junk.emplace_back("junk", 4);
    if ((*flood)->send(std::move(junk), Deadline::after(5)).ok()) ++sent;
  }
  EXPECT_EQ(sent, kBad);
  // The server gets through all of them (it used to stop at the first reply
  // that found the queue full).
  testing::poll_until(20, [&] { return s.server().rejected() >= kBad; });
  EXPECT_EQ(s.server().rejected(), kBad);
  expect_one_round(s, w0, std::vector<float>(w0.size(), 0.02f), 10);
  EXPECT_EQ(s.server().rejected(), kBad);
}

// Once a worker's rank has been heard from this process, another process
// (here a raw socket with a routing id of its own) cannot speak in its
// name: a forged push, pull and shutdown are dropped without an answer and
// counted, and the round of the real workers ends with their gradients only
// (without the binding the forged push was applied and the real one refused).
TEST(ShardServerTest, AnotherProcessCannotSpeakForABoundWorker) {
  const std::vector<float> w0 = initial_weights(5);
  ServedShard s("spoof-test", w0, 256, 30.0);
  {
    auto own = Dealer::connect(s.context(), s.endpoint(), "server 0");
    ASSERT_TRUE(own.ok());
    for (int w = 0; w < 2; ++w) {
      OutMessage beat(wire::Kind::HEARTBEAT, kJob, ServedShard::kLayout.worker_rank(w), 0, 1);
      ASSERT_TRUE((*own)->send(beat.finish(), Deadline::after(10)).ok());
    }
    // Both heard (and the ranks bound) before this socket closes.
    testing::poll_until(20, [&] { return s.server().received() >= 2; });
    ASSERT_EQ(s.server().received(), 2);
  }
  zmq::socket_t impostor(s.context(), zmq::socket_type::dealer);
  impostor.set(zmq::sockopt::linger, 0);
  impostor.set(zmq::sockopt::routing_id, std::string("impostor-process-id0"));
  impostor.connect(s.endpoint());
  const std::vector<float> huge(w0.size(), 1000.0f);
  std::vector<Frames> forged;
  {
    OutMessage push(wire::Kind::PUSH, kJob, ServedShard::kLayout.worker_rank(0), 0, 7);
    push.header().initPush().setTokens(10);
    for (const Chunk& c : s.plan().chunks()) push.add_chunk(c.key, huge.data() + c.begin, c.length, nullptr);
    forged.push_back(push.finish());
    OutMessage pull(wire::Kind::PULL, kJob, ServedShard::kLayout.worker_rank(1), 1, 8);
    forged.push_back(pull.finish());
    OutMessage bye(wire::Kind::SHUTDOWN, kJob, ServedShard::kLayout.worker_rank(1), 0, 9);
    forged.push_back(bye.finish());
  }
  for (Frames& f : forged)
    for (size_t i = 0; i < f.size(); ++i)
      ASSERT_TRUE(impostor.send(f[i], i + 1 < f.size() ? zmq::send_flags::sndmore : zmq::send_flags::none));
  testing::poll_until(20, [&] { return s.server().rejected() >= 3; });
  EXPECT_EQ(s.server().rejected(), 3);
  zmq::pollitem_t item{impostor.handle(), 0, ZMQ_POLLIN, 0};
  EXPECT_EQ(zmq::poll(&item, 1, std::chrono::milliseconds(500)), 0) << "a spoofed message gets no answer";
  expect_one_round(s, w0, std::vector<float>(w0.size(), 0.02f), 10);
  EXPECT_EQ(s.server().rejected(), 3);
}

// A worker that pushes, asks for the next weights and dies before they
// come: the server's parts to it fail, and the server must carry on (not
// stop naming nobody); the next round then ends at the deadline naming that
// worker, while the live worker got the step it was owed.
TEST(ShardServerTest, AWorkerThatDiesWaitingForWeightsIsNamedByTheNextRound) {
  const std::vector<float> w0(initial_weights(0).size(), 0.5f);
  ServedShard s("gone-worker-test", w0, 128, 1.0, /*stream_bytes=*/4);
  const std::vector<float> g(w0.size(), 0.01f);
  {
    auto doomed = s.client(1, 5.0);
    ASSERT_TRUE(doomed->push(0, 10, 0.0, g.data()).ok());
    // Its pull request, by hand: the client would wait for the answer.
    auto raw = Dealer::connect(s.context(), s.endpoint(), "server 0");
    ASSERT_TRUE(raw.ok());
    OutMessage pull(wire::Kind::PULL, kJob, ServedShard::kLayout.worker_rank(1), 1, 99);
    ASSERT_TRUE((*raw)->send(pull.finish(), Deadline::after(5)).ok());
    await_waiting_pulls(s.server(), 1);
    ASSERT_EQ(s.server().waiting_pulls(), 1);
  }  // worker 1's sockets close: it has gone
  auto live = s.client(0, 5.0);
  std::vector<float> weights(w0.size());
  ASSERT_TRUE(live->push(0, 10, 0.0, g.data()).ok());
  auto step1 = live->pull(1, weights.data());
  ASSERT_TRUE(step1.ok()) << step1.status().to_string();
  EXPECT_EQ(step1->version, 1);
  ASSERT_TRUE(live->push(1, 10, 0.0, g.data()).ok());
  auto step2 = live->pull(2, weights.data());
  const Status served = s.join();
  ASSERT_FALSE(served.ok());
  EXPECT_NE(served.message().find("worker 1 (rank"), std::string::npos) << served.message();
  ASSERT_FALSE(step2.ok());
  EXPECT_NE(step2.status().message().find("worker 1 (rank"), std::string::npos) << step2.status().message();
}

// A worker that never pushes: the server gives up at its deadline naming
// that worker, and the worker waiting for weights gets that verdict from the
// server, naming the missing worker.
TEST(ShardServerTest, AMissingWorkerEndsTheRoundAtTheDeadline) {
  const std::vector<float> w0(initial_weights(0).size(), 0.5f);
  ServedShard s("missing-worker-test", w0, 4096, 0.5);
  auto c = s.client(0, 1.0);
  const std::vector<float> g(w0.size(), 0.01f);
  ASSERT_TRUE(c->push(0, 10, 0.0, g.data()).ok());
  std::vector<float> weights(w0.size());
  auto pulled = c->pull(1, weights.data());
  const Status served = s.join();
  ASSERT_FALSE(served.ok());
  EXPECT_EQ(served.code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(served.message().find("pushes of step 0 from worker 1 (rank 3)"), std::string::npos) << served.message();
  ASSERT_FALSE(pulled.ok());
  EXPECT_NE(pulled.status().message().find("server 0"), std::string::npos) << pulled.status().message();
  EXPECT_NE(pulled.status().message().find("weights of version 1"), std::string::npos) << pulled.status().message();
  // The server's verdict reaches the waiting worker: it names the missing one.
  EXPECT_NE(pulled.status().message().find("worker 1 (rank 3)"), std::string::npos) << pulled.status().message();
}

struct AsyncCase {
  Consistency mode;
  int64_t staleness;
  // inproc: the server copies each push (a frame is the worker's buffer);
  // tcp: it reads the received frames where they lie.
  const char* transport;
};

class AsyncTest : public ::testing::TestWithParam<AsyncCase> {};

TEST_P(AsyncTest, StalenessBoundHoldsAndTheLossFalls) {
  const AsyncCase c = GetParam();
  const int S = 2, W = 3, kRounds = 12;
  JobConfig job = testing::tiny_job();
  job.optim.lr = 3e-3;
  job.schedule.kind = ScheduleKind::kConstant;  // every push is an update: 36 of them
  auto cpu = make_cpu_backend(1);
  Transformer ref(job.model, 12, 12, cpu.get());
  ref.init_weights(11);
  std::vector<float> w0(ref.num_params());
  ref.get_weights(w0.data());
  std::vector<Batch> batches;
  for (int w = 0; w < W; ++w) batches.push_back(testing::make_batch(kShards[w].first, kShards[w].second));
  auto mean_loss = [&](const std::vector<float>& weights) {
    ref.set_weights(weights.data());
    double loss = 0;
    int64_t tokens = 0;
    for (const Batch& b : batches) {
      loss += ref.forward(b, ForwardOptions{}).loss_sum;
      tokens += b.tokens();
    }
    return loss / static_cast<double>(tokens);
  };

  zmq::context_t ctx;
  auto plan = ShardPlan::make(ref.table().numels(), S, 256);
  ASSERT_TRUE(plan.ok());
  const JobLayout layout{S, W};
  SingleServerReducer unused;
  std::vector<std::unique_ptr<ShardServer>> servers;
  std::vector<std::string> endpoints;
  for (int k = 0; k < S; ++k) {
    auto router = Router::bind(ctx, std::string(c.transport) == "tcp" ? std::string("tcp://127.0.0.1:0")
                                                                      : fmt::format("inproc://async-test-{}", k));
    ASSERT_TRUE(router.ok());
    endpoints.push_back((*router)->endpoint());
    servers.push_back(std::make_unique<ShardServer>(job, ref.table(), *plan, w0.data(), &unused, std::move(*router),
                                                    ShardServerOptions{kJob, k, layout, 30.0, c.mode, c.staleness}));
  }
  std::vector<Status> status(S + W);
  std::vector<std::thread> threads;
  for (int k = 0; k < S; ++k) threads.emplace_back([&, k] { status[k] = servers[k]->serve(); });
  std::vector<float> final_weights(w0.size());
  for (int w = 0; w < W; ++w) {
    threads.emplace_back([&, w] {
      auto be = make_cpu_backend(1);
      Transformer model(job.model, 12, 12, be.get());
      auto client = RemoteParameterClient::connect(ctx, *plan, endpoints, RemoteClientOptions{kJob, w, layout, 30.0});
      if (!client.ok()) {
        status[S + w] = client.status();
        return;
      }
      std::vector<float> weights(w0.size());
      auto run = [&]() -> Status {
        PST_ASSIGN_OR_RETURN(StepReport info, (*client)->pull(0, weights.data()));
        for (int round = 0; round < kRounds; ++round) {
          if (w == W - 1) std::this_thread::sleep_for(std::chrono::milliseconds(15));  // the slow worker
          model.set_weights(weights.data());
          std::vector<float> g = testing::gradient(model, batches[static_cast<size_t>(w)]);
          bool bad = false;
          const double coef = clip_coefficient(std::sqrt(sum_squares(g.data(), static_cast<int64_t>(g.size()), &bad)),
                                               job.optim.clip_norm);
          for (float& x : g) x *= static_cast<float>(coef);
          PST_RETURN_IF_ERROR((*client)->push(info.version, batches[static_cast<size_t>(w)].tokens(), 0.0, g.data()));
          PST_ASSIGN_OR_RETURN(info, (*client)->pull(info.version + 1, weights.data()));
        }
        return (*client)->shutdown();
      };
      status[S + w] = run();
      if (w == W - 1) final_weights = weights;
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < status.size(); ++i) ASSERT_TRUE(status[i].ok()) << i << ": " << status[i].to_string();
  for (int k = 0; k < S; ++k) {
    EXPECT_EQ(servers[k]->version(), W * kRounds) << "every push is an update";
    if (c.mode == Consistency::kSsp) {
      EXPECT_LE(servers[k]->max_clock_lead(), c.staleness) << "server " << k;
    } else {
      // Without a bound the fast workers finish while the slow one is at its start.
      EXPECT_GT(servers[k]->max_clock_lead(), 2) << "server " << k;
    }
  }
  const double before = mean_loss(w0), after = mean_loss(final_weights);
  EXPECT_LT(after, 0.7 * before) << "loss " << before << " -> " << after;
}

INSTANTIATE_TEST_SUITE_P(Modes, AsyncTest,
                         ::testing::Values(AsyncCase{Consistency::kAsp, 0, "inproc"},
                                           AsyncCase{Consistency::kAsp, 0, "tcp"},
                                           AsyncCase{Consistency::kSsp, 1, "tcp"},
                                           AsyncCase{Consistency::kSsp, 2, "inproc"}),
                         [](const ::testing::TestParamInfo<AsyncCase>& p) {
                           return fmt::format("{}{}_{}", to_string(p.param.mode), p.param.staleness, p.param.transport);
                         });

}  // namespace
}  // namespace pst
