// Sockets over real ZeroMQ transports (inproc, ipc, tcp on loopback): a Push
// with a 16 MiB chunk goes out and its reply comes back through the Router,
// tensor bytes intact; waits end at their deadline with an error naming the
// peer and what was waited for; a reply to a peer that is gone is an error,
// not a silent drop; binding a taken port names the endpoint.
#include "comm/socket.h"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>

#include <numeric>
#include <thread>

#include <gtest/gtest.h>

#include "comm/message.h"
#include "tests/test_util.h"

namespace pst {
namespace {

constexpr uint64_t kJob = 77;

class SocketTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::string endpoint() {
    const std::string kind = GetParam();
    if (kind == "inproc") return "inproc://socket-test";
    if (kind == "ipc") return "ipc://" + dir_.file("router.sock");
    return "tcp://127.0.0.1:0";
  }
  zmq::context_t ctx_;
  testing::TempDir dir_;
};

TEST_P(SocketTest, PushAndReplyRoundTrip) {
  auto router = Router::bind(ctx_, endpoint());
  ASSERT_TRUE(router.ok()) << router.status().to_string();
  if (GetParam() == "tcp") {
    EXPECT_NE((*router)->endpoint(), "tcp://127.0.0.1:0") << "the chosen port is reported";
  }
  auto dealer = Dealer::connect(ctx_, (*router)->endpoint(), "server 0");
  ASSERT_TRUE(dealer.ok()) << dealer.status().to_string();

  const int64_t floats = int64_t{4} << 20;  // 16 MiB
  auto grads = std::make_shared<std::vector<float>>(static_cast<size_t>(floats));
  std::iota(grads->begin(), grads->end(), 0.0f);
  auto plan = ShardPlan::make({floats}, 1, floats * 4);
  ASSERT_TRUE(plan.ok());
  OutMessage push(wire::Kind::PUSH, kJob, 1, 3, 9);
  push.header().initPush().setTokens(5);
  push.add_chunk({0, 0}, grads->data(), floats, grads);
  ASSERT_TRUE((*dealer)->send(push.finish(), Deadline::after(30)).ok());

  auto got = (*router)->receive(Deadline::after(30), "a push");
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  Rejection why;
  auto in = InMessage::parse(std::move(got->frames), &why);
  ASSERT_TRUE(in) << why.message;
  ASSERT_TRUE(validate(*in, Expectation{kJob, 2, &*plan, 0}, &why)) << why.message;
  ASSERT_EQ(in->chunk_floats(0), floats);
  EXPECT_EQ(std::memcmp(in->chunk_data(0), grads->data(), static_cast<size_t>(floats) * 4), 0);

  OutMessage ack(wire::Kind::PUSH_ACK, kJob, 0, 3, 9);
  ack.header().initStepInfo().setApplied(true);
  ASSERT_TRUE((*router)->send(got->route, ack.finish(), Deadline::after(30)).ok());
  auto reply = (*dealer)->receive(Deadline::after(30), "the push ack");
  ASSERT_TRUE(reply.ok()) << reply.status().to_string();
  auto back = InMessage::parse(std::move(*reply), &why);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->header().getKind(), wire::Kind::PUSH_ACK);
  EXPECT_EQ(back->header().getRequestId(), 9u);
}

