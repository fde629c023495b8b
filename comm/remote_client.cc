#include "comm/remote_client.h"

#include <condition_variable>
#include <mutex>

#include <fmt/format.h>

namespace pst {
namespace {

// Counts down as ZeroMQ releases the frames that point into a push's
// gradient buffer, so push() can return only when the caller may reuse it.
class ReleaseLatch {
 public:
  std::shared_ptr<const void> token() {
    auto self = state_;
    {
      std::lock_guard<std::mutex> lock(self->mu);
      self->released = false;
    }
    return std::shared_ptr<const void>(nullptr, [self](const void*) {
      std::lock_guard<std::mutex> lock(self->mu);
      self->released = true;
      self->cv.notify_all();
    });
  }
  bool wait(Deadline deadline) {
    std::unique_lock<std::mutex> lock(state_->mu);
    const auto done = [&] { return state_->released; };
    if (deadline.is_never()) {
      state_->cv.wait(lock, done);
      return true;
    }
    return state_->cv.wait_for(lock, std::chrono::milliseconds(deadline.remaining_ms()), done);
  }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    bool released = true;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

}  // namespace

Result<std::unique_ptr<RemoteParameterClient>> RemoteParameterClient::connect(
    zmq::context_t& context, const ShardPlan& plan, const std::vector<std::string>& server_endpoints,
    RemoteClientOptions options) {
  if (static_cast<int>(server_endpoints.size()) != plan.servers())
    return invalid_argument("remote client: {} server endpoints for a plan of {} servers", server_endpoints.size(),
                            plan.servers());
  std::unique_ptr<RemoteParameterClient> c(new RemoteParameterClient(plan, options));
  for (size_t k = 0; k < server_endpoints.size(); ++k) {
    PST_ASSIGN_OR_RETURN(auto d, Dealer::connect(context, server_endpoints[k],
                                                 fmt::format("server {} ({})", k, server_endpoints[k])));
    c->servers_.push_back(std::move(d));
  }
  return c;
}

Result<std::unique_ptr<InMessage>> RemoteParameterClient::await_reply(int k, uint64_t request_id, wire::Kind kind,
                                                                      const std::string& what) {
  Dealer& d = *servers_[static_cast<size_t>(k)];
  // A server may wait timeout_s for the slowest worker before it gives up
  // and says whom it waited for; waiting twice that lets its answer arrive.
  const Deadline deadline = Deadline::after(kind == wire::Kind::PULL_REPLY ? 2 * options_.timeout_s : options_.timeout_s);
  while (true) {
    PST_ASSIGN_OR_RETURN(Frames frames, d.receive(deadline, what));
    Rejection why;
    auto m = InMessage::parse(std::move(frames), &why);
    const Expectation e{options_.job_id, options_.layout.nodes(), &plan_, k};
    if (!m || !validate(*m, e, &why))
      return data_loss("{}: a bad reply while waiting for {}: {}", d.peer(), what, why.message);
    if (m->header().getSender() != options_.layout.server_rank(k))
      return data_loss("{}: a reply from rank {} while waiting for {}", d.peer(), m->header().getSender(), what);
    if (m->header().getKind() == wire::Kind::ERROR)
      return failed_precondition("{} rejected {}: {}", d.peer(), what, m->header().getError().getMessage().cStr());
    if (m->header().getRequestId() != request_id) continue;  // a late answer to an earlier request
    if (m->header().getKind() != kind)
      return data_loss("{}: a {} reply while waiting for {}", d.peer(), kind_name(m->header().getKind()), what);
    return m;
  }
}

Status RemoteParameterClient::push(int64_t version, int64_t tokens, double loss_sum, const float* grads) {
  const int32_t rank = options_.layout.worker_rank(options_.worker);
  const uint64_t request = next_request_++;
  ReleaseLatch latch;
  {
    // Every frame holds a copy of the token; the latch opens when the last goes.
    std::shared_ptr<const void> token = latch.token();
    for (int k = 0; k < plan_.servers(); ++k) {
      OutMessage m(wire::Kind::PUSH, options_.job_id, rank, version, request);
      auto p = m.header().initPush();
      p.setTokens(tokens);
      p.setLossSum(loss_sum);
      for (const Chunk& c : plan_.chunks())
        if (c.server == k) m.add_chunk(c.key, grads + c.begin, c.length, token);
      PST_RETURN_IF_ERROR(servers_[static_cast<size_t>(k)]->send(m.finish(), Deadline::after(options_.timeout_s)));
    }
  }
  for (int k = 0; k < plan_.servers(); ++k)
    PST_RETURN_IF_ERROR(
        await_reply(k, request, wire::Kind::PUSH_ACK, fmt::format("the acknowledgement of the push of step {}", version))
            .status());
  if (!latch.wait(Deadline::after(options_.timeout_s)))
    return deadline_exceeded("push of step {}: the transport still holds the gradient after {} s", version,
                             options_.timeout_s);
  return Status();
}

Result<PullInfo> RemoteParameterClient::pull(int64_t min_version, float* weights) {
  const int32_t rank = options_.layout.worker_rank(options_.worker);
  const uint64_t request = next_request_++;
  for (int k = 0; k < plan_.servers(); ++k) {
    OutMessage m(wire::Kind::PULL, options_.job_id, rank, min_version, request);
    PST_RETURN_IF_ERROR(servers_[static_cast<size_t>(k)]->send(m.finish(), Deadline::after(options_.timeout_s)));
  }
  PullInfo info;
  info.version = INT64_MAX;
  for (int k = 0; k < plan_.servers(); ++k) {
    PST_ASSIGN_OR_RETURN(auto m, await_reply(k, request, wire::Kind::PULL_REPLY,
                                             fmt::format("weights of version {}", min_version)));
    size_t expected = 0;
    for (const Chunk& c : plan_.chunks()) expected += c.server == k ? 1 : 0;
    if (m->chunks() != expected)
      return data_loss("{}: weights of version {} in {} chunks; it owns {}", servers_[static_cast<size_t>(k)]->peer(),
                       min_version, m->chunks(), expected);
    for (size_t i = 0; i < m->chunks(); ++i) {
      const Chunk* c = plan_.find(m->key(i));  // validate() checked it exists, is k's and has the right size
      std::copy_n(m->chunk_data(i), c->length, weights + c->begin);
    }
    const auto s = m->header().getStepInfo();
    info.version = std::min<int64_t>(info.version, m->header().getStep());
    info.applied = s.getApplied();
    info.applied_steps = s.getAppliedSteps();
    info.grad_norm = s.getGradNorm();
    info.clip_coef = s.getClipCoef();
    info.lr = s.getLr();
  }
  return info;
}

Status RemoteParameterClient::shutdown() {
  const int32_t rank = options_.layout.worker_rank(options_.worker);
  for (int k = 0; k < plan_.servers(); ++k) {
    OutMessage m(wire::Kind::SHUTDOWN, options_.job_id, rank, 0, next_request_++);
    PST_RETURN_IF_ERROR(servers_[static_cast<size_t>(k)]->send(m.finish(), Deadline::after(options_.timeout_s)));
  }
  return Status();
}

}  // namespace pst
