// What a server or the scheduler does with a message it will not take:
// counts it (and hands its reason to `count_reason`, a Prometheus counter),
// logs it at a bounded rate (core/logging.h), and answers with an Error only
// if the peer has room for it, so a peer that floods without reading its
// replies holds up nobody.
//
// Thread safety: reject() on one thread; count() from any.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "comm/message.h"
#include "comm/socket.h"
#include "core/logging.h"

namespace pst {

class Rejecter {
 public:
  // job_id and sender go into the Error replies; who starts the log lines
  // ("server 1", "scheduler").
  Rejecter(uint64_t job_id, int32_t sender, std::string who,
           std::function<void(const char* reason)> count_reason = nullptr)
      : job_id_(job_id), sender_(sender), who_(std::move(who)), count_reason_(std::move(count_reason)) {}

  // m: the message, where it could be parsed (its request id is echoed).
  void reject(Router& router, const zmq::message_t& route, const Rejection& why, const InMessage* m);
  int64_t count() const { return count_.load(); }

 private:
  uint64_t job_id_;
  int32_t sender_;
  std::string who_;
  std::function<void(const char*)> count_reason_;
  WarnThrottle log_;
  std::atomic<int64_t> count_{0};
};

}  // namespace pst
