#include "comm/note_queue.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/status.h"

namespace pst {

NoteQueue::NoteQueue() : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  PST_CHECK_MSG(fd_ >= 0, "eventfd: {}", std::strerror(errno));
}

NoteQueue::~NoteQueue() { ::close(fd_); }

void NoteQueue::post(int64_t note) {
  std::lock_guard<std::mutex> lock(mu_);
  notes_.push_back(note);
  if (notes_.size() > 1) return;  // the descriptor is readable already
  const uint64_t one = 1;
  ssize_t n;
  do {
    n = ::write(fd_, &one, sizeof(one));
  } while (n < 0 && errno == EINTR);
  PST_CHECK_MSG(n == sizeof(one), "eventfd write: {}", std::strerror(errno));
}

std::vector<int64_t> NoteQueue::take() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int64_t> taken;
  if (notes_.empty()) return taken;
  uint64_t count = 0;
  ssize_t n;
  do {
    n = ::read(fd_, &count, sizeof(count));
  } while (n < 0 && errno == EINTR);
  PST_CHECK_MSG(n == sizeof(count), "eventfd read: {}", std::strerror(errno));
  taken.swap(notes_);
  return taken;
}

}  // namespace pst
