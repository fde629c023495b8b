#include "comm/grad_stats.h"

#include <chrono>

#include <fmt/format.h>

namespace pst {

GradStats sum_over_servers(const std::vector<GradStats>& parts) {
  GradStats total;
  for (const GradStats& p : parts) {
    total.sum_squares += p.sum_squares;
    total.nonfinite = total.nonfinite || p.nonfinite;
    total.control |= p.control;
    if (p.contributors.empty()) continue;
    if (total.contributors.empty()) {
      total.contributors = p.contributors;
    } else {
      for (size_t w = 0; w < total.contributors.size() && w < p.contributors.size(); ++w)
        total.contributors[w] = total.contributors[w] && p.contributors[w];
    }
  }
  for (const GradStats& p : parts)
    total.redo = total.redo || (!p.contributors.empty() && p.contributors != total.contributors);
  return total;
}

bool contributors_fit(const GradStats& part, int workers, std::string* why) {
  if (part.contributors.empty() || part.contributors.size() == static_cast<size_t>(workers)) return true;
  *why = fmt::format("contributors of {} workers; the job has {}", part.contributors.size(), workers);
  return false;
}

void to_wire(const GradStats& stats, wire::GradStatsInfo::Builder out) {
  out.setSumSquares(stats.sum_squares);
  out.setNonfinite(stats.nonfinite);
  out.setCheckpoint(stats.control.checkpoint);
  out.setStop(stats.control.stop);
  out.setRedo(stats.redo);
  auto c = out.initContributors(static_cast<unsigned>(stats.contributors.size()));
  for (unsigned w = 0; w < c.size(); ++w) c.set(w, stats.contributors[w] != 0);
  auto j = out.initJoined(static_cast<unsigned>(stats.joined.size()));
  for (unsigned i = 0; i < j.size(); ++i) {
    j[i].setRank(stats.joined[i].rank);
    j[i].setProcess(stats.joined[i].process);
  }
}

GradStats from_wire(wire::GradStatsInfo::Reader in) {
  GradStats g;
  g.sum_squares = in.getSumSquares();
  g.nonfinite = in.getNonfinite();
  g.control.checkpoint = in.getCheckpoint();
  g.control.stop = in.getStop();
  g.redo = in.getRedo();
  for (bool c : in.getContributors()) g.contributors.push_back(c ? 1 : 0);
  for (auto j : in.getJoined()) g.joined.push_back({j.getRank(), j.getProcess()});
  return g;
}

Result<GradStats> ThreadStatsReducer::all_reduce(int server, int64_t step, const GradStats& local, Deadline deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  partial_[static_cast<size_t>(server)] = local;
  const int64_t generation = generation_;
  if (++arrived_ == static_cast<int>(partial_.size())) {
    const GradStats total = sum_over_servers(partial_);
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

int question_round(const InMessage& question) {
  const auto h = question.header();
  return h.which() == wire::Header::STATS ? h.getStats().getRound() : 0;
}

Frames answer_sum_question(const SumAnswer& answer, const InMessage& question, uint64_t job_id, int32_t rank,
                           int server) {
  const auto h = question.header();
  if (answer.sum) {
    OutMessage reply(wire::Kind::REPORT, job_id, rank, h.getStep(), h.getRequestId());
    to_wire(*answer.sum, reply.header().initStats());
    return reply.finish();
  }
  const Rejection none{answer.lasting ? wire::ErrorCode::BAD_STEP : wire::ErrorCode::LATER,
                       fmt::format("server {} has no sum of step {} (round {}){}", server, h.getStep(),
                                   question_round(question), answer.lasting ? "" : " and still hears the scheduler")};
  return error_reply(none, job_id, rank, &question);
}

}  // namespace pst
