#include "scheduler/watch.h"

#include <chrono>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "comm/message.h"

namespace pst {
namespace {

std::string node_name(const JobLayout& l, int32_t rank) {
  if (l.is_server(rank)) return fmt::format("server {} (rank {})", l.server_index(rank), rank);
  if (l.is_worker(rank)) return fmt::format("worker {} (rank {})", l.worker_index(rank), rank);
  return fmt::format("rank {}", rank);
}

}  // namespace

Status watch_job(Router& router, const WatchOptions& o) {
  using Clock = std::chrono::steady_clock;
  const int32_t nodes = o.layout.nodes();
  std::vector<Clock::time_point> last_seen(static_cast<size_t>(nodes), Clock::now());
  std::vector<bool> done(static_cast<size_t>(nodes), false);
  done[0] = true;  // the scheduler itself
  int remaining = nodes - 1;
  const Expectation e{o.job_id, nodes, nullptr, -1};
  while (remaining > 0) {
    // Wake at least once a second to check who has gone quiet.
    auto msg = router.receive(Deadline::after(std::min(1.0, o.timeout_s)), "heartbeats");
    if (msg.ok()) {
      Rejection why;
      auto m = InMessage::parse(std::move(msg->frames), &why);
      if (!m || !validate(*m, e, &why)) {
        spdlog::warn("scheduler: rejected a message: {}", why.message);
      } else {
        const int32_t rank = m->header().getSender();
        last_seen[static_cast<size_t>(rank)] = Clock::now();
        if (m->header().getKind() == wire::Kind::SHUTDOWN && !done[static_cast<size_t>(rank)]) {
          done[static_cast<size_t>(rank)] = true;
          --remaining;
        }
      }
    } else if (msg.status().code() != StatusCode::kDeadlineExceeded) {
      return msg.status();
    }
    const auto now = Clock::now();
    for (int32_t r = 1; r < nodes; ++r) {
      const double silent = std::chrono::duration<double>(now - last_seen[static_cast<size_t>(r)]).count();
      if (!done[static_cast<size_t>(r)] && silent > o.timeout_s)
        return deadline_exceeded("scheduler: {} sent nothing for {:.0f} s (no heartbeat); it is taken as dead",
                                 node_name(o.layout, r), silent);
    }
  }
  return Status();
}

}  // namespace pst
