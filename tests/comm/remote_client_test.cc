// RemoteParameterClient against a server played by hand over real ZeroMQ
// (a Router on TCP loopback), so the test decides when each answer goes:
//  - a push and the pull after it cost one round trip: the pull reaches the
//    server while the push is still unacknowledged, and the client takes
//    the acknowledgements that come before the weights;
//  - a push the server refuses is reported by that pull, naming the push,
//    not the weights it asked for;
//  - acknowledgements no pull took are waited for by the next push;
//  - a push to a server that is gone ends when the job re-forms.
#include "comm/remote_client.h"

#include <chrono>
#include <future>
#include <numeric>
#include <thread>
#include <vector>

#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "comm/message.h"
#include "comm/step_report.h"

namespace pst {
namespace {

constexpr uint64_t kJob = 0x5e7;
constexpr JobLayout kLayout{1, 1};

class HandPlayedServer : public ::testing::Test {
 protected:
  void SetUp() override {
    auto plan = ShardPlan::make({300, 200}, 1, 256);  // several chunks, one server
    ASSERT_TRUE(plan.ok()) << plan.status().to_string();
    plan_ = std::make_unique<ShardPlan>(std::move(*plan));
    auto r = Router::bind(ctx_, "tcp://127.0.0.1:0");
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    router_ = std::move(*r);
    auto c = RemoteParameterClient::connect(ctx_, *plan_, {router_->endpoint()},
                                            RemoteClientOptions{kJob, 0, kLayout, /*timeout_s=*/30});
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    client_ = std::move(*c);
  }

  // The next message the server gets, parsed and checked as a server would.
  std::unique_ptr<InMessage> next(zmq::message_t* route) {
    auto got = router_->receive(Deadline::after(30), "the worker's next message");
    EXPECT_TRUE(got.ok()) << got.status().to_string();
    if (!got.ok()) return nullptr;
    if (route) route->copy(got->route);
    Rejection why;
    auto m = InMessage::parse(std::move(got->frames), &why);
    EXPECT_TRUE(m != nullptr) << why.message;
    return m;
  }
  void ack(const zmq::message_t& route, const InMessage& push) {
    OutMessage a(wire::Kind::PUSH_ACK, kJob, kLayout.server_rank(0), push.header().getStep(),
                 push.header().getRequestId());
    a.header().initStepInfo();
    ASSERT_TRUE(router_->send(route, a.finish(), Deadline::after(30)).ok());
  }
  // Weights of `version`, every value `value`, in one part.
  void answer(const zmq::message_t& route, const InMessage& pull, int64_t version, float value) {
    OutMessage reply(wire::Kind::PULL_REPLY, kJob, kLayout.server_rank(0), version, pull.header().getRequestId());
    StepReport info;
    info.version = version;
    info.applied = true;
    to_wire(info, reply.header().initStepInfo());
    auto weights = std::make_shared<std::vector<float>>(500, value);
    for (const Chunk& c : plan_->chunks()) reply.add_chunk(c.key, weights->data() + c.begin, c.length, weights);
    ASSERT_TRUE(router_->send(route, reply.finish(), Deadline::after(30)).ok());
  }

