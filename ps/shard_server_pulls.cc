// ShardServer's pulls: which version a pull may have (BSP: the next one;
// SSP: within the staleness bound; ASP: any), and the answer, sent in parts
// as the update streams chunks into the next snapshot (docs/design.md,
// Streaming).
#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "ps/shard_server.h"

namespace pst {

int64_t ShardServer::slowest_live_clock() const {
  int64_t slowest = INT64_MAX;
  for (size_t w = 0; w < clocks_.size(); ++w)
    if (!finished_[w] && !removed_[w]) slowest = std::min(slowest, clocks_[w]);
  return slowest;
}

bool ShardServer::pull_allowed(int64_t min_version, int worker) const {
  if (version_ < min_version) return false;
  if (options_.consistency != Consistency::kSsp) return true;
  const int64_t slowest = slowest_live_clock();
  return slowest == INT64_MAX || clocks_[static_cast<size_t>(worker)] - slowest <= options_.staleness;
}

Status ShardServer::answer_ready_pulls() {
  std::vector<PendingPull> still;
  for (PendingPull& p : pending_) {
    if (pull_allowed(p.min_version, p.worker)) {
      PST_RETURN_IF_ERROR(answer_pull(p));
    } else {
      still.push_back(std::move(p));
    }
  }
  pending_ = std::move(still);
  waiting_pulls_ = static_cast<int64_t>(pending_.size());
  return Status();
}

Status ShardServer::on_pull(zmq::message_t route, const InMessage& m) {
  const int64_t want = m.header().getStep();
  if (want > version_ + 1)
    return reject(route,
                  {wire::ErrorCode::BAD_STEP,
                   fmt::format("pull of version {}; server {} is at {} (a pull may wait for the next version only)",
                               want, options_.server, version_)},
                  &m);
  const int w = options_.layout.worker_index(m.header().getSender());
  PendingPull p = pending_pull(std::move(route), m, w);
  if (pull_allowed(want, w)) return answer_pull(p);
  pending_.push_back(std::move(p));
  waiting_pulls_ = static_cast<int64_t>(pending_.size());
  return Status();
}

Status ShardServer::send_pull_part(PendingPull& p, const Snapshot& weights, int64_t version, const StepReport& report,
                                   size_t last) {
  OutMessage reply(wire::Kind::PULL_REPLY, options_.job_id, options_.layout.server_rank(options_.server), version,
                   p.request_id);
  StepReport info = report;
  info.applied = report.applied || version == 0;
  info.stop = report.stop || (stopped_at_ >= 0 && version >= stopped_at_);
  if (options_.consistency == Consistency::kBsp) {
    // The batch of the step after this version: agreed in the update that
    // made it (streamed parts of version_ + 1 are sent once it is).
    std::lock_guard<std::mutex> lock(mu_);
    const std::vector<int64_t>& batches = version == version_ ? batches_ : next_batches_;
    info.batch = batches[static_cast<size_t>(p.worker)];
    const auto lowest = std::find_if(batches.begin(), batches.end(), [](int64_t b) { return b >= 0; });
    info.lead = lowest - batches.begin() == p.worker;
  }
  to_wire(info, reply.header().initStepInfo());
  for (size_t i = p.sent; i < last; ++i) {
    const Chunk& c = owned_chunks_[i];
    const size_t at = static_cast<size_t>(opt_.local_offset(i));
    if (p.bf16) {
      reply.add_chunk_bf16(c.key, weights->bf16.data() + at, c.length, weights);
    } else {
      reply.add_chunk(c.key, weights->fp32.data() + at, c.length, weights);
    }
  }
  p.sent = last;
  if (options_.metrics) options_.metrics->bytes_out(reply.payload_bytes());
  const Status sent = router_->send(p.route, reply.finish(), Deadline::after(options_.timeout_s));
  if (!sent.ok()) {
    // The worker has gone (killed while its pull waited). Its pull is
    // dropped; the next round's deadline names it unless it comes back.
    spdlog::warn("server {}: worker {} did not take weights of version {}: {}", options_.server, p.worker, version,
                 sent.message());
    p.gone = true;
  }
  return Status();
}

Status ShardServer::answer_pull(PendingPull& p) {
  if (options_.consistency != Consistency::kBsp) {
    const int64_t slowest = slowest_live_clock();
    if (slowest != INT64_MAX) max_lead_ = std::max(max_lead_, clocks_[static_cast<size_t>(p.worker)] - slowest);
  }
  // What streaming during the update has not sent (a server that owns
  // nothing answers with one empty part).
  if (p.gone || (p.sent == owned_chunks_.size() && p.sent > 0)) return Status();
  StepReport report = last_;
  report.applied_steps = opt_.applied_steps();
  PST_RETURN_IF_ERROR(send_pull_part(p, snapshot_, version_, report, owned_chunks_.size()));
  if (options_.metrics)
    options_.metrics->request("pull",
                              std::chrono::duration<double>(std::chrono::steady_clock::now() - p.arrived).count());
  return Status();
}

Status ShardServer::on_progress(size_t done) {
  if (options_.consistency != Consistency::kBsp || owned_chunks_.empty()) return Status();
  // The last chunk waits for the end of the update: a worker cannot finish
  // its forward, and push the next step, before this server takes it.
  done = std::min(done, owned_chunks_.size() - 1);
  StepReport report;
  {
    std::lock_guard<std::mutex> lock(mu_);
    report = progress_report_;
  }
  for (PendingPull& p : pending_)
    if (!p.gone && p.min_version <= version_ + 1 && p.sent < done) {
      PST_RETURN_IF_ERROR(send_pull_part(p, next_snapshot_, version_ + 1, report, done));
      ++streamed_parts_;
    }
  return Status();
}

}  // namespace pst
