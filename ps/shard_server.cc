#include "ps/shard_server.h"

#include <spdlog/spdlog.h>

#include <fmt/format.h>

namespace pst {
namespace {

uint64_t key_id(ChunkKey k) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(k.tensor)) << 32) | static_cast<uint32_t>(k.chunk);
}

}  // namespace

ShardServer::ShardServer(const JobConfig& job, const ParamTable& table, const ShardPlan& plan, const float* initial,
                         GradStatsReducer* reducer, zmq::context_t& context, std::unique_ptr<Router> router,
                         ShardServerOptions options, Backend* device)
    : table_(table),
      plan_(plan),
      reducer_(reducer),
      options_(options),
      opt_(job, table, plan.owned(options.server), initial, device),
      router_(std::move(router)),
      notify_recv_(context, zmq::socket_type::pair),
      notify_send_(context, zmq::socket_type::pair),
      pushed_(static_cast<size_t>(options.layout.workers), false),
      clocks_(static_cast<size_t>(options.layout.workers), 0),
      finished_(static_cast<size_t>(options.layout.workers), false) {
  for (const Chunk& c : plan_.chunks()) {
    if (c.server != options_.server) continue;
    range_of_key_[key_id(c.key)] = owned_chunks_.size();
    owned_chunks_.push_back(c);
  }
  const std::string name = fmt::format("inproc://pst-update-{}", static_cast<const void*>(this));
  notify_recv_.set(zmq::sockopt::linger, 0);
  notify_send_.set(zmq::sockopt::linger, 0);
  notify_recv_.bind(name);
  notify_send_.connect(name);
  take_snapshot();
  update_thread_ = std::thread([this] { update_loop(); });
}

ShardServer::~ShardServer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  update_thread_.join();
}

Status ShardServer::serve() {
  Status s = serve_until_done();
  if (!s.ok()) {
    // Workers waiting for weights learn why, and whom the server waited for,
    // instead of waiting out their own deadline.
    for (PendingPull& p : pending_)
      (void)router_->send(p.route,
                          error_reply({wire::ErrorCode::INTERNAL, s.message()}, options_.job_id,
                                      options_.layout.server_rank(options_.server), nullptr),
                          Deadline::after(1));
    pending_.clear();
  }
  return s;
}

