#include "scheduler/client.h"

#include <algorithm>
#include <random>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "comm/message.h"
#include "core/deadline.h"
#include "core/stop.h"

namespace pst {
namespace {

// The scheduler's answer, waiting at most timeout_s (the start deadline,
// cluster.start_timeout_s), or less when the process is asked to stop
// meanwhile (docker compose stop before the job has started).
Result<Frames> answer_or_stop(Dealer& scheduler, double timeout_s, const std::string& waiting_for) {
  const Deadline end = Deadline::after(timeout_s);
  while (true) {
    auto frames =
        scheduler.receive(Deadline::after(std::min(1.0, static_cast<double>(end.remaining_ms()) / 1000)), waiting_for);
    if (frames.ok() || end.expired()) return frames;
    if (stop_requested())
      return failed_precondition("stopped by signal {} while waiting for {}", stop_signal(), waiting_for);
  }
}

}  // namespace

Result<NodeTable> register_with_scheduler(Dealer& scheduler, uint64_t job_id, const JobLayout& layout,
                                          const NodeRegistration& node, double timeout_s) {
  const uint64_t request = std::random_device{}();
  OutMessage m(wire::Kind::REGISTER, job_id, -1, 0, request);
  auto info = m.header().initNode();
  info.setRole(node.role);
  info.setEndpoint(node.endpoint);
  info.setHost(node.host);
  info.setMetrics(node.metrics);
  info.setJoinOnly(node.join_only);
  PST_RETURN_IF_ERROR(scheduler.send(m.finish(), Deadline::after(timeout_s)));
  auto answer = answer_or_stop(scheduler, timeout_s, "the node table (rendezvous)");
  if (!answer.ok() && answer.status().code() == StatusCode::kDeadlineExceeded)
    return deadline_exceeded(
        "{} (is the scheduler running, and does this process have the job's security.mode and "
        "security.key_file? The scheduler refuses a connection that does not prove them, "
        "without an answer)",
        answer.status().message());
  PST_ASSIGN_OR_RETURN(Frames frames, std::move(answer));
  Rejection why;
  auto reply = InMessage::parse(std::move(frames), &why);
  if (!reply) return data_loss("{}: a bad answer to the registration: {}", scheduler.peer(), why.message);
  const auto h = reply->header();
  if (h.getKind() == wire::Kind::ERROR)
    return refused(h.getError(), fmt::format("{} refused the registration", scheduler.peer()));
  if (h.getKind() != wire::Kind::NODE_TABLE || h.which() != wire::Header::NODES || h.getRequestId() != request)
    return data_loss("{}: answered the registration with {}", scheduler.peer(), kind_name(h.getKind()));
  NodeTable table;
  table.rank = h.getRank();
  table.joined = h.getJoined();
  table.start_workers = h.getStartWorkers();
  table.reformed = h.getReformed();
  if (table.start_workers < 0 || table.start_workers > layout.workers)
    return data_loss("{}: the job starts with {} workers, not 0..{}", scheduler.peer(), table.start_workers,
                     layout.workers);
  table.servers.assign(static_cast<size_t>(layout.servers), "");
  for (auto n : h.getNodes())
    if (n.getRole() == wire::Role::SERVER && n.getIndex() >= 0 && n.getIndex() < layout.servers)
      table.servers[static_cast<size_t>(n.getIndex())] = n.getEndpoint().cStr();
  for (const std::string& e : table.servers)
    if (e.empty()) return data_loss("{}: the node table lacks a server", scheduler.peer());
  const bool server = node.role == wire::Role::SERVER;
  if (!(server ? layout.is_server(table.rank) : layout.is_worker(table.rank)))
    return data_loss("{}: gave rank {}, not one of a {}", scheduler.peer(), table.rank, server ? "server" : "worker");
  return table;
}

Result<int64_t> pass_start_barrier(Dealer& scheduler, uint64_t job_id, int32_t rank, double timeout_s,
                                   double start_timeout_s) {
  OutMessage b(wire::Kind::BARRIER, job_id, rank, 0, 1);
  PST_RETURN_IF_ERROR(scheduler.send(b.finish(), Deadline::after(timeout_s)));
  PST_ASSIGN_OR_RETURN(Frames frames,
                       answer_or_stop(scheduler, start_timeout_s, "the start barrier (every server ready)"));
  Rejection why;
  auto reply = InMessage::parse(std::move(frames), &why);
  if (reply && reply->header().getKind() == wire::Kind::ERROR)
    return refused(reply->header().getError(), scheduler.peer());
  if (!reply || reply->header().getKind() != wire::Kind::BARRIER || reply->header().getStep() < 0)
    return data_loss("{}: a bad answer at the start barrier", scheduler.peer());
  return reply->header().getStep();
}

Result<GradStats> SchedulerStatsReducer::all_reduce(int server, int64_t step, const GradStats& local,
                                                    Deadline deadline) {
  round_ = step == last_step_ ? round_ + 1 : 1;  // a second round of a step: the first said redo
  last_step_ = step;
  auto gone = [&]() -> std::string {
    std::lock_guard<std::mutex> lock(mu_);
    return abandoned_;
  };
  const uint64_t request = request_++;
  if (gone().empty()) {
    OutMessage m(wire::Kind::REPORT, job_id_, rank_, step, request);
    to_wire(local, m.header().initStats());
    PST_RETURN_IF_ERROR(scheduler_->send(m.finish(), deadline));
  }
  const std::string what = fmt::format("the sum of the gradient statistics of step {}", step);
  while (true) {
    // In slices, so that a scheduler taken as gone ends the wait at once.
    if (const std::string why = gone(); !why.empty()) return ask_servers(server, step, round_, why, deadline);
    const double slice = deadline.is_never() ? 0.1 : std::min(0.1, static_cast<double>(deadline.remaining_ms()) / 1000);
    auto received = scheduler_->receive(Deadline::after(slice), what);
    if (!received.ok() && received.status().code() == StatusCode::kDeadlineExceeded && !deadline.expired()) continue;
    PST_ASSIGN_OR_RETURN(Frames frames, std::move(received));
    Rejection why;
    auto reply = InMessage::parse(std::move(frames), &why);
    if (!reply) return data_loss("server {}: {}: {}", server, what, why.message);
    const auto h = reply->header();
    if (h.getKind() == wire::Kind::ERROR)
      return refused(h.getError(),
                     fmt::format("server {}: the scheduler rejected the statistics of step {}", server, step));
    if (h.getKind() != wire::Kind::REPORT || h.which() != wire::Header::STATS || h.getRequestId() != request) continue;
    GradStats total = from_wire(h.getStats());
    std::lock_guard<std::mutex> lock(mu_);
    // Once abandoned, the answers given to other servers stand: a sum
    // that comes later is not taken from the scheduler (the loop asks them).
    if (!abandoned_.empty()) continue;
    keep({step, round_, total});
    return total;
  }
}

Result<GradStats> SchedulerStatsReducer::ask_servers(int server, int64_t step, int round, const std::string& lost,
                                                     Deadline deadline) {
  const std::string failed =
      fmt::format("server {}: the statistics of step {} cannot be summed: {}", server, step, lost);
  const int servers = static_cast<int>(peers_.endpoints.size());
  if (peers_.context == nullptr || servers <= 1) return failed_precondition("{}", failed);
  peer_lines_.resize(static_cast<size_t>(servers));
  // Each other server is asked until it answers for good: the sum ends the
  // wait; that it has none counts once it, too, has lost the scheduler
  // (before, it answers LATER, and is asked again).
  enum class Said { kNothing, kLater, kNone, kUnreachable };
  std::vector<Said> said(static_cast<size_t>(servers), Said::kNothing);
  said[static_cast<size_t>(server)] = Said::kNone;
  std::vector<uint64_t> request(static_cast<size_t>(servers), 0);
  auto ask = [&](int k) {
    auto& line = peer_lines_[static_cast<size_t>(k)];
    if (!line) {
      const std::string& endpoint = peers_.endpoints[static_cast<size_t>(k)];
      auto d = Dealer::connect(*peers_.context, endpoint, fmt::format("server {} ({})", k, endpoint));
      if (!d.ok()) {
        said[static_cast<size_t>(k)] = Said::kUnreachable;
        return;
      }
      line = std::move(*d);
    }
    request[static_cast<size_t>(k)] = request_++;
    OutMessage m(wire::Kind::REPORT, job_id_, rank_, step, request[static_cast<size_t>(k)]);
    m.header().initStats().setRound(static_cast<uint8_t>(round));
    (void)line->send(m.finish(), Deadline::after(0.1));
  };
  for (int k = 0; k < servers; ++k)
    if (k != server) ask(k);
  auto open = [&] {
    return std::any_of(said.begin(), said.end(), [](Said x) { return x == Said::kNothing || x == Said::kLater; });
  };
  Deadline again = Deadline::after(0.1);
  while (open() && !deadline.expired()) {
    for (int k = 0; k < servers; ++k) {
      const Said x = said[static_cast<size_t>(k)];
      if (x != Said::kNothing && x != Said::kLater) continue;
      auto frames = peer_lines_[static_cast<size_t>(k)]->receive(
          Deadline::after(std::min(0.02, static_cast<double>(deadline.remaining_ms()) / 1000)), "a server's answer");
      if (!frames.ok()) continue;
      Rejection why;
      auto reply = InMessage::parse(std::move(*frames), &why);
      if (!reply || reply->header().getJobId() != job_id_ ||
          reply->header().getRequestId() != request[static_cast<size_t>(k)])
        continue;
      const auto h = reply->header();
      if (h.getKind() == wire::Kind::REPORT && h.which() == wire::Header::STATS) {
        GradStats total = from_wire(h.getStats());
        {
          std::lock_guard<std::mutex> lock(mu_);
          keep({step, round, total});
        }
        spdlog::warn(
            "server {}: the scheduler's sum of step {} did not reach this server; server {} has it, and this server "
            "completes the step with it",
            server, step, k);
        return total;
      }
      const bool later = h.getKind() == wire::Kind::ERROR && h.which() == wire::Header::ERROR &&
                         h.getError().getCode() == wire::ErrorCode::LATER;
      said[static_cast<size_t>(k)] = later ? Said::kLater : Said::kNone;
    }
    if (!again.expired()) continue;  // a server that said LATER is asked again every 100 ms
    again = Deadline::after(0.1);
    for (int k = 0; k < servers; ++k)
      if (said[static_cast<size_t>(k)] == Said::kLater) {
        said[static_cast<size_t>(k)] = Said::kNothing;
        ask(k);
      }
  }
  std::string quiet;
  for (int k = 0; k < servers; ++k)
    if (said[static_cast<size_t>(k)] != Said::kNone) quiet += fmt::format("{}{}", quiet.empty() ? "" : ", ", k);
  if (quiet.empty()) return failed_precondition("{} (no other server has the sum)", failed);
  return failed_precondition("{} (server {} did not say whether it has the sum)", failed, quiet);
}

void SchedulerStatsReducer::keep(Sum sum) {
  sums_.push_back(std::move(sum));
  if (sums_.size() > 2) sums_.erase(sums_.begin());  // a step's two rounds at most
}

SumAnswer SchedulerStatsReducer::sum_of(int64_t step, int round) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Sum& s : sums_)
    if (s.step == step && s.round == round) return {s.total, true};
  // all_reduce keeps a sum from the scheduler only while not abandoned
  // (under mu_): once abandoned, a sum not kept never will be.
  return {std::nullopt, !abandoned_.empty()};
}

void SchedulerStatsReducer::abandon(const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (abandoned_.empty()) abandoned_ = why;
}

}  // namespace pst
