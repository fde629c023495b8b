// What a server or the scheduler does with a message it will not take:
// counts it (and hands its reason to `count_reason`, a Prometheus counter),
// logs it at a bounded rate (core/logging.h), and answers with an Error only
// if the peer has room for it, so a peer that floods without reading its
// replies holds up nobody. A message sent in a rank's name by another
// process than the one bound to that rank (RankBinding) is dropped without
// an answer.
//
// Thread safety: reject() and drop() on one thread; count() from any.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

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
  // The reply carries the job's id only if m did.
  void reject(Router& router, const zmq::message_t& route, const Rejection& why, const InMessage* m);
  // Counts and logs, without an answer (a spoofed sender).
  void drop(const Rejection& why);
  int64_t count() const { return count_.load(); }
  // "12 badJob, 3 spoofed": the count of each reason seen, for the summary
  // line at the end of a run (the warnings themselves are throttled).
  std::string reasons() const;

 private:
  void note(const Rejection& why);

  uint64_t job_id_;
  int32_t sender_;
  std::string who_;
  std::function<void(const char*)> count_reason_;
  WarnThrottle log_;
  std::atomic<int64_t> count_{0};
  static constexpr size_t kReasons = 16;
  std::atomic<int64_t> by_reason_[kReasons] = {};
};

// Which process speaks for each rank: the identity (comm/socket.h
// peer_identity) of the first message heard in that rank's name, or of its
// registration. Other processes are refused that rank for the rest of the
// job. With security on only members of the job can connect at all; the
// binding keeps one member (or a stale process of an earlier run that holds
// the secret) from acting as another.
//
// Thread safety: one thread.
class RankBinding {
 public:
  explicit RankBinding(int32_t nodes) : identity_(static_cast<size_t>(nodes)) {}

  // True when `rank` may speak from `route`; binds it on first use. A rank
  // outside the table is refused (validate() has said so already).
  bool admit(int32_t rank, const zmq::message_t& route);
  // Binds `rank` to the process behind `route` (a registration).
  void bind(int32_t rank, const zmq::message_t& route);
  // Unbinds `rank`: its next message binds it again (a worker that joins
  // in a removed one's place).
  void release(int32_t rank);
  // The rejection for a refused message from `route` in `rank`'s name.
  Rejection spoofed(int32_t rank, const zmq::message_t& route) const;

 private:
  std::vector<std::string> identity_;
};

}  // namespace pst