Status ShardServer::serve_until_done() {
  const int workers = options_.layout.workers;
  Deadline deadline = Deadline::after(options_.timeout_s);
  while (!(shutdowns_ == workers && !updating_ && queued_.empty())) {
    zmq::pollitem_t items[2] = {{router_->socket().handle(), 0, ZMQ_POLLIN, 0},
                                {notify_recv_.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 2, std::chrono::milliseconds(updating_ ? -1 : deadline.remaining_ms()));
    if (items[1].revents & ZMQ_POLLIN) {
      zmq::message_t done;
      (void)notify_recv_.recv(done, zmq::recv_flags::dontwait);
      PST_RETURN_IF_ERROR(finish_update());
      deadline = Deadline::after(options_.timeout_s);
    }
    if (items[0].revents & ZMQ_POLLIN) {
      auto msg = router_->receive(Deadline::after(0), "a message");
      // Only pushes and shutdowns are progress: a worker that keeps asking
      // for weights must not hide another that stopped pushing.
      if (msg.ok() && handle(std::move(*msg))) deadline = Deadline::after(options_.timeout_s);
    }
    if (!error_.ok()) return error_;
    // While updating, the update thread's own deadline bounds the wait.
    if (deadline.expired() && !updating_) {
      if (options_.consistency != Consistency::kBsp)
        return deadline_exceeded("server {}: no message for {} s from any worker (at version {}; {} of {} workers "
                                 "finished)",
                                 options_.server, options_.timeout_s, version_, shutdowns_, workers);
      std::string missing;
      for (int w = 0; w < workers; ++w)
        if (!pushed_[static_cast<size_t>(w)])
          missing += fmt::format("{}worker {} (rank {})", missing.empty() ? "" : ", ", w, options_.layout.worker_rank(w));
      return deadline_exceeded("server {}: no message for {} s while waiting for pushes of step {} from {}",
                               options_.server, options_.timeout_s, version_, missing);
    }
  }
  return Status();
}

bool ShardServer::handle(Routed msg) {
  Rejection why;
  auto m = InMessage::parse(std::move(msg.frames), &why);
  if (!m) {
    error_ = reject(msg.route, why, nullptr);
    return false;
  }
  const Expectation e{options_.job_id, options_.layout.nodes(), &plan_, options_.server};
  if (!validate(*m, e, &why)) {
    error_ = reject(msg.route, why, m.get());
    return false;
  }
  const wire::Kind kind = m->header().getKind();
  if ((kind == wire::Kind::PUSH || kind == wire::Kind::PULL || kind == wire::Kind::SHUTDOWN) &&
      !options_.layout.is_worker(m->header().getSender())) {
    error_ = reject(msg.route,
                    {wire::ErrorCode::UNKNOWN_SENDER,
                     fmt::format("{} from rank {}, which is not a worker", kind_name(kind), m->header().getSender())},
                    m.get());
    return false;
  }
  switch (kind) {
    case wire::Kind::PUSH: error_ = on_push(msg.route, std::move(m)); break;
    case wire::Kind::PULL: error_ = on_pull(std::move(msg.route), *m); break;
    case wire::Kind::SHUTDOWN: {
      const size_t w = static_cast<size_t>(options_.layout.worker_index(m->header().getSender()));
      if (!finished_[w]) {
        finished_[w] = true;
        ++shutdowns_;
        error_ = answer_ready_pulls();  // the slowest live worker may have changed
      }
      break;
    }
    case wire::Kind::HEARTBEAT: break;
    default:
      error_ = reject(msg.route,
                      {wire::ErrorCode::BAD_KIND, fmt::format("a server does not take {} messages", kind_name(kind))},
                      m.get());
  }
  return kind == wire::Kind::PUSH || kind == wire::Kind::SHUTDOWN;
}

Status ShardServer::reject(const zmq::message_t& route, const Rejection& why, const InMessage* m) {
  ++rejected_;
  spdlog::warn("server {}: rejected a message: {}", options_.server, why.message);
  const Status s = router_->send(route, error_reply(why, options_.job_id, options_.layout.server_rank(options_.server), m),
                                 Deadline::after(options_.timeout_s));
  if (!s.ok()) spdlog::warn("server {}: could not send the error reply: {}", options_.server, s.message());
  return Status();  // a bad peer never stops the server
}

bool ShardServer::push_ranges(const InMessage& m, std::vector<const float*>* ranges, Rejection* why) const {
  const int64_t step = m.header().getStep();
  const int w = options_.layout.worker_index(m.header().getSender());
  if (m.chunks() != owned_chunks_.size()) {
    *why = {wire::ErrorCode::BAD_HEADER, fmt::format("push of step {} from worker {} has {} chunks; server {} owns {}",
                                                     step, w, m.chunks(), options_.server, owned_chunks_.size())};
    return false;
  }
  ranges->assign(owned_chunks_.size(), nullptr);
  for (size_t i = 0; i < m.chunks(); ++i) {
    const size_t r = range_of_key_.at(key_id(m.key(i)));  // validate() checked ownership
    if ((*ranges)[r]) {
      *why = {wire::ErrorCode::BAD_HEADER, fmt::format("push of step {} from worker {} repeats chunk {}", step, w,
                                                       plan_.describe(m.key(i), table_[m.key(i).tensor].name))};
      return false;
    }
    (*ranges)[r] = m.chunk_data(i);
  }
  return true;
}

Status ShardServer::on_push(const zmq::message_t& route, std::unique_ptr<InMessage> message) {
  const InMessage& m = *message;
  const int64_t step = m.header().getStep();
  const int w = options_.layout.worker_index(m.header().getSender());
  const bool bsp = options_.consistency == Consistency::kBsp;
  if (bsp && (step != version_ || updating_))
    return reject(route,
                  {wire::ErrorCode::BAD_STEP, fmt::format("push of step {} from worker {}; server {} takes step {}{}",
                                                          step, w, options_.server, version_,
                                                          updating_ ? " and is applying it" : "")},
                  &m);
  if (!bsp && step > version_)
    return reject(route,
                  {wire::ErrorCode::BAD_STEP, fmt::format("push from worker {} computed on version {}; server {} has "
                                                          "made only {}",
                                                          w, step, options_.server, version_)},
                  &m);
  if (bsp && pushed_[static_cast<size_t>(w)])
    return reject(route, {wire::ErrorCode::BAD_STEP, fmt::format("second push of step {} from worker {}", step, w)},
                  &m);
  std::vector<const float*> ranges;
  Rejection why;
  if (!push_ranges(m, &ranges, &why)) return reject(route, why, &m);
  if (bsp) {
    const auto push = m.header().getPush();
    opt_.add_push_ranges(ranges, push.getTokens(), push.getLossSum(), w);
    pushed_[static_cast<size_t>(w)] = true;
    ++pushes_;
  }
  OutMessage ack(wire::Kind::PUSH_ACK, options_.job_id, options_.layout.server_rank(options_.server), step,
                 m.header().getRequestId());
  ack.header().initStepInfo();
  PST_RETURN_IF_ERROR(router_->send(route, ack.finish(), Deadline::after(options_.timeout_s)));
  if (bsp) {
    if (pushes_ == options_.layout.workers) start_update();
    return Status();
  }
  // ASP, SSP: each push is its own update, in arrival order.
  ++clocks_[static_cast<size_t>(w)];
  queued_.push_back(std::move(message));
  if (!updating_) start_next_async();
  return answer_ready_pulls();  // a slow worker's push may release others
}

void ShardServer::start_next_async() {
  std::unique_ptr<InMessage> m = std::move(queued_.front());
  queued_.erase(queued_.begin());
  std::vector<const float*> ranges;
  Rejection why;
  PST_CHECK(push_ranges(*m, &ranges, &why));  // checked when it arrived
  max_staleness_ = std::max(max_staleness_, version_ - m->header().getStep());
  const auto push = m->header().getPush();
  opt_.add_push_ranges(ranges, push.getTokens(), push.getLossSum(), 0);
  start_update();
}

int64_t ShardServer::slowest_live_clock() const {
  int64_t slowest = INT64_MAX;
  for (size_t w = 0; w < clocks_.size(); ++w)
    if (!finished_[w]) slowest = std::min(slowest, clocks_[w]);
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
      PST_RETURN_IF_ERROR(answer_pull(p.route, p.request_id, p.worker));
    } else {
      still.push_back(std::move(p));
    }
  }
  pending_ = std::move(still);
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
  if (pull_allowed(want, w)) return answer_pull(route, m.header().getRequestId(), w);
  pending_.push_back({std::move(route), m.header().getRequestId(), want, w});
  return Status();
}

