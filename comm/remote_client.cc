#include "comm/remote_client.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>

#include <fmt/format.h>

#include "core/stop.h"

namespace pst {
namespace {

// Parts of a push up to this size are sent as copies (send_part).
constexpr int64_t kCopiedPushBytes = 32 << 10;

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
  // False when the deadline passes first, or `interrupt` (may be null) is
  // raised: looked at every 50 ms, as the sockets' waits do (comm/socket.h).
  bool wait(Deadline deadline, const Interrupt* interrupt = nullptr) {
    std::unique_lock<std::mutex> lock(state_->mu);
    const auto done = [&] { return state_->released; };
    if (interrupt == nullptr && deadline.is_never()) {
      state_->cv.wait(lock, done);
      return true;
    }
    while (true) {
      if (interrupt != nullptr && interrupt->raised()) return state_->released;
      const long ms = wait_slice_ms(deadline, interrupt);
      if (state_->cv.wait_for(lock, std::chrono::milliseconds(ms), done)) return true;
      if (deadline.expired()) return false;
    }
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

struct RemoteParameterClient::PushState {
  int64_t version = 0, tokens = 0;
  double loss_sum = 0.0;
  bool stop = false;  // this process was asked to stop: the job stops after this step
  const float* grads = nullptr;
  uint64_t request = 0;
  std::vector<size_t> unsent;  // per server: chunks [0, unsent) not sent yet
  std::vector<int> parts;      // per server: parts sent
  ReleaseLatch latch;
  std::shared_ptr<const void> token;  // on every frame; the latch opens when the last goes
};

RemoteParameterClient::RemoteParameterClient(const ShardPlan& plan, RemoteClientOptions options)
    : plan_(plan), options_(options), owned_(static_cast<size_t>(plan.servers())) {
  for (const Chunk& c : plan_.chunks()) {
    owned_[static_cast<size_t>(c.server)].push_back(c);
    flat_size_ = std::max(flat_size_, c.begin + c.length);
  }
}

RemoteParameterClient::~RemoteParameterClient() = default;

Result<std::unique_ptr<RemoteParameterClient>> RemoteParameterClient::connect(
    zmq::context_t& context, const ShardPlan& plan, const std::vector<std::string>& server_endpoints,
    RemoteClientOptions options) {
  if (static_cast<int>(server_endpoints.size()) != plan.servers())
    return invalid_argument("remote client: {} server endpoints for a plan of {} servers", server_endpoints.size(),
                            plan.servers());
  std::vector<std::unique_ptr<Channel>> channels;
  for (size_t k = 0; k < server_endpoints.size(); ++k) {
    PST_ASSIGN_OR_RETURN(
        auto d, Dealer::connect(context, server_endpoints[k], fmt::format("server {} ({})", k, server_endpoints[k])));
    channels.push_back(std::move(d));
  }
  return connect(plan, std::move(channels), options);
}

Result<std::unique_ptr<RemoteParameterClient>> RemoteParameterClient::connect(
    const ShardPlan& plan, std::vector<std::unique_ptr<Channel>> servers, RemoteClientOptions options) {
  if (static_cast<int>(servers.size()) != plan.servers())
    return invalid_argument("remote client: {} servers for a plan of {} servers", servers.size(), plan.servers());
  std::unique_ptr<RemoteParameterClient> c(new RemoteParameterClient(plan, options));
  for (auto& d : servers) d->watch(options.interrupt);
  c->servers_ = std::move(servers);
  return c;
}

Result<std::unique_ptr<InMessage>> RemoteParameterClient::await_reply(int k, uint64_t request_id, wire::Kind kind,
                                                                      const std::string& what) {
  Channel& d = *servers_[static_cast<size_t>(k)];
  // A server may wait timeout_s for the slowest worker before it gives up
  // and says whom it waited for; waiting twice that lets its answer arrive.
  const Deadline deadline =
      Deadline::after(kind == wire::Kind::PULL_REPLY ? 2 * options_.timeout_s : options_.timeout_s);
  while (true) {
    PST_ASSIGN_OR_RETURN(Frames frames, d.receive(deadline, what));
    Rejection why;
    auto m = InMessage::parse(std::move(frames), &why);
    const Expectation e{options_.job_id, options_.layout.nodes(), &plan_, k};
    if (!m || !validate(*m, e, &why))
      return data_loss("{}: a bad reply while waiting for {}: {}", d.peer(), what, why.message);
    if (m->header().getSender() != options_.layout.server_rank(k))
      return data_loss("{}: a reply from rank {} while waiting for {}", d.peer(), m->header().getSender(), what);
    const uint64_t answers = m->header().getRequestId();
    if (m->header().getKind() == wire::Kind::ERROR)
      return refused(m->header().getError(), fmt::format("{} rejected {}", d.peer(),
                                                         unacked_.request != 0 && answers == unacked_.request
                                                             ? fmt::format("the push of step {}", unacked_.version)
                                                             : what));
    if (m->header().getKind() == wire::Kind::PUSH_ACK && unacked_.request != 0 && answers == unacked_.request &&
        unacked_.parts[static_cast<size_t>(k)] > 0) {
      --unacked_.parts[static_cast<size_t>(k)];  // the finished push's, taken whenever it comes
      if (answers == request_id) return m;
      continue;
    }
    if (answers != request_id) continue;  // a late answer to an earlier request
    if (m->header().getKind() != kind)
      return data_loss("{}: a {} reply while waiting for {}", d.peer(), kind_name(m->header().getKind()), what);
    return m;
  }
}

Status RemoteParameterClient::push(int64_t version, int64_t tokens, double loss_sum, const float* grads) {
  PST_RETURN_IF_ERROR(begin_push(version, tokens, loss_sum, grads));
  return finish_push();
}

Status RemoteParameterClient::take_acks() {
  if (unacked_.request == 0) return Status();
  const std::string what = fmt::format("the acknowledgement of the push of step {}", unacked_.version);
  for (int k = 0; k < plan_.servers(); ++k)
    while (unacked_.parts[static_cast<size_t>(k)] > 0)
      if (Status acked = await_reply(k, unacked_.request, wire::Kind::PUSH_ACK, what).status(); !acked.ok()) {
        unacked_ = Unacked{};
        return acked;
      }
  unacked_ = Unacked{};
  return Status();
}

Status RemoteParameterClient::begin_push(int64_t version, int64_t tokens, double loss_sum, const float* grads) {
  PST_CHECK_MSG(!push_, "begin_push() while the push of step {} is unfinished", push_ ? push_->version : 0);
  PST_RETURN_IF_ERROR(take_acks());  // the previous push's, when no pull took them
  push_ = std::make_unique<PushState>();
  PushState& p = *push_;
  p.version = version;
  p.tokens = tokens;
  p.loss_sum = loss_sum;
  p.stop = stop_wanted();
  p.grads = grads;
  p.request = next_request_++;
  for (const auto& chunks : owned_) p.unsent.push_back(chunks.size());
  p.parts.assign(owned_.size(), 0);
  p.token = p.latch.token();
  if (options_.bf16_wire && (!push_bf16_ || push_bf16_.use_count() > 1))
    push_bf16_ = std::make_shared<std::vector<uint16_t>>(static_cast<size_t>(flat_size_));
  return Status();
}

Status RemoteParameterClient::send_part(int k, size_t first) {
  PushState& p = *push_;
  const size_t ks = static_cast<size_t>(k);
  OutMessage m(wire::Kind::PUSH, options_.job_id, options_.layout.worker_rank(options_.worker), p.version, p.request);
  auto h = m.header().initPush();
  h.setTokens(p.tokens);
  h.setLossSum(p.loss_sum);
  h.setStop(p.stop);
  int64_t floats = 0;
  for (size_t i = first; i < p.unsent[ks]; ++i) floats += owned_[ks][i].length;
  // A small part travels as a copy: the push then needs no word from
  // ZeroMQ's I/O thread that the gradient is free (a wake-up of this thread,
  // which costs more than copying a few kilobytes).
  const bool copy = floats * int64_t{sizeof(float)} <= kCopiedPushBytes;
  for (size_t i = first; i < p.unsent[ks]; ++i) {
    const Chunk& c = owned_[ks][i];
    if (copy && !options_.bf16_wire) {
      m.add_chunk_copy(c.key, p.grads + c.begin, c.length);
    } else if (options_.bf16_wire) {
      // The frame carries a rounded copy: the caller's gradient is free again at once.
      uint16_t* rounded = push_bf16_->data() + c.begin;
      if (options_.stochastic_rounding) {
        const Philox bits(options_.rounding_seed, stochastic_rounding_stream(p.version, options_.worker));
        to_bf16_stochastic(p.grads + c.begin, rounded, c.length, bits, static_cast<uint64_t>(c.begin));
      } else {
        to_bf16(p.grads + c.begin, rounded, c.length);
      }
      m.add_chunk_bf16(c.key, rounded, c.length, push_bf16_);
    } else {
      m.add_chunk(c.key, p.grads + c.begin, c.length, p.token);
    }
  }
  p.unsent[ks] = first;
  ++p.parts[ks];
  return servers_[ks]->send(m.finish(), Deadline::after(options_.timeout_s));
}

Status RemoteParameterClient::push_final(int64_t begin) {
  PST_CHECK_MSG(push_ != nullptr, "push_final() without begin_push()");
  for (int k = 0; k < plan_.servers(); ++k) {
    const auto& chunks = owned_[static_cast<size_t>(k)];
    size_t first = push_->unsent[static_cast<size_t>(k)];
    while (first > 0 && chunks[first - 1].begin >= begin) --first;
    if (first < push_->unsent[static_cast<size_t>(k)])
      if (Status sent = send_part(k, first); !sent.ok()) return abandon_push(std::move(sent));
  }
  return Status();
}

Status RemoteParameterClient::abandon_push(Status why) {
  std::unique_ptr<PushState> p = std::move(push_);
  if (!p) return why;
  p->token.reset();
  // ZeroMQ may still hold frames that point at the caller's gradient, which
  // the caller frees once this returns: wait until it lets go of them. A
  // server that takes nothing more keeps them queued: closing the sockets
  // (linger 0) drops them, and the client is not used again.
  if (!p->latch.wait(Deadline::after(1))) {
    for (auto& d : servers_) d->close();
    if (!p->latch.wait(Deadline::after(options_.timeout_s)))
      PST_CHECK_MSG(false, "push of step {}: the transport still holds the gradient {} s after its sockets closed",
                    p->version, options_.timeout_s);
  }
  return why;
}

Status RemoteParameterClient::finish_push() {
  PST_CHECK_MSG(push_ != nullptr, "finish_push() without begin_push()");
  for (int k = 0; k < plan_.servers(); ++k) {
    // What is left; a server that owns nothing gets one empty part.
    const size_t ks = static_cast<size_t>(k);
    if (push_->unsent[ks] > 0 || push_->parts[ks] == 0)
      if (Status sent = send_part(k, 0); !sent.ok()) return abandon_push(std::move(sent));
  }
  // The acknowledgements are not waited for here: the pull that follows is
  // sent at once and takes them as they come (each server answers a
  // worker's messages in order, so they arrive before its weights), which
  // saves a round trip a step.
  unacked_ = Unacked{push_->request, push_->version, push_->parts};
  std::unique_ptr<PushState> done = std::move(push_);
  done->token.reset();
  // A server killed while the push was on its way keeps its frames queued:
  // when the job re-forms meanwhile (options_.interrupt), the push is
  // abandoned at once, so this worker registers again in time, rather than
  // after timeout_s.
  if (done->latch.wait(Deadline::after(options_.timeout_s), options_.interrupt)) return Status();
  if (options_.interrupt != nullptr && options_.interrupt->raised()) {
    push_ = std::move(done);
    return abandon_push(options_.interrupt->why());
  }
  return deadline_exceeded("push of step {}: the transport still holds the gradient after {} s", done->version,
                           options_.timeout_s);
}

Result<StepReport> RemoteParameterClient::pull(int64_t min_version, float* weights) {
  PST_ASSIGN_OR_RETURN(StepReport info, begin_pull(min_version, weights));
  PST_RETURN_IF_ERROR(await_weights(INT64_MAX));
  return info;
}

Result<StepReport> RemoteParameterClient::pull_exact(int64_t min_version, float* weights) {
  exact_ = true;
  Result<StepReport> info = pull(min_version, weights);
  exact_ = false;
  return info;
}

Status RemoteParameterClient::receive_pull_part(int k, StepReport* info) {
  const size_t ks = static_cast<size_t>(k);
  Channel& d = *servers_[ks];
  PST_ASSIGN_OR_RETURN(auto m, await_reply(k, pull_request_, wire::Kind::PULL_REPLY,
                                           fmt::format("weights of version {}", pull_min_version_)));
  const auto& chunks = owned_[ks];
  size_t& next = pull_next_[ks];
  if (m->chunks() == 0 && !chunks.empty())
    return data_loss("{}: an empty part of the weights of version {}", d.peer(), pull_min_version_);
  const int64_t version = m->header().getStep();
  if (next == 0) {
    pull_versions_[ks] = version;
  } else if (version != pull_versions_[ks]) {
    return data_loss("{}: parts of versions {} and {} in one pull", d.peer(), pull_versions_[ks], version);
  }
  for (size_t i = 0; i < m->chunks(); ++i) {
    // validate() checked that the chunk exists, is k's and has the right size;
    // parts carry k's chunks once each, in flat order.
    if (next >= chunks.size() || !(m->key(i) == chunks[next].key))
      return data_loss("{}: chunk {} of the weights of version {} out of order (expected {})", d.peer(),
                       plan_.describe(m->key(i), ""), pull_min_version_,
                       next < chunks.size() ? plan_.describe(chunks[next].key, "") : "no more");
    const WireValues values = m->chunk_values(i);
    if (values.bf16 != pull_bf16_)
      return data_loss("{}: {} weights in the answer to a pull of {} ones", d.peer(),
                       values.bf16 ? "bfloat16" : "float32", pull_bf16_ ? "bfloat16" : "float32");
    to_fp32(values, pull_weights_ + chunks[next].begin, chunks[next].length);
    ++next;
  }
  if (info) {
    const bool stop = info->stop;  // any server's
    *info = from_wire(m->header().getStepInfo());
    info->version = version;
    info->stop = info->stop || stop;
  }
  return Status();
}

Result<StepReport> RemoteParameterClient::begin_pull(int64_t min_version, float* weights) {
  PST_CHECK_MSG(pull_weights_ == nullptr, "begin_pull() while the pull of version {} is unfinished", pull_min_version_);
  const int32_t rank = options_.layout.worker_rank(options_.worker);
  pull_request_ = next_request_++;
  pull_min_version_ = min_version;
  pull_bf16_ = options_.bf16_wire && !exact_;
  pull_weights_ = weights;
  pull_next_.assign(owned_.size(), 0);
  pull_versions_.assign(owned_.size(), 0);
  for (int k = 0; k < plan_.servers(); ++k) {
    OutMessage m(wire::Kind::PULL, options_.job_id, rank, min_version, pull_request_);
    m.header().setDtype(pull_bf16_ ? wire::DType::BFLOAT16 : wire::DType::FLOAT32);
    PST_RETURN_IF_ERROR(servers_[static_cast<size_t>(k)]->send(m.finish(), Deadline::after(options_.timeout_s)));
  }
  // Every server's first part: the version and what the step did.
  StepReport info;
  int64_t version = INT64_MAX;
  // (BSP servers answer the same version; ASP/SSP servers may differ, and
  // the pull reports the oldest.)
  for (int k = 0; k < plan_.servers(); ++k) {
    PST_RETURN_IF_ERROR(receive_pull_part(k, &info));
    version = std::min(version, info.version);
  }
  info.version = version;
  return info;
}

Status RemoteParameterClient::await_weights(int64_t end) {
  if (pull_weights_ == nullptr) return Status();
  for (int k = 0; k < plan_.servers(); ++k) {
    const size_t ks = static_cast<size_t>(k);
    while (pull_next_[ks] < owned_[ks].size() && owned_[ks][pull_next_[ks]].begin < end)
      PST_RETURN_IF_ERROR(receive_pull_part(k, nullptr));
  }
  bool complete = true;
  for (size_t k = 0; k < owned_.size(); ++k) complete = complete && pull_next_[k] == owned_[k].size();
  if (!complete) return Status();
  pull_weights_ = nullptr;
  return take_acks();  // came before the weights; none left to wait for
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
