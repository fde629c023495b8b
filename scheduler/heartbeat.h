// A node's line to the scheduler: a thread that sends a Heartbeat every
// interval, and a Shutdown ("ended well") when the node finishes. A node
// that dies stops both, which is how the scheduler tells it is gone. A job
// without a scheduler (threads of one process) passes an empty endpoint:
// nothing is sent.
//
// Thread safety: finish() and the destructor are called by the owner thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include <zmq.hpp>

#include "core/status.h"

namespace pst {

class Heartbeat {
 public:
  Heartbeat(zmq::context_t& context, const std::string& scheduler_endpoint, uint64_t job_id, int32_t rank,
            double interval_s);
  ~Heartbeat();  // stops without a Shutdown unless finish() ran
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

  // Sends Shutdown and stops.
  void finish();

 private:
  void run();

  zmq::context_t& context_;
  std::string endpoint_;
  uint64_t job_id_;
  int32_t rank_;
  double interval_s_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;      // guarded by mu_
  bool finished_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace pst
