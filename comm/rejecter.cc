#include "comm/rejecter.h"

#include <fmt/format.h>

namespace pst {

void Rejecter::reject(Router& router, const zmq::message_t& route, const Rejection& why, const InMessage* m) {
  ++count_;
  if (count_reason_) count_reason_(error_code_name(why.code).c_str());
  log_.warn(fmt::format("{}: rejected a message: {}", who_, why.message));
  const Status s = router.send(route, error_reply(why, job_id_, sender_, m), Deadline::after(0));
  if (!s.ok()) log_.warn(fmt::format("{}: could not send the error reply: {}", who_, s.message()));
}

}  // namespace pst
