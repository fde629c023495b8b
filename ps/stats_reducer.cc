#include "ps/stats_reducer.h"

#include <chrono>
#include <cmath>

#include <fmt/format.h>

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

Result<GradStats> SchedulerStatsReducer::all_reduce(int server, int64_t step, const GradStats& local,
                                                    Deadline deadline) {
  const uint64_t request = request_++;
  OutMessage m(wire::Kind::REPORT, job_id_, rank_, step, request);
  auto st = m.header().initStats();
  st.setSumSquares(local.sum_squares);
  st.setNonfinite(local.nonfinite);
  st.setCheckpoint(local.checkpoint);
  st.setStop(local.stop);
  PST_RETURN_IF_ERROR(scheduler_->send(m.finish(), deadline));
  const std::string what = fmt::format("the sum of the gradient statistics of step {}", step);
  while (true) {
    PST_ASSIGN_OR_RETURN(Frames frames, scheduler_->receive(deadline, what));
    Rejection why;
    auto reply = InMessage::parse(std::move(frames), &why);
    if (!reply) return data_loss("server {}: {}: {}", server, what, why.message);
    const auto h = reply->header();
    if (h.getKind() == wire::Kind::ERROR)
      return failed_precondition("server {}: the scheduler rejected the statistics of step {}: {}", server, step,
                                 h.getError().getMessage().cStr());
    if (h.getKind() != wire::Kind::REPORT || h.which() != wire::Header::STATS || h.getRequestId() != request) continue;
    GradStats g;
    g.sum_squares = h.getStats().getSumSquares();
    g.nonfinite = h.getStats().getNonfinite();
    g.checkpoint = h.getStats().getCheckpoint();
    g.stop = h.getStats().getStop();
    return g;
  }
}

Result<GradStats> MpiStatsReducer::all_reduce(int server, int64_t step, const GradStats& local, Deadline) {
  // Gathered, then added in server order like the other reducers: the order
  // of MPI_Allreduce's additions is the library's choice.
  auto flag = [](bool b) { return b ? 1.0 : 0.0; };
  const double in[4] = {local.sum_squares, flag(local.nonfinite), flag(local.checkpoint), flag(local.stop)};
  int servers = 0;
  MPI_Comm_size(comm_, &servers);
  std::vector<double> all(static_cast<size_t>(servers) * 4);
  if (MPI_Allgather(in, 4, MPI_DOUBLE, all.data(), 4, MPI_DOUBLE, comm_) != MPI_SUCCESS)
    return failed_precondition("server {}: MPI_Allgather of the gradient statistics of step {} failed", server, step);
  GradStats g;
  for (int s = 0; s < servers; ++s) {
    const double* p = all.data() + static_cast<size_t>(s) * 4;
    GradStats part;
    part.sum_squares = p[0];
    part.nonfinite = p[1] > 0.0;
    part.checkpoint = p[2] > 0.0;
    part.stop = p[3] > 0.0;
    g += part;
  }
  g.nonfinite = g.nonfinite || !std::isfinite(g.sum_squares);
  return g;
}

}  // namespace pst