TEST_P(SocketTest, WaitsEndAtTheDeadlineNamingThePeer) {
  auto router = Router::bind(ctx_, endpoint());
  ASSERT_TRUE(router.ok());
  auto dealer = Dealer::connect(ctx_, (*router)->endpoint(), "server 1 (test)");
  ASSERT_TRUE(dealer.ok());
  auto r = (*dealer)->receive(Deadline::after(0.2), "weights of step 4");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(r.status().message().find("server 1 (test)"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("weights of step 4"), std::string::npos) << r.status().message();
  auto q = (*router)->receive(Deadline::after(0.1), "pushes of step 4");
  ASSERT_FALSE(q.ok());
  EXPECT_NE(q.status().message().find("pushes of step 4"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Transports, SocketTest, ::testing::Values("inproc", "ipc", "tcp"));

TEST(SocketErrorsTest, ReplyToAGonePeerIsAnError) {
  zmq::context_t ctx;
  auto router = Router::bind(ctx, "tcp://127.0.0.1:0");
  ASSERT_TRUE(router.ok());
  zmq::message_t route;
  {
    auto dealer = Dealer::connect(ctx, (*router)->endpoint(), "worker 0");
    ASSERT_TRUE(dealer.ok());
    OutMessage hb(wire::Kind::HEARTBEAT, kJob, 0, 0, 1);
    ASSERT_TRUE((*dealer)->send(hb.finish(), Deadline::after(10)).ok());
    auto got = (*router)->receive(Deadline::after(10), "a heartbeat");
    ASSERT_TRUE(got.ok());
    route = std::move(got->route);
  }  // the dealer closes
  Status s;
  for (int i = 0; i < 200 && s.ok(); ++i) {  // the disconnect reaches the router asynchronously
    OutMessage ack(wire::Kind::PUSH_ACK, kJob, 0, 0, 1);
    ack.header().initStepInfo();
    s = (*router)->send(route, ack.finish(), Deadline::after(1));
    if (s.ok()) ::usleep(10000);
  }
  ASSERT_FALSE(s.ok()) << "a reply to a closed peer was accepted for 2 s";
  EXPECT_NE(s.message().find("not connected"), std::string::npos) << s.message();
}

TEST(SocketErrorsTest, BindingATakenPortNamesTheEndpoint) {
  zmq::context_t ctx;
  auto first = Router::bind(ctx, "tcp://127.0.0.1:0");
  ASSERT_TRUE(first.ok());
  int error = 0;
  auto second = Router::bind(ctx, (*first)->endpoint(), -1, &error);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(error, EADDRINUSE);  // what cluster.port_range moves on by
  EXPECT_NE(second.status().message().find((*first)->endpoint()), std::string::npos) << second.status().message();
  auto bad = Router::bind(ctx, "carrier-pigeon://nowhere");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("carrier-pigeon://nowhere"), std::string::npos);
}

// A Unix socket's path longer than sockaddr_un holds (a scheduler at
// ipc://DIR/NAME under a deep directory): the error says how long one may be.
TEST(SocketErrorsTest, AnIpcPathTooLongSaysTheLimit) {
  zmq::context_t ctx;
  const std::string endpoint = "ipc:///tmp/" + std::string(150, 'x') + "/s.sock";
  auto r = Router::bind(ctx, endpoint);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("holds at most 107 bytes; this one has 162"), std::string::npos)
      << r.status().message();
  auto d = Dealer::connect(ctx, endpoint, "the scheduler");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("the scheduler"), std::string::npos) << d.status().message();
  EXPECT_NE(d.status().message().find("holds at most 107 bytes"), std::string::npos) << d.status().message();
}

}  // namespace
}  // namespace pst

