// The scheduler's watch over a running job (DESIGN.md §1): every node sends
// heartbeats and, when it ends well, a Shutdown. The job has ended when every
// node has; a node silent for longer than the timeout is declared dead, and
// the error names it.
#pragma once

#include <cstdint>

#include "comm/layout.h"
#include "comm/socket.h"
#include "core/status.h"

namespace pst {

struct WatchOptions {
  uint64_t job_id = 0;
  JobLayout layout;
  double timeout_s = 120;
};

// Returns OK once every server and worker has sent Shutdown; an error naming
// the first node that stayed silent for timeout_s.
Status watch_job(Router& router, const WatchOptions& options);

}  // namespace pst
