// A node's line to the scheduler: a thread that sends a Heartbeat every
// interval (cluster.heartbeat_s), and a Shutdown ("ended well") when the
// node finishes. A node that dies or stops (SIGSTOP) stops both, which is
// how the scheduler tells it is gone. The scheduler speaks back on the same
// line: an acknowledgement of each beat, and the workers it removed from the
// job (Membership), which the thread passes to on_membership, and that the
// job re-forms (on_reform). A scheduler that acknowledges nothing for a
// while is gone (on_lost): silent since its last acknowledgement, or, when
// it has acknowledged none, since its watch began (watch()). A job without
// a scheduler (threads of one process) passes an empty endpoint: nothing is
// sent.
//
// Thread safety: watch(), finish() and the destructor are called by the
// owner thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "comm/socket.h"
#include "core/status.h"

namespace pst {

class Heartbeat {
 public:
  // on_membership (may be null) is called on the heartbeat's thread with the
  // ranks of every worker removed so far, and beside each the process that
  // was removed (0: not known).
  using OnMembership = std::function<void(const std::vector<int32_t>& removed, const std::vector<uint64_t>& processes)>;
  // on_lost (may be null) is called once, on the heartbeat's thread, when
  // the scheduler acknowledges no beat for lost_after_s, counted from its
  // last acknowledgement or from watch(), whichever is later: it is taken
  // as gone, with the seconds it was silent. Before either, silence does
  // not count (an mpirun job's scheduler answers nothing until every rank
  // has passed MPI's start barrier).
  using OnLost = std::function<void(double silent_s)>;
  // on_reform (may be null) is called once, on the heartbeat's thread, when
  // the scheduler says the job re-forms (an error with code REFORM), with
  // its reason (cluster.max_restarts).
  using OnReform = std::function<void(const std::string& why)>;
  Heartbeat(zmq::context_t& context, const std::string& scheduler_endpoint, uint64_t job_id, int32_t rank,
            double interval_s, OnMembership on_membership = nullptr, double lost_after_s = 0, OnLost on_lost = nullptr,
            OnReform on_reform = nullptr);
  ~Heartbeat();  // stops without a Shutdown unless finish() ran
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

  // The scheduler's watch has begun (the job's start barrier has passed):
  // from now on it answers each beat, so its silence counts even before a
  // first acknowledgement (a scheduler that dies just after the barrier).
  void watch();
  // Sends Shutdown and stops.
  void finish();

 private:
  void run();
  // Takes what the scheduler sent (Membership; errors are logged).
  void read_messages(Dealer& dealer);

  zmq::context_t& context_;
  std::string endpoint_;
  uint64_t job_id_;
  int32_t rank_;
  double interval_s_;
  OnMembership on_membership_;
  double lost_after_s_;
  OnLost on_lost_;
  OnReform on_reform_;
  bool reformed_ = false;                        // on_reform_ was called (heartbeat thread)
  std::chrono::steady_clock::time_point heard_;  // the scheduler's last message (heartbeat thread)
  std::mutex mu_;
  std::chrono::steady_clock::time_point watched_ = std::chrono::steady_clock::time_point::min();  // guarded by mu_
  bool stop_ = false;                                                                             // guarded by mu_
  bool finished_ = false;                                                                         // guarded by mu_
  std::thread thread_;
};

}  // namespace pst
