#include "core/stop.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <thread>

namespace pst {
namespace {

// -1: no stop asked; otherwise the signal (0: request_stop()).
std::atomic<int> g_stop{-1};
static_assert(std::atomic<int>::is_always_lock_free, "signal handlers need a lock-free flag");

void on_stop_signal(int sig) {
  const int before = g_stop.exchange(sig);
  if (before >= 0 && sig != SIGUSR1) _exit(128 + sig);  // the second SIGTERM/SIGINT: now
}

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGUSR1);
  return set;
}

}  // namespace

void install_stop_handlers() {
  struct sigaction sa = {};
  sa.sa_handler = on_stop_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGUSR1}) sigaction(sig, &sa, nullptr);
  sigset_t set = stop_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    while (true) {
      int sig = 0;
      if (sigwait(&set, &sig) == 0) on_stop_signal(sig);
    }
  }).detach();
}

bool stop_requested() { return g_stop.load(std::memory_order_relaxed) >= 0; }
int stop_signal() { return std::max(g_stop.load(), 0); }
void request_stop() {
  int expected = -1;
  g_stop.compare_exchange_strong(expected, 0);
}
void clear_stop_request() { g_stop = -1; }

}  // namespace pst