Status ShardServer::answer_pull(const zmq::message_t& route, uint64_t request_id, int worker) {
  if (options_.consistency != Consistency::kBsp) {
    const int64_t slowest = slowest_live_clock();
    if (slowest != INT64_MAX) max_lead_ = std::max(max_lead_, clocks_[static_cast<size_t>(worker)] - slowest);
  }
  OutMessage reply(wire::Kind::PULL_REPLY, options_.job_id, options_.layout.server_rank(options_.server), version_,
                   request_id);
  auto info = reply.header().initStepInfo();
  info.setApplied(last_.applied || version_ == 0);
  info.setAppliedSteps(opt_.applied_steps());
  info.setGradNorm(last_.grad_norm);
  info.setClipCoef(last_.clip_coef);
  info.setLr(last_.lr);
  for (size_t i = 0; i < owned_chunks_.size(); ++i)
    reply.add_chunk(owned_chunks_[i].key, snapshot_->data() + opt_.local_offset(i), owned_chunks_[i].length, snapshot_);
  return router_->send(route, reply.finish(), Deadline::after(options_.timeout_s));
}

void ShardServer::start_update() {
  updating_ = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    update_requested_ = true;
  }
  cv_.notify_all();
}

void ShardServer::update_loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return update_requested_ || stop_; });
      if (stop_) return;
      update_requested_ = false;
    }
    // The receive thread leaves opt_ alone while updating_ is set.
    const GradStats local = opt_.reduce();
    const bool bsp = options_.consistency == Consistency::kBsp;
    Result<GradStats> global = local;
    // Another server may wait timeout_s for a worker before it gives up, and
    // the scheduler judges a silent node within timeout_s and a heartbeat:
    // waiting twice that lets their verdict, which names the culprit, arrive.
    if (bsp)
      global = reducer_->all_reduce(options_.server, opt_.version(), local, Deadline::after(2 * options_.timeout_s));
    Status status;
    StepReport report;
    if (global.ok()) {
      report = opt_.apply(*global, /*clip=*/bsp);
    } else {
      status = global.status();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      update_status_ = status;
      update_report_ = report;
    }
    zmq::message_t done(1);
    (void)notify_send_.send(done, zmq::send_flags::none);
  }
}

Status ShardServer::finish_update() {
  Status status;
  StepReport report;
  {
    std::lock_guard<std::mutex> lock(mu_);
    status = update_status_;
    report = update_report_;
  }
  updating_ = false;
  PST_RETURN_IF_ERROR(status);
  last_ = report;
  version_ = report.version;
  take_snapshot();
  std::fill(pushed_.begin(), pushed_.end(), false);
  pushes_ = 0;
  PST_RETURN_IF_ERROR(answer_ready_pulls());
  if (!queued_.empty()) start_next_async();
  return Status();
}

void ShardServer::take_snapshot() {
  // Pull replies send the snapshot without copying; a snapshot still held by
  // ZeroMQ stays untouched and a fresh one is made.
  if (!snapshot_ || snapshot_.use_count() > 1)
    snapshot_ = std::make_shared<std::vector<float>>(static_cast<size_t>(opt_.local_size()));
  opt_.copy_local_weights(snapshot_->data());
}

}  // namespace pst
