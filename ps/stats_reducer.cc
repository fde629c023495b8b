#include "ps/stats_reducer.h"

#include <chrono>
#include <cmath>

namespace pst {

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

Result<GradStats> MpiStatsReducer::all_reduce(int server, int64_t step, const GradStats& local, Deadline) {
  double in[2] = {local.sum_squares, local.nonfinite ? 1.0 : 0.0}, out[2] = {0, 0};
  if (MPI_Allreduce(in, out, 2, MPI_DOUBLE, MPI_SUM, comm_) != MPI_SUCCESS)
    return failed_precondition("server {}: MPI_Allreduce of the gradient statistics of step {} failed", server, step);
  GradStats g;
  g.sum_squares = out[0];
  g.nonfinite = out[1] > 0.0 || !std::isfinite(out[0]);
  return g;
}

}  // namespace pst
