// NoteQueue: notes posted from other threads arrive in the order each
// thread posted them, none lost or repeated; its descriptor is readable
// exactly while notes wait, so a zmq_poll over ZeroMQ sockets and the
// descriptor wakes when a note comes.
#include "comm/note_queue.h"

#include <poll.h>

#include <chrono>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <zmq.hpp>

namespace pst {
namespace {

bool readable(const NoteQueue& q) {
  pollfd p{q.fd(), POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

TEST(NoteQueueTest, TheDescriptorIsReadableExactlyWhileNotesWait) {
  NoteQueue q;
  EXPECT_FALSE(readable(q));
  EXPECT_TRUE(q.take().empty());
  q.post(7);
  q.post(-1);
  q.post(7);
  EXPECT_TRUE(readable(q));
  EXPECT_EQ(q.take(), (std::vector<int64_t>{7, -1, 7}));
  EXPECT_FALSE(readable(q));
  EXPECT_TRUE(q.take().empty());
  q.post(3);
  EXPECT_TRUE(readable(q));
  EXPECT_EQ(q.take(), (std::vector<int64_t>{3}));
  EXPECT_FALSE(readable(q));
}

// Four threads post 2,000 notes each (thread t posts t * 1e6 + i) while
// this one waits in zmq_poll beside an idle ZeroMQ socket and takes them.
TEST(NoteQueueTest, NotesFromManyThreadsWakeAZmqPollAndArriveInOrder) {
  NoteQueue q;
  zmq::context_t ctx;
  zmq::socket_t idle(ctx, zmq::socket_type::pair);
  idle.bind("inproc://note-queue-test");
  constexpr int kThreads = 4, kNotes = 2000;
  std::vector<std::thread> posters;
  for (int t = 0; t < kThreads; ++t)
    posters.emplace_back([&q, t] {
      for (int i = 0; i < kNotes; ++i) {
        q.post(int64_t{t} * 1000000 + i);
        if (i % 500 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
  std::vector<int64_t> next(kThreads, 0);
  int64_t got = 0;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (got < int64_t{kThreads} * kNotes && std::chrono::steady_clock::now() < give_up) {
    zmq::pollitem_t items[2] = {{idle.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, q.fd(), ZMQ_POLLIN, 0}};
    zmq::poll(items, 2, std::chrono::milliseconds(1000));
    EXPECT_EQ(items[0].revents, 0);
    if (!(items[1].revents & ZMQ_POLLIN)) continue;
    const std::vector<int64_t> notes = q.take();
    EXPECT_FALSE(notes.empty()) << "readable with no note";
    for (const int64_t n : notes) {
      const int t = static_cast<int>(n / 1000000);
      ASSERT_GE(t, 0);
      ASSERT_LT(t, kThreads);
      EXPECT_EQ(n % 1000000, next[static_cast<size_t>(t)]) << "thread " << t << "'s notes out of order";
      next[static_cast<size_t>(t)] = n % 1000000 + 1;
      ++got;
    }
  }
  for (auto& p : posters) p.join();
  EXPECT_EQ(got, int64_t{kThreads} * kNotes);
  EXPECT_FALSE(readable(q));
}

}  // namespace
}  // namespace pst
