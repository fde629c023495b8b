// cluster.wire = bf16 over real ZeroMQ sockets (inproc): two servers and two
// workers run BSP rounds with bfloat16 gradients and weights on the wire.
// The oracle is one in-process optimizer fed the workers' gradients rounded
// to bfloat16: the servers' float32 weights (pull_exact) equal it bit for
// bit, and the weights a pull carries are exactly those rounded. A server
// refuses a push or pull in a format its job's wire does not use, and a
// bfloat16 answer takes two bytes a value. With stochastic rounding the
// oracle rounds each value of a worker's gradient by the scalar rule with
// the bits of (seed, step, worker) at its flat offset (core/bf16.h): the
// servers, chunks and parts a value travels in do not change how it is
// rounded.
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "comm/grad_stats.h"
#include "comm/remote_client.h"
#include "comm/shard_plan.h"
#include "ps/shard_server.h"
#include "tests/ps/fixtures.h"

namespace pst {
namespace {

constexpr uint64_t kJob = 0xbf16;

std::vector<float> rounded(const std::vector<float>& x) {
  std::vector<uint16_t> h(x.size());
  to_bf16(x.data(), h.data(), static_cast<int64_t>(x.size()));
  std::vector<float> back(x.size());
  from_bf16(h.data(), back.data(), static_cast<int64_t>(x.size()));
  return back;
}

// x rounded stochastically as worker w rounds its push of step `step`:
// element by element, each with its bits read from its Philox block (not
// the array version the client calls).
std::vector<float> rounded_stochastically(const std::vector<float>& x, uint64_t seed, int64_t step, int w) {
  const Philox bits(seed, stochastic_rounding_stream(step, w));
  std::vector<float> back(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    back[i] = from_bf16(to_bf16_stochastic(x[i], stochastic_rounding_bits(bits, i)));
  return back;
}

class Bf16WireTest : public ::testing::TestWithParam<WireRounding> {};

TEST_P(Bf16WireTest, ServersSumRoundedGradientsIntoFloat32WeightsAndPullsCarryThemRounded) {
  const int S = 2, W = 2, kRounds = 3;
  const bool stochastic = GetParam() == WireRounding::kStochastic;
  constexpr uint64_t kSeed = 31;
  JobConfig job = testing::tiny_job();
  job.optim.clip_norm = 1e6;  // the oracle sums squares in another order: keep clipping out
  job.cluster.wire = WireFormat::kBf16;
  const ParamTable table = build_param_table(job.model, 12, 12);
  const int64_t n = table.total_numel();
  std::vector<float> w0(static_cast<size_t>(n));
  init_params(table, 5, w0.data());
  // Worker w's gradient of round r: random, with a different scale each.
  std::vector<std::vector<std::vector<float>>> grads(W, std::vector<std::vector<float>>(kRounds));
  std::mt19937 rng(21);
  for (int w = 0; w < W; ++w)
    for (int r = 0; r < kRounds; ++r) {
      std::normal_distribution<float> normal(0.0f, 0.01f * static_cast<float>(w + r + 1));
      auto& g = grads[static_cast<size_t>(w)][static_cast<size_t>(r)];
      g.resize(static_cast<size_t>(n));
      for (float& v : g) v = normal(rng);
    }
  const std::vector<int64_t> tokens = {7, 12};

  zmq::context_t ctx;
  auto plan = ShardPlan::make(table.numels(), S, 256);
  ASSERT_TRUE(plan.ok());
  const JobLayout layout{S, W};
  ThreadStatsReducer reducer(S);
  std::vector<std::unique_ptr<ShardServer>> servers;
  std::vector<std::string> endpoints;
  for (int k = 0; k < S; ++k) {
    auto router = Router::bind(ctx, fmt::format("inproc://bf16-wire-{}", k));
    ASSERT_TRUE(router.ok());
    endpoints.push_back((*router)->endpoint());
    ShardServerOptions so = shard_server_options(job, kJob, k, layout);
    EXPECT_TRUE(so.bf16_wire);
    servers.push_back(std::make_unique<ShardServer>(job, table, *plan, w0.data(), &reducer, std::move(*router), so));
  }
  std::vector<Status> status(S + W);
  std::vector<std::vector<std::vector<float>>> pulled(W), exact(W);
  std::vector<std::thread> threads;
  for (int k = 0; k < S; ++k) threads.emplace_back([&, k] { status[static_cast<size_t>(k)] = servers[k]->serve(); });
  for (int w = 0; w < W; ++w)
    threads.emplace_back([&, w] {
      RemoteClientOptions co{kJob, w, layout, 30.0};
      co.bf16_wire = true;
      co.stochastic_rounding = stochastic;
      co.rounding_seed = kSeed;
      auto client = RemoteParameterClient::connect(ctx, *plan, endpoints, co);
      auto run = [&]() -> Status {
        PST_RETURN_IF_ERROR(client.status());
        RemoteParameterClient& c = **client;
        if (!c.lossy_pulls()) return Status(StatusCode::kInternal, "a bf16 client says its pulls are exact");
        std::vector<float> weights(static_cast<size_t>(n));
        for (int r = 0; r < kRounds; ++r) {
          PST_RETURN_IF_ERROR(c.push(r, tokens[static_cast<size_t>(w)], 0.0,
                                     grads[static_cast<size_t>(w)][static_cast<size_t>(r)].data()));
          PST_RETURN_IF_ERROR(c.pull(r + 1, weights.data()).status());
          pulled[static_cast<size_t>(w)].push_back(weights);
          PST_ASSIGN_OR_RETURN(StepReport info, c.pull_exact(r + 1, weights.data()));
          if (info.version != r + 1) return Status(StatusCode::kInternal, "exact pull of another version");
          exact[static_cast<size_t>(w)].push_back(weights);
        }
        return c.shutdown();
      };
      status[static_cast<size_t>(S + w)] = run();
    });
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < status.size(); ++i) ASSERT_TRUE(status[i].ok()) << i << ": " << status[i].to_string();

  // The oracle, fed the gradients as the wire carries them; and the same
  // fed float32 ones, which the bfloat16 job must not match.
  // (With stochastic rounding, the same fed gradients rounded to nearest,
  // which it must not match either.)
  ShardOptimizer ref(job, table, whole_tensors(table), w0.data());
  ShardOptimizer unrounded(job, table, whole_tensors(table), w0.data());
  ShardOptimizer nearest(job, table, whole_tensors(table), w0.data());
  std::vector<float> want(static_cast<size_t>(n)), fp32_job(static_cast<size_t>(n)),
      nearest_job(static_cast<size_t>(n));
  for (int r = 0; r < kRounds; ++r) {
    for (int w = 0; w < W; ++w) {
      const auto& g = grads[static_cast<size_t>(w)][static_cast<size_t>(r)];
      ref.add_push((stochastic ? rounded_stochastically(g, kSeed, r, w) : rounded(g)).data(),
                   tokens[static_cast<size_t>(w)], 0.0);
      unrounded.add_push(g.data(), tokens[static_cast<size_t>(w)], 0.0);
      nearest.add_push(rounded(g).data(), tokens[static_cast<size_t>(w)], 0.0);
    }
    ref.apply(ref.reduce());
    unrounded.apply(unrounded.reduce());
    nearest.apply(nearest.reduce());
    ref.copy_weights(want.data());
    unrounded.copy_weights(fp32_job.data());
    nearest.copy_weights(nearest_job.data());
    for (int w = 0; w < W; ++w) {
      const auto& e = exact[static_cast<size_t>(w)][static_cast<size_t>(r)];
      const auto& p = pulled[static_cast<size_t>(w)][static_cast<size_t>(r)];
      EXPECT_EQ(e, want) << "round " << r << ", worker " << w;
      EXPECT_NE(e, fp32_job) << "round " << r << ": the gradients were not rounded on the wire";
      if (stochastic) {
        EXPECT_NE(e, nearest_job) << "round " << r << ": the gradients were rounded to nearest";
      }
      EXPECT_EQ(p, rounded(want)) << "round " << r << ", worker " << w;
      EXPECT_NE(p, e) << "round " << r << ": the pulled weights were not rounded";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Rounding, Bf16WireTest, ::testing::Values(WireRounding::kNearest, WireRounding::kStochastic),
                         [](const ::testing::TestParamInfo<WireRounding>& p) {
                           return p.param == WireRounding::kNearest ? "Nearest" : "Stochastic";
                         });

// One server of the tiny model for one worker, and a raw socket in that
// worker's name.
class RawPeerTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    job_.cluster.wire = GetParam() ? WireFormat::kBf16 : WireFormat::kFp32;
    table_ = build_param_table(job_.model, 12, 12);
    w0_.resize(static_cast<size_t>(table_.total_numel()));
    init_params(table_, 9, w0_.data());
    plan_ = std::make_unique<ShardPlan>(*ShardPlan::make(table_.numels(), 1, 256));
    auto router = Router::bind(ctx_, "inproc://bf16-raw");
    ASSERT_TRUE(router.ok());
    server_ = std::make_unique<ShardServer>(job_, table_, *plan_, w0_.data(), &reducer_, std::move(*router),
                                            shard_server_options(job_, kJob, 0, kLayout));
    thread_ = std::thread([this] { (void)server_->serve(); });
    auto raw = Dealer::connect(ctx_, "inproc://bf16-raw", "server 0");
    ASSERT_TRUE(raw.ok());
    raw_ = std::move(*raw);
  }
  void TearDown() override {
    OutMessage bye(wire::Kind::SHUTDOWN, kJob, kLayout.worker_rank(0), 0, 99);
    (void)raw_->send(bye.finish(), Deadline::after(10));
    thread_.join();
  }
  std::unique_ptr<InMessage> ask(OutMessage& m) {
    EXPECT_TRUE(raw_->send(m.finish(), Deadline::after(10)).ok());
    auto reply = raw_->receive(Deadline::after(10), "a reply");
    EXPECT_TRUE(reply.ok());
    if (!reply.ok()) return nullptr;
    Rejection why;
    return InMessage::parse(std::move(*reply), &why);
  }
  std::string error_of(const InMessage& m) {
    return m.header().getKind() == wire::Kind::ERROR ? m.header().getError().getMessage().cStr() : "no error";
  }

  static constexpr JobLayout kLayout{1, 1};
  JobConfig job_ = testing::tiny_job();
  ParamTable table_;
  std::vector<float> w0_;
  std::unique_ptr<ShardPlan> plan_;
  zmq::context_t ctx_;
  SingleServerReducer reducer_;
  std::unique_ptr<ShardServer> server_;
  std::thread thread_;
  std::unique_ptr<Dealer> raw_;
};

TEST_P(RawPeerTest, PullsAndPushesInTheJobsWireFormatOnly) {
  const bool bf16 = GetParam();
  // A bfloat16 pull: answered with 2 bytes a value where the wire is bf16.
  OutMessage pull(wire::Kind::PULL, kJob, kLayout.worker_rank(0), 0, 1);
  pull.header().setDtype(wire::DType::BFLOAT16);
  auto reply = ask(pull);
  ASSERT_NE(reply, nullptr);
  if (bf16) {
    ASSERT_EQ(reply->header().getKind(), wire::Kind::PULL_REPLY) << error_of(*reply);
    ASSERT_EQ(reply->chunks(), plan_->chunks().size());
    for (size_t i = 0; i < reply->chunks(); ++i) {
      const Chunk& c = plan_->chunks()[i];
      ASSERT_EQ(reply->frame_bytes(i + 1), static_cast<size_t>(c.length) * 2);
      ASSERT_TRUE(reply->chunk_values(i).bf16);
      const auto* h = static_cast<const uint16_t*>(reply->chunk_values(i).data);
      for (int64_t j = 0; j < c.length; ++j) ASSERT_EQ(h[j], to_bf16(w0_[static_cast<size_t>(c.begin + j)]));
    }
  } else {
    EXPECT_NE(error_of(*reply).find("cluster.wire is fp32"), std::string::npos) << error_of(*reply);
  }
  // A float32 pull is always answered, exactly.
  OutMessage exact(wire::Kind::PULL, kJob, kLayout.worker_rank(0), 0, 2);
  reply = ask(exact);
  ASSERT_NE(reply, nullptr);
  ASSERT_EQ(reply->header().getKind(), wire::Kind::PULL_REPLY) << error_of(*reply);
  for (size_t i = 0; i < reply->chunks(); ++i) {
    const Chunk& c = plan_->chunks()[i];
    ASSERT_FALSE(reply->chunk_values(i).bf16);
    for (int64_t j = 0; j < c.length; ++j) ASSERT_EQ(reply->chunk_data(i)[j], w0_[static_cast<size_t>(c.begin + j)]);
  }
  // A push in the other format is refused, naming the setting.
  const std::vector<float> g(w0_.size(), 0.25f);
  const std::vector<uint16_t> g16(w0_.size(), to_bf16(0.25f));
  OutMessage wrong(wire::Kind::PUSH, kJob, kLayout.worker_rank(0), 0, 3);
  wrong.header().initPush().setTokens(4);
  for (const Chunk& c : plan_->chunks()) {
    if (bf16) {
      wrong.add_chunk(c.key, g.data() + c.begin, c.length, nullptr);
    } else {
      wrong.add_chunk_bf16(c.key, g16.data() + c.begin, c.length, nullptr);
    }
  }
  reply = ask(wrong);
  ASSERT_NE(reply, nullptr);
  const std::string refused = error_of(*reply);
  EXPECT_NE(refused.find(bf16 ? "cluster.wire is bf16" : "cluster.wire is fp32"), std::string::npos) << refused;
  EXPECT_EQ(server_->rejected(), bf16 ? 1 : 2);
  EXPECT_EQ(server_->version(), 0);
}

INSTANTIATE_TEST_SUITE_P(Wire, RawPeerTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) { return p.param ? "bf16" : "fp32"; });

}  // namespace
}  // namespace pst