namespace pst {
namespace {

// A peer that stops reading: once its queue is full, a send to it fails at
// the deadline, naming the cause, while a send to a peer that reads still
// goes through at once (a ROUTER polls writable while any peer has room,
// and the send used to spin on that forever).
TEST(SocketErrorsTest, APeerThatDoesNotReadFailsAtTheDeadlineAndBlocksNobody) {
  zmq::context_t ctx;
  auto router = Router::bind(ctx, "inproc://not-reading");
  ASSERT_TRUE(router.ok());
  auto idle = Dealer::connect(ctx, "inproc://not-reading", "router");
  auto reader = Dealer::connect(ctx, "inproc://not-reading", "router");
  ASSERT_TRUE(idle.ok() && reader.ok());
  (*idle)->socket().set(zmq::sockopt::rcvhwm, 1);
  auto hello = [](Dealer& d) {
    Frames f;
    f.emplace_back("hi", 2);
    return d.send(std::move(f), Deadline::after(5));
  };
  ASSERT_TRUE(hello(**idle).ok());
  ASSERT_TRUE(hello(**reader).ok());
  auto a = (*router)->receive(Deadline::after(5), "hello");
  auto b = (*router)->receive(Deadline::after(5), "hello");
  ASSERT_TRUE(a.ok() && b.ok());
  // Which route is whose: answer one and see who gets it.
  Frames ping;
  ping.emplace_back("ping", 4);
  ASSERT_TRUE((*router)->send(a->route, std::move(ping), Deadline::after(5)).ok());
  const bool a_is_reader = (*reader)->receive(Deadline::after(1), "ping").ok();
  const zmq::message_t& idle_route = a_is_reader ? b->route : a->route;
  const zmq::message_t& reader_route = a_is_reader ? a->route : b->route;
  if (!a_is_reader) {
    ASSERT_TRUE((*idle)->receive(Deadline::after(1), "ping").ok());
  }

  Status s;
  int sent = 0;
  while (s.ok() && sent < 100000) {
    Frames f;
    f.emplace_back("x", 1);
    s = (*router)->send(idle_route, std::move(f), Deadline::after(0.2));
    if (s.ok()) ++sent;
  }
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.to_string();
  EXPECT_NE(s.message().find("not reading"), std::string::npos) << s.message();
  EXPECT_LT(sent, 100000) << "the queue never filled";
  Frames f;
  f.emplace_back("y", 1);
  EXPECT_TRUE((*router)->send(reader_route, std::move(f), Deadline::after(0)).ok());
  EXPECT_TRUE((*reader)->receive(Deadline::after(1), "y").ok());
}

// A Dealer that watches an Interrupt: a receive waiting on a peer that never
// answers, and a send to a peer that never reads, end with the Interrupt's
// Status once another thread raises it (long before their 60 s deadlines);
// its later calls end the same way at once; an unwatched Dealer waits on.
TEST(SocketErrorsTest, AnInterruptEndsADealersWaits) {
  zmq::context_t ctx;
  auto router = Router::bind(ctx, "inproc://interrupted");
  ASSERT_TRUE(router.ok());
  auto watched = Dealer::connect(ctx, "inproc://interrupted", "server 0");
  auto sender = Dealer::connect(ctx, "inproc://interrupted", "server 0");
  ASSERT_TRUE(watched.ok() && sender.ok());
  Interrupt interrupt;
  EXPECT_TRUE(interrupt.why().ok());
  (*watched)->watch(&interrupt);
  (*sender)->watch(&interrupt);
  (*sender)->socket().set(zmq::sockopt::sndhwm, 1);
  std::thread raiser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    interrupt.raise(aborted("the job re-forms"));
    interrupt.raise(aborted("a second reason is not kept"));
  });
  auto got = (*watched)->receive(Deadline::after(60), "weights");
  EXPECT_EQ(got.status().code(), StatusCode::kAborted) << got.status().to_string();
  EXPECT_EQ(got.status().message(), "the job re-forms");
  // The router reads nothing: sends fill the queue, then wait, then end.
  Status sent;
  for (int i = 0; i < 100000 && sent.ok(); ++i) {
    Frames f;
    f.emplace_back("x", 1);
    sent = (*sender)->send(std::move(f), Deadline::after(60));
  }
  raiser.join();
  EXPECT_EQ(sent.code(), StatusCode::kAborted) << sent.to_string();
  Frames f;
  f.emplace_back("y", 1);
  EXPECT_EQ((*watched)->send(std::move(f), Deadline::after(60)).code(), StatusCode::kAborted);
  auto plain = Dealer::connect(ctx, "inproc://interrupted", "server 0");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ((*plain)->receive(Deadline::after(0.2), "weights").status().code(), StatusCode::kDeadlineExceeded);
}

