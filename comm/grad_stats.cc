#include "comm/grad_stats.h"

#include <chrono>

namespace pst {

void to_wire(const GradStats& stats, wire::GradStatsInfo::Builder out) {
  out.setSumSquares(stats.sum_squares);
  out.setNonfinite(stats.nonfinite);
  out.setCheckpoint(stats.control.checkpoint);
  out.setStop(stats.control.stop);
}

GradStats from_wire(wire::GradStatsInfo::Reader in) {
  GradStats g;
  g.sum_squares = in.getSumSquares();
  g.nonfinite = in.getNonfinite();
  g.control.checkpoint = in.getCheckpoint();
  g.control.stop = in.getStop();
  return g;
}

Result<GradStats> ThreadStatsReducer::all_reduce(int server, int64_t step, const GradStats& local, Deadline deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  partial_[static_cast<size_t>(server)] = local;
  const int64_t generation = generation_;
  if (++arrived_ == static_cast<int>(partial_.size())) {
    GradStats total;
    for (const GradStats& p : partial_) total += p;
    result_ = total;
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
    return total;
  }
  const auto ready = [&] { return generation_ != generation; };
  if (deadline.is_never()) {
    cv_.wait(lock, ready);
  } else if (!cv_.wait_for(lock, std::chrono::milliseconds(deadline.remaining_ms()), ready)) {
    return deadline_exceeded("server {}: gradient statistics of step {}: {} of {} servers arrived before the deadline",
                             server, step, arrived_, partial_.size());
  }
  return result_;
}

}  // namespace pst
