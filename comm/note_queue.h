// Notes from other threads to a thread that waits on ZeroMQ sockets with
// zmq_poll: an eventfd, which the poll watches as a plain file descriptor,
// and the notes themselves under a mutex. Waiting on it costs the poll one
// more descriptor and nothing else, where an inproc socket costs ZeroMQ's
// bookkeeping of one more socket (system calls of its own) on every pass.
//
// Thread safety: post() from any thread; fd() and take() from the waiting one.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

namespace pst {

class NoteQueue {
 public:
  NoteQueue();  // aborts when the kernel gives no eventfd (out of descriptors)
  ~NoteQueue();
  NoteQueue(const NoteQueue&) = delete;
  NoteQueue& operator=(const NoteQueue&) = delete;

  // Readable (POLLIN) while notes wait.
  int fd() const { return fd_; }
  void post(int64_t note);
  // Every note posted since the last take(), in order.
  std::vector<int64_t> take();

 private:
  int fd_ = -1;
  std::mutex mu_;
  std::vector<int64_t> notes_;  // fd_ holds a count > 0 exactly while this is not empty
};

}  // namespace pst