TEST(DeadlineTest, HugeWaitsDoNotOverflow) {
  for (double s : {9.3e9, 1e19, 1e300}) {
    const Deadline d = Deadline::after(s);
    EXPECT_FALSE(d.expired()) << s;
    EXPECT_GT(d.remaining_ms(), 1000000) << s;
  }
  EXPECT_TRUE(Deadline::after(-5).expired());
}

}  // namespace
}  // namespace pst

namespace pst {
namespace {

// A frame over the Router's limit never reaches the application (ZeroMQ drops
// the sender's connection while decoding), and other peers go on.
TEST(SocketErrorsTest, FramesOverTheLimitAreDroppedBeforeTheyAreBuffered) {
  zmq::context_t ctx;
  auto router = Router::bind(ctx, "tcp://127.0.0.1:0", max_frame_bytes(4096));
  ASSERT_TRUE(router.ok()) << router.status().to_string();
  auto big = Dealer::connect(ctx, (*router)->endpoint(), "router");
  auto small = Dealer::connect(ctx, (*router)->endpoint(), "router");
  ASSERT_TRUE(big.ok() && small.ok());
  Frames huge;
  huge.emplace_back(static_cast<size_t>(max_frame_bytes(4096)) + 1);
  ASSERT_TRUE((*big)->send(std::move(huge), Deadline::after(5)).ok());
  Frames ok;
  ok.emplace_back(static_cast<size_t>(max_frame_bytes(4096)));
  ASSERT_TRUE((*small)->send(std::move(ok), Deadline::after(5)).ok());
  auto got = (*router)->receive(Deadline::after(10), "the frame within the limit");
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  ASSERT_EQ(got->frames.size(), 1u);
  EXPECT_EQ(got->frames[0].size(), static_cast<size_t>(max_frame_bytes(4096)));
  EXPECT_FALSE((*router)->receive(Deadline::after(1), "nothing more").ok()) << "the oversized frame came through";
}

}  // namespace
}  // namespace pst

namespace pst {
namespace {

std::atomic<int> g_interrupts{0};
void count_interrupt(int) { ++g_interrupts; }

// A signal that this thread handles (a program that embeds pst may install
// one; pst blocks its own, core/stop.h) interrupts the poll inside a
// receive: the wait goes on to its deadline instead of throwing
// zmq::error_t(EINTR) out of pst (fuzz_scheduler found this one).
TEST(SocketErrorsTest, ASignalDuringAWaitDoesNotEndIt) {
  struct sigaction sa = {}, old = {};
  sa.sa_handler = count_interrupt;
  sa.sa_flags = 0;  // no SA_RESTART: poll returns EINTR
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(::sigaction(SIGUSR2, &sa, &old), 0);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR2);
  ASSERT_EQ(::pthread_sigmask(SIG_UNBLOCK, &set, nullptr), 0);
  zmq::context_t ctx;
  auto router = Router::bind(ctx, "inproc://interrupted");
  ASSERT_TRUE(router.ok());
  auto dealer = Dealer::connect(ctx, "inproc://interrupted", "the router");
  ASSERT_TRUE(dealer.ok());
  const pthread_t waiter = ::pthread_self();
  std::atomic<bool> waiting{true};
  std::thread signaller([&] {
    for (int i = 0; i < 100 && waiting; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (waiting) ::pthread_kill(waiter, SIGUSR2);
    }
  });
  Status got;
  EXPECT_NO_THROW(got = (*dealer)->receive(Deadline::after(3), "nothing").status());
  waiting = false;
  signaller.join();
  EXPECT_EQ(got.code(), StatusCode::kDeadlineExceeded) << got.to_string();
  EXPECT_GT(g_interrupts.load(), 0) << "the signal never came";
  ::sigaction(SIGUSR2, &old, nullptr);
}

}  // namespace
}  // namespace pst
