// cluster.transport = mpi between real processes: run under mpirun -np 4
// (ctest mpi_transport). Rank 0 is a server (a Router and its MpiGateway),
// ranks 1 and 2 its workers (MpiChannels), rank 3 a rank that is none of
// them. Every rank runs every test; barriers keep them in step.
//  - Multipart messages (an empty frame, 1 MiB of a pattern) reach the
//    Router whole and in order, each worker under a route of its own, and
//    the answers come back whole.
//  - A frame over the size limit and a message from a rank that is no worker
//    are dropped and counted; what follows still arrives.
//  - A receive ends at its deadline, or when its Interrupt is raised, naming
//    the peer and what it waited for.
//  - A worker that does not read: the Router's send to it fails at its
//    deadline once the gateway's bound and the inproc queue are full, while
//    the other worker's round trips go on; once it reads, it gets every
//    message that was accepted, in order.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstring>

#include "comm/mpi_transport.h"
#include "tests/test_util.h"

namespace pst {
namespace {

MPI_Comm transport = MPI_COMM_NULL;
int rank = 0;
constexpr int64_t kMaxFrame = (1 << 20) + 64;

zmq::message_t pattern(size_t bytes, int seed) {
  zmq::message_t m(bytes);
  auto* p = static_cast<unsigned char*>(m.data());
  for (size_t i = 0; i < bytes; ++i) p[i] = static_cast<unsigned char>((i * 31 + static_cast<size_t>(seed)) & 0xff);
  return m;
}

Frames frames_of(std::initializer_list<std::string> texts) {
  Frames f;
  for (const auto& t : texts) f.emplace_back(t.data(), t.size());
  return f;
}

struct Server {
  zmq::context_t ctx;
  std::unique_ptr<Router> router;
  std::unique_ptr<MpiGateway> gateway;
  explicit Server(int64_t max_queued = MpiGateway::kMaxQueuedBytes) {
    auto r = Router::bind(ctx, "tcp://127.0.0.1:0");
    EXPECT_TRUE(r.ok());
    router = std::move(*r);
    auto g = MpiGateway::start(ctx, *router, transport, {1, 2}, kMaxFrame, "test server", max_queued);
    EXPECT_TRUE(g.ok()) << g.status().to_string();
    gateway = std::move(*g);
  }
  ~Server() {
    gateway.reset();  // hands over the Router's last answers first
    router.reset();
  }
};

TEST(MpiTransportTest, MultipartMessagesArriveWholeUnderARouteOfEachWorker) {
  if (rank == 0) {
    Server s;
    MPI_Barrier(MPI_COMM_WORLD);
    std::vector<std::string> routes;
    for (int i = 0; i < 2; ++i) {
      auto m = s.router->receive(Deadline::after(30), "hello");
      ASSERT_TRUE(m.ok()) << m.status().to_string();
      ASSERT_EQ(m->frames.size(), 3u);
      const std::string hello = m->frames[0].to_string();
      ASSERT_EQ(hello.rfind("hello from ", 0), 0u) << hello;
      const int from = std::stoi(hello.substr(11));
      EXPECT_EQ(m->frames[1].size(), 0u);
      EXPECT_TRUE(m->frames[2] == pattern(1 << 20, from));
      routes.push_back(m->route.to_string());
      Frames reply = frames_of({"reply to " + std::to_string(from)});
      reply.push_back(pattern(512 << 10, 100 + from));
      ASSERT_TRUE(s.router->send(m->route, std::move(reply), Deadline::after(30)).ok());
    }
    EXPECT_NE(routes[0], routes[1]);
    MPI_Barrier(MPI_COMM_WORLD);
  } else if (rank <= 2) {
    MpiChannel c(transport, 0, "server 0", kMaxFrame);
    MPI_Barrier(MPI_COMM_WORLD);
    Frames f = frames_of({"hello from " + std::to_string(rank), ""});
    f.push_back(pattern(1 << 20, rank));
    ASSERT_TRUE(c.send(std::move(f), Deadline::after(30)).ok());
    auto reply = c.receive(Deadline::after(30), "the reply");
    ASSERT_TRUE(reply.ok()) << reply.status().to_string();
    ASSERT_EQ(reply->size(), 2u);
    EXPECT_EQ((*reply)[0].to_string(), "reply to " + std::to_string(rank));
    EXPECT_TRUE((*reply)[1] == pattern(512 << 10, 100 + rank));
    MPI_Barrier(MPI_COMM_WORLD);
  } else {
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Barrier(MPI_COMM_WORLD);
  }
}

TEST(MpiTransportTest, OversizeFramesAndStrangersAreDroppedAndCounted) {
  if (rank == 0) {
    Server s;
    MPI_Barrier(MPI_COMM_WORLD);
    auto m = s.router->receive(Deadline::after(30), "the message after the oversize one");
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    ASSERT_EQ(m->frames.size(), 1u);
    EXPECT_EQ(m->frames[0].to_string(), "after");
    testing::poll_until(
        30, [&] { return s.gateway->dropped() >= 2; }, 5);
    EXPECT_EQ(s.gateway->dropped(), 2);
    auto none = s.router->receive(Deadline::after(0.2), "nothing");
    EXPECT_EQ(none.status().code(), StatusCode::kDeadlineExceeded) << "the dropped messages never reach the Router";
    MPI_Barrier(MPI_COMM_WORLD);
  } else if (rank == 1) {
    MpiChannel c(transport, 0, "server 0", kMaxFrame);
    MPI_Barrier(MPI_COMM_WORLD);
    Frames big = frames_of({"oversize"});
    big.push_back(pattern(2 << 20, 1));
    ASSERT_TRUE(c.send(std::move(big), Deadline::after(30)).ok());
    ASSERT_TRUE(c.send(frames_of({"after"}), Deadline::after(30)).ok());
    MPI_Barrier(MPI_COMM_WORLD);
  } else if (rank == 3) {
    MpiChannel c(transport, 0, "server 0", kMaxFrame);
    MPI_Barrier(MPI_COMM_WORLD);
    ASSERT_TRUE(c.send(frames_of({"stranger"}), Deadline::after(30)).ok());
    MPI_Barrier(MPI_COMM_WORLD);
  } else {
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Barrier(MPI_COMM_WORLD);
  }
}

TEST(MpiTransportTest, AReceiveEndsAtItsDeadlineOrInterruptNamingThePeer) {
  if (rank == 1) {
    MpiChannel c(transport, 0, "server 0 (MPI rank 0)", kMaxFrame);
    auto r = c.receive(Deadline::after(0.3), "weights of step 7");
    EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded);
    EXPECT_NE(r.status().message().find("server 0 (MPI rank 0)"), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("weights of step 7"), std::string::npos) << r.status().message();
    Interrupt stop;
    c.watch(&stop);
    stop.raise(aborted("the job re-forms"));
    auto i = c.receive(Deadline::after(30), "weights");
    EXPECT_EQ(i.status().code(), StatusCode::kAborted);
    EXPECT_EQ(c.send(frames_of({"x"}), Deadline::after(30)).code(), StatusCode::kAborted);
    c.close();
    c.watch(nullptr);
    EXPECT_EQ(c.send(frames_of({"x"}), Deadline::after(30)).code(), StatusCode::kFailedPrecondition);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(MpiTransportTest, AWorkerThatDoesNotReadHoldsUpOnlyItsOwnAnswers) {
  constexpr size_t kAnswer = 64 << 10;
  if (rank == 0) {
    Server s(/*max_queued=*/1 << 20);
    MPI_Barrier(MPI_COMM_WORLD);
    auto first = s.router->receive(Deadline::after(30), "rank 2's hello");
    ASSERT_TRUE(first.ok());
    ASSERT_EQ(first->frames[0].to_string(), "hello from 2");
    int sent = 0;
    Status failed;
    while (sent < 20000) {
      Frames answer;
      answer.push_back(pattern(kAnswer, sent));
      failed = s.router->send(first->route, std::move(answer), Deadline::after(0.5));
      if (!failed.ok()) break;
      ++sent;
    }
    EXPECT_EQ(failed.code(), StatusCode::kDeadlineExceeded) << failed.to_string();
    // Fewer than the gateway's bound plus the queues' high-water marks.
    EXPECT_LT(sent, (1 << 20) / static_cast<int>(kAnswer) + 2 * 1000 + 10);
    // Rank 1 is served meanwhile (it pings once told: its ping must not
    // come before rank 2's hello).
    MPI_Send(&sent, 1, MPI_INT, 1, 8, MPI_COMM_WORLD);
    auto ping = s.router->receive(Deadline::after(30), "rank 1's ping");
    ASSERT_TRUE(ping.ok());
    EXPECT_EQ(ping->frames[0].to_string(), "ping");
    ASSERT_TRUE(s.router->send(ping->route, frames_of({"pong"}), Deadline::after(30)).ok());
    MPI_Send(&sent, 1, MPI_INT, 2, 7, MPI_COMM_WORLD);
    MPI_Barrier(MPI_COMM_WORLD);
  } else if (rank == 1) {
    MpiChannel c(transport, 0, "server 0", kMaxFrame);
    MPI_Barrier(MPI_COMM_WORLD);
    int go = 0;
    MPI_Recv(&go, 1, MPI_INT, 0, 8, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    ASSERT_TRUE(c.send(frames_of({"ping"}), Deadline::after(60)).ok());
    auto pong = c.receive(Deadline::after(60), "pong");
    ASSERT_TRUE(pong.ok()) << pong.status().to_string();
    EXPECT_EQ((*pong)[0].to_string(), "pong");
    MPI_Barrier(MPI_COMM_WORLD);
  } else if (rank == 2) {
    MpiChannel c(transport, 0, "server 0", kMaxFrame);
    MPI_Barrier(MPI_COMM_WORLD);
    ASSERT_TRUE(c.send(frames_of({"hello from 2"}), Deadline::after(30)).ok());
    int sent = 0;
    MPI_Recv(&sent, 1, MPI_INT, 0, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    ASSERT_GT(sent, 0);
    for (int i = 0; i < sent; ++i) {
      auto m = c.receive(Deadline::after(30), "answer " + std::to_string(i));
      ASSERT_TRUE(m.ok()) << m.status().to_string();
      ASSERT_TRUE((*m)[0] == pattern(kAnswer, i)) << "answer " << i;
    }
    MPI_Barrier(MPI_COMM_WORLD);
  } else {
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Barrier(MPI_COMM_WORLD);
  }
}

}  // namespace
}  // namespace pst

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &pst::rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  ::testing::InitGoogleTest(&argc, argv);
  if (provided < MPI_THREAD_MULTIPLE || size != 4) {
    std::fprintf(stderr, "mpi_transport_test: needs mpirun -np 4 and MPI_THREAD_MULTIPLE\n");
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  MPI_Comm_dup(MPI_COMM_WORLD, &pst::transport);
  MPI_Comm_set_errhandler(pst::transport, MPI_ERRORS_RETURN);
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0, any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (any && pst::rank == 0) std::fprintf(stderr, "mpi_transport_test: a rank failed (its output is above)\n");
  MPI_Comm_free(&pst::transport);
  MPI_Finalize();
  return any;
}
