#include "comm/rejecter.h"

#include <algorithm>

#include <fmt/format.h>

namespace pst {

void Rejecter::note(const Rejection& why) {
  ++count_;
  ++by_reason_[std::min<size_t>(static_cast<size_t>(why.code), kReasons - 1)];
  if (count_reason_) count_reason_(error_code_name(why.code).c_str());
  log_.warn(fmt::format("{}: rejected a message: {}", who_, why.message));
}

void Rejecter::reject(Router& router, const zmq::message_t& route, const Rejection& why, const InMessage* m) {
  note(why);
  // Only a peer that named the job's id gets it back: an outsider learns
  // nothing it could use in its next message.
  const bool knows_job = m != nullptr && m->header().getJobId() == job_id_;
  const Status s = router.send(route, error_reply(why, knows_job ? job_id_ : 0, sender_, m), Deadline::after(0));
  if (!s.ok()) log_.warn(fmt::format("{}: could not send the error reply: {}", who_, s.message()));
}

void Rejecter::drop(const Rejection& why) { note(why); }

std::string Rejecter::reasons() const {
  std::string out;
  for (size_t i = 0; i < kReasons; ++i) {
    const int64_t n = by_reason_[i].load();
    if (n > 0)
      out += fmt::format("{}{} {}", out.empty() ? "" : ", ", n, error_code_name(static_cast<wire::ErrorCode>(i)));
  }
  return out;
}

bool RankBinding::admit(int32_t rank, const zmq::message_t& route) {
  if (rank < 0 || static_cast<size_t>(rank) >= identity_.size()) return false;
  std::string& bound = identity_[static_cast<size_t>(rank)];
  const std::string id = peer_identity(route);
  if (bound.empty()) bound = id;
  return bound == id;
}

void RankBinding::bind(int32_t rank, const zmq::message_t& route) {
  if (rank >= 0 && static_cast<size_t>(rank) < identity_.size())
    identity_[static_cast<size_t>(rank)] = peer_identity(route);
}

void RankBinding::release(int32_t rank) {
  if (rank >= 0 && static_cast<size_t>(rank) < identity_.size()) identity_[static_cast<size_t>(rank)].clear();
}

Rejection RankBinding::spoofed(int32_t rank, const zmq::message_t& route) const {
  return {wire::ErrorCode::SPOOFED,
          fmt::format("a message in the name of rank {} from process {}, not from the process that rank is bound to; "
                      "dropped without an answer",
                      rank, peer_identity_text(peer_identity(route)))};
}

}  // namespace pst