  zmq::context_t ctx_;
  std::unique_ptr<ShardPlan> plan_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<RemoteParameterClient> client_;
  std::vector<float> grads_ = std::vector<float>(500, 0.25f);
  std::vector<float> weights_ = std::vector<float>(500, 0.0f);
};

TEST_F(HandPlayedServer, ThePullGoesOutBeforeThePushIsAcknowledged) {
  auto worker = std::async(std::launch::async, [&]() -> Result<StepReport> {
    PST_RETURN_IF_ERROR(client_->push(0, 10, 1.0, grads_.data()));
    return client_->pull(1, weights_.data());
  });
  zmq::message_t route;
  auto push = next(&route);
  ASSERT_TRUE(push);
  ASSERT_EQ(push->header().getKind(), wire::Kind::PUSH);
  ASSERT_EQ(push->chunks(), plan_->chunks().size());  // push() sends it whole
  // No acknowledgement yet, and the pull is here all the same.
  auto pull = next(nullptr);
  ASSERT_TRUE(pull);
  ASSERT_EQ(pull->header().getKind(), wire::Kind::PULL);
  EXPECT_EQ(pull->header().getStep(), 1);
  ack(route, *push);
  answer(route, *pull, 1, 0.5f);
  auto got = worker.get();
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(got->version, 1);
  for (float w : weights_) ASSERT_EQ(w, 0.5f);
}

TEST_F(HandPlayedServer, ARefusedPushIsTheErrorOfThePullAndNamesThePush) {
  auto worker = std::async(std::launch::async, [&]() -> Result<StepReport> {
    PST_RETURN_IF_ERROR(client_->push(3, 10, 1.0, grads_.data()));
    return client_->pull(4, weights_.data());
  });
  zmq::message_t route;
  auto push = next(&route);
  ASSERT_TRUE(push);
  const Rejection why{wire::ErrorCode::BAD_STEP, "push of step 3 from worker 0; server 0 takes step 2"};
  ASSERT_TRUE(
      router_->send(route, error_reply(why, kJob, kLayout.server_rank(0), push.get()), Deadline::after(30)).ok());
  auto pull = next(nullptr);
  ASSERT_TRUE(pull);
  auto got = worker.get();
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("rejected the push of step 3"), std::string::npos) << got.status().message();
  EXPECT_NE(got.status().message().find("server 0 takes step 2"), std::string::npos) << got.status().message();
}

// Without a pull between them, the second push waits for the first one's
// acknowledgement: its refusal is that push's error, and nothing of the
// second push goes out before it.
TEST_F(HandPlayedServer, ANextPushTakesTheAcknowledgementsNoPullTook) {
  auto worker = std::async(std::launch::async, [&]() -> Status {
    PST_RETURN_IF_ERROR(client_->push(0, 10, 1.0, grads_.data()));
    return client_->push(1, 10, 1.0, grads_.data());
  });
  zmq::message_t route;
  auto push = next(&route);
  ASSERT_TRUE(push);
  EXPECT_FALSE(router_->receive(Deadline::after(0.3), "a second push").ok());  // held until the first is answered
  const Rejection why{wire::ErrorCode::BAD_STEP, "second push of step 0 from worker 0"};
  ASSERT_TRUE(
      router_->send(route, error_reply(why, kJob, kLayout.server_rank(0), push.get()), Deadline::after(30)).ok());
  const Status st = worker.get();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("second push of step 0"), std::string::npos) << st.message();
}

// A server killed while a push is on its way never takes the push's frames
// (here: an endpoint nobody listens on, an ipc path in a folder that does
// not exist, so ZeroMQ keeps them queued). When the job re-forms meanwhile
// (the client's interrupt), the push is abandoned with the re-form's error,
// so the worker can register again; it used to wait out timeout_s (60 s
// here) and fail on its own. (The push is 200 KB: a small one is sent as a
// copy, which frees the gradient at once.)
TEST(RemoteClientTest, APushToALostServerEndsWhenTheJobReforms) {
  zmq::context_t ctx(1);
  auto plan = ShardPlan::make({30000, 20000}, 1, 64 << 10);
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  const std::string endpoint = fmt::format("ipc:///tmp/pst-no-such-folder-{}/server.sock", getpid());
  Interrupt reform;
  RemoteClientOptions options{kJob, 0, kLayout, /*timeout_s=*/60};
  options.interrupt = &reform;
  auto c = RemoteParameterClient::connect(ctx, *plan, {endpoint}, options);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  std::vector<float> grads(50000, 0.5f);
  auto raise = std::async(std::launch::async, [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    reform.raise(aborted("the job re-forms: server 0 was lost"));
  });
  const Status st = (*c)->push(0, 10, 1.0, grads.data());
  raise.get();
  EXPECT_EQ(st.code(), StatusCode::kAborted) << st.to_string();
  EXPECT_NE(st.message().find("re-forms"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace pst
