#include "ps/shard_server.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/stop.h"

namespace pst {
namespace {

uint64_t key_id(ChunkKey k) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(k.tensor)) << 32) | static_cast<uint32_t>(k.chunk);
}

// The update thread tells the receive loop how far it got: owned chunks
// written to the next snapshot (>= 0), or kUpdateDone; kRemovals wakes it
// to look at removals and re-forms (remove_workers(), reform()).
constexpr int64_t kUpdateDone = -1;
constexpr int64_t kRemovals = -2;

// Messages the receive loop takes from the router before it looks at the
// notes again.
constexpr int kQueuedAtOnce = 64;

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string checkpoint_root(const JobConfig& job) {
  return job.checkpoint.dir.empty() ? job.train.output + "/checkpoints" : job.checkpoint.dir;
}

ShardServerOptions shard_server_options(const JobConfig& job, uint64_t job_id, int server, JobLayout layout) {
  ShardServerOptions o;
  o.job_id = job_id;
  o.server = server;
  o.layout = layout;
  o.timeout_s = job.cluster.timeout_s;
  o.consistency = job.cluster.consistency;
  o.staleness = job.cluster.staleness;
  // BSP servers stream whatever cluster.overlap says: the workers wait for
  // their pulls while the update runs, so sending its finished chunks then
  // takes no cycles from compute (overlap decides what the workers do).
  o.stream_bytes = job.cluster.stream_bytes;
  o.checkpoint_root = checkpoint_root(job);
  o.checkpoint_every = job.checkpoint.every_steps;
  o.checkpoint_minutes = job.checkpoint.every_minutes;
  o.checkpoint_keep = job.checkpoint.keep;
  o.stop_on_checkpoint_failure = job.checkpoint.on_failure == CheckpointFailure::kStop;
  if (job.checkpoint.every_steps > 0 || job.checkpoint.every_minutes > 0) o.final_step = job.train.steps;
  o.max_minutes = job.train.max_minutes;
  o.bf16_wire = job.cluster.wire == WireFormat::kBf16;
  return o;
}

ShardServer::ShardServer(const JobConfig& job, const ParamTable& table, const ShardPlan& plan, const float* initial,
                         GradStatsReducer* reducer, std::unique_ptr<Router> router, ShardServerOptions options,
                         Backend* device)
    : table_(table),
      plan_(plan),
      reducer_(reducer),
      options_(options),
      opt_(job, table, plan.owned(options.server), initial, device),
      router_(std::move(router)),
      rejecter_(options.job_id, options.layout.server_rank(options.server), fmt::format("server {}", options.server),
                [metrics = options.metrics](const char* reason) {
                  if (metrics) metrics->rejected(reason);
                }),
      senders_(options.layout.nodes()),
      told_(static_cast<size_t>(options.layout.servers), -1),
      pushed_(static_cast<size_t>(options.layout.workers), false),
      partial_(static_cast<size_t>(options.layout.workers)),
      clocks_(static_cast<size_t>(options.layout.workers), 0),
      finished_(static_cast<size_t>(options.layout.workers), false),
      removed_(static_cast<size_t>(options.layout.workers), false),
      process_(static_cast<size_t>(options.layout.workers), 0),
      cursor_(options.layout.workers, DataPool{}) {
  // Places beyond the starting workers are free until a worker joins.
  never_.assign(removed_.size(), false);
  for (int w = options_.start_workers; w > 0 && w < options_.layout.workers; ++w)
    removed_[static_cast<size_t>(w)] = never_[static_cast<size_t>(w)] = true;
  last_contributors_ = members();
  last_checkpoint_ns_ = steady_ns();
  job_toml_ = to_toml(job);
  seed_ = static_cast<uint64_t>(job.train.seed);
  for (const Chunk& c : plan_.chunks()) {
    if (c.server != options_.server) continue;
    range_of_key_[key_id(c.key)] = owned_chunks_.size();
    owned_chunks_.push_back(c);
  }
  cursor_.assign(members());
  batches_ = cursor_.batches();
  snapshot_ = new_snapshot();
  fill_snapshot(*snapshot_, 0, owned_chunks_.size());
  update_thread_ = std::thread([this] { update_loop(); });
}

ShardServer::~ShardServer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  update_thread_.join();
  if (checkpoint_thread_.joinable()) checkpoint_thread_.join();
}

void ShardServer::restore(const ShardState& state, int64_t version, int64_t applied_steps, const DataPool& pool) {
  PST_CHECK_MSG(static_cast<int64_t>(state.weights.size()) == opt_.local_size(), "restore: {} floats for a shard of {}",
                state.weights.size(), opt_.local_size());
  opt_.import_state(state.weights.data(), state.exp_avg.data(), state.exp_avg_sq.data(), version, applied_steps);
  version_ = version;
  last_ = StepReport{};
  last_.version = version;
  last_.applied = true;
  last_.applied_steps = applied_steps;
  fill_snapshot(*snapshot_, 0, owned_chunks_.size());
  cursor_ = DataCursor(options_.layout.workers, pool);
  cursor_.assign(members());
  batches_ = cursor_.batches();
}

ShardServer::Snapshot ShardServer::new_snapshot() const {
  auto s = std::make_shared<Weights>();
  s->fp32.resize(static_cast<size_t>(opt_.local_size()));
  if (options_.bf16_wire) s->bf16.resize(static_cast<size_t>(opt_.local_size()));
  return s;
}

void ShardServer::fill_snapshot(Weights& s, size_t first, size_t last) const {
  opt_.copy_local_weights(s.fp32.data(), first, last);
  if (s.bf16.empty() || first >= last) return;
  const int64_t begin = opt_.local_offset(first);
  const int64_t end = opt_.local_offset(last - 1) + opt_.owned()[last - 1].length;
  to_bf16(s.fp32.data() + begin, s.bf16.data() + begin, end - begin);
}

ShardServer::PendingPull ShardServer::pending_pull(zmq::message_t route, const InMessage& m, int worker) {
  PendingPull p{std::move(route), m.header().getRequestId(), m.header().getStep(), worker};
  p.bf16 = m.header().getDtype() == wire::DType::BFLOAT16;
  return p;
}

bool ShardServer::wire_format_ok(const InMessage& m, Rejection* why) const {
  const wire::Kind kind = m.header().getKind();
  const char* wire = options_.bf16_wire ? "bf16" : "fp32";
  if (kind == wire::Kind::PULL && m.header().getDtype() == wire::DType::BFLOAT16 && !options_.bf16_wire) {
    *why = {wire::ErrorCode::BAD_HEADER, fmt::format("a pull of bfloat16 weights; this job's cluster.wire is {} (a "
                                                     "worker's configuration differs from the servers')",
                                                     wire)};
    return false;
  }
  if (kind != wire::Kind::PUSH) return true;
  const wire::DType want = options_.bf16_wire ? wire::DType::BFLOAT16 : wire::DType::FLOAT32;
  for (auto ref : m.chunk_refs())
    if (ref.getDtype() != want) {
      *why = {wire::ErrorCode::SIZE_MISMATCH,
              fmt::format("a push of {} gradients; this job's cluster.wire is {}, so pushes carry {} (a worker's "
                          "configuration differs from the servers')",
                          dtype_name(ref.getDtype()), wire, dtype_name(want))};
      return false;
    }
  return true;
}

std::vector<uint8_t> ShardServer::members() const {
  std::vector<uint8_t> in(removed_.size());
  for (size_t w = 0; w < in.size(); ++w) in[w] = removed_[w] ? 0 : 1;
  return in;
}

void ShardServer::remove_workers(const std::vector<int32_t>& ranks, const std::vector<uint64_t>& processes) {
  std::lock_guard<std::mutex> lock(removal_mu_);
  removals_.insert(removals_.end(), ranks.begin(), ranks.end());
  for (size_t i = 0; i < ranks.size(); ++i) removal_processes_.push_back(i < processes.size() ? processes[i] : 0);
  notes_.post(kRemovals);
}

void ShardServer::scheduler_lost(const std::string& why) {
  scheduler_lost_ = true;
  reducer_->abandon(why);
}

void ShardServer::reform(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(removal_mu_);
    if (reform_) return;
    reform_why_ = why;
    reform_ = true;
    notes_.post(kRemovals);  // wakes the receive thread
  }
  reducer_->abandon(why);
}

Rejection ShardServer::removed_verdict(int worker) const {
  if (never_[static_cast<size_t>(worker)])
    return {wire::ErrorCode::UNKNOWN_SENDER,
            fmt::format("worker {} (rank {}) is not in the job: its place is free, and a worker takes it only when "
                        "the scheduler admits it (it joins at a step)",
                        worker, options_.layout.worker_rank(worker))};
  return {wire::ErrorCode::UNKNOWN_SENDER,
          fmt::format("worker {} (rank {}) was removed from the job: the scheduler heard nothing from it for longer "
                      "than cluster.heartbeat_s x cluster.heartbeat_misses; a removed worker does not come back "
                      "(a new process may join in its place)",
                      worker, options_.layout.worker_rank(worker))};
}

void ShardServer::refuse(const zmq::message_t& route, const Rejection& why, double seconds) {
  (void)router_->send(route, error_reply(why, options_.job_id, options_.layout.server_rank(options_.server), nullptr),
                      Deadline::after(seconds));
}

void ShardServer::hold_joining_pull(zmq::message_t route, const InMessage& m, int worker) {
  // A bounded list: a flood of pulls from processes that never join is
  // dropped, not kept.
  if (joining_.size() >= 4 * removed_.size()) {
    rejecter_.drop(senders_.spoofed(m.header().getSender(), route));
    return;
  }
  joining_.push_back({pending_pull(std::move(route), m, worker), m.header().getProcess()});
}

void ShardServer::take_joins(const std::vector<Joiner>& joined) {
  for (const Joiner& j : joined) {
    if (!admissible(j)) {
      spdlog::warn("server {}: the scheduler admitted rank {} (process {:x}), not a worker's place; ignored",
                   options_.server, j.rank, j.process);
      continue;
    }
    const size_t w = static_cast<size_t>(options_.layout.worker_index(j.rank));
    removed_[w] = never_[w] = false;
    finished_[w] = false;
    pushed_[w] = false;
    partial_[w] = PartialPush{};
    clocks_[w] = 0;
    process_[w] = j.process;
    senders_.release(j.rank);  // the new process's first message binds the rank
    spdlog::info("server {}: worker {} (rank {}) joins the job at step {}", options_.server, w, j.rank, version_);
    std::erase_if(joining_, [&](JoiningPull& p) {
      if (p.pull.worker != static_cast<int>(w) || p.process != j.process) return false;
      senders_.bind(j.rank, p.pull.route);
      pending_.push_back(std::move(p.pull));
      return true;
    });
  }
  waiting_pulls_ = static_cast<int64_t>(pending_.size());
}

int ShardServer::ended_workers() const {
  int n = 0;
  for (size_t w = 0; w < finished_.size(); ++w) n += finished_[w] || removed_[w] ? 1 : 0;
  return n;
}

bool ShardServer::round_complete() const {
  for (size_t w = 0; w < pushed_.size(); ++w)
    if (!pushed_[w] && !removed_[w]) return false;
  return true;
}

Status ShardServer::take_removals() {
  std::vector<int32_t> ranks;
  std::vector<uint64_t> processes;
  {
    std::lock_guard<std::mutex> lock(removal_mu_);
    ranks.swap(removals_);
    processes.swap(removal_processes_);
  }
  bool changed = false;
  for (size_t i = 0; i < ranks.size(); ++i) {
    const int32_t rank = ranks[i];
    if (!options_.layout.is_worker(rank)) continue;
    const size_t w = static_cast<size_t>(options_.layout.worker_index(rank));
    if (removed_[w] || finished_[w]) continue;
    // A list older than a join: the process it removed is not this one.
    if (processes[i] != 0 && process_[w] != 0 && processes[i] != process_[w]) continue;
    removed_[w] = true;
    // Its process (as the scheduler names it, if this server never heard
    // it) is told it was removed when it speaks again.
    if (process_[w] == 0) process_[w] = processes[i];
    if (process_[w] != 0) departed_.push_back(process_[w]);
    changed = true;
    const bool bsp = options_.consistency == Consistency::kBsp;
    spdlog::warn("server {}: worker {} (rank {}) was removed from the job at step {}{}", options_.server, w, rank,
                 version_, bsp && !pushed_[w] && !updating_ ? "; the step goes on with the workers that push it" : "");
    if (!pushed_[w]) partial_[w] = PartialPush{};  // a part of its push never counts
    // Its waiting pulls are answered with the verdict: a worker that was
    // only stopped (SIGSTOP) reads it when it runs again, and exits.
    std::erase_if(pending_, [&](const PendingPull& p) {
      if (p.worker != static_cast<int>(w)) return false;
      refuse(p.route, removed_verdict(static_cast<int>(w)), 0.1);
      return true;
    });
    waiting_pulls_ = static_cast<int64_t>(pending_.size());
  }
  if (!changed) return Status();
  if (options_.consistency != Consistency::kBsp) return answer_ready_pulls();  // the slowest live worker may change
  // The round may be complete without them, even with no push at all (every
  // worker removed): the servers still agree on it, and skip it.
  if (!updating_ && stopped_at_ < 0 && round_complete()) start_update();
  return Status();
}

void ShardServer::checkpoint_if_due(const StepReport& report) {
  const bool due = report.checkpoint || (options_.checkpoint_every > 0 && version_ % options_.checkpoint_every == 0) ||
                   (options_.final_step > 0 && version_ == options_.final_step);
  if (!due || options_.consistency != Consistency::kBsp || options_.checkpoint_root.empty()) {
    if (report.stop && options_.server == 0)
      spdlog::warn("server 0: the job stops at step {} without a checkpoint ({})", version_,
                   options_.consistency != Consistency::kBsp ? "ASP and SSP servers hold no common step"
                                                             : "no checkpoint directory");
    return;
  }
  const auto started = std::chrono::steady_clock::now();
  last_checkpoint_ns_ = steady_ns();
  const std::string dir = checkpoint_dir(options_.checkpoint_root, version_);
  // A copy of the state of this step (a memcpy of the shard's weights and
  // moments) is all the update waits for; the file is written, fsynced and
  // renamed on a thread of its own while training goes on, and server 0's
  // thread then waits for every server's file and writes the manifest. One
  // checkpoint at a time: the next one first waits for this one.
  auto state = std::make_shared<ShardState>();
  state->ranges = opt_.owned();
  opt_.export_state(&state->weights, &state->exp_avg, &state->exp_avg_sq);
  std::optional<Manifest> manifest;
  if (options_.server == 0) {
    manifest = step_manifest(job_toml_, seed_, table_, plan_.servers(), plan_.chunk_bytes(), report);
    manifest->data_next = cursor_.pool().next;  // the update thread is idle: the cursor is this step's
    manifest->data_holes = cursor_.pool().holes;
  }
  if (checkpoint_thread_.joinable()) checkpoint_thread_.join();
  checkpoint_thread_ = std::thread([this, dir, state, manifest, started, step = version_]() mutable {
    auto bytes =
        write_checkpoint_part(options_.checkpoint_root, dir, options_.server, table_, *state, std::move(manifest),
                              options_.checkpoint_keep, Deadline::after(2 * options_.timeout_s), &reform_);
    state.reset();
    if (!bytes.ok()) {
      // Without this file, or without the manifest, the previous checkpoint
      // stays the latest; training goes on unless the policy says stop.
      spdlog::error("server {}: checkpoint of step {} not completed ({}): {}", options_.server, step,
                    options_.stop_on_checkpoint_failure
                        ? "checkpoint.on_failure = stop: the job stops after the next step"
                        : "training goes on; the previous checkpoint stays the latest",
                    bytes.status().message());
      if (options_.metrics) options_.metrics->checkpoint_failed();
      checkpoint_failed_ = true;
      return;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (options_.metrics) options_.metrics->checkpoint_done(seconds);
    if (options_.server == 0)
      spdlog::info("checkpoint of step {}: {} files, {:.1f} MiB, {:.2f} s ({})", step, plan_.servers(),
                   static_cast<double>(*bytes) / (1 << 20), seconds, dir);
  });
}

Status ShardServer::serve() {
  serve_started_ns_ = steady_ns();
  Status s = serve_until_done();
  if (reform_) {
    std::lock_guard<std::mutex> lock(removal_mu_);
    s = aborted("server {}: gave up step {}: {}", options_.server, version_ + 1, reform_why_);
  }
  if (!s.ok()) {
    // Workers waiting for weights learn why, and whom the server waited for,
    // instead of waiting out their own deadline.
    // (The scheduler's answer to the statistics may say REFORM before the
    // heartbeat line does: either way the workers learn that the job re-forms.)
    const auto code = s.code() == StatusCode::kAborted ? wire::ErrorCode::REFORM : wire::ErrorCode::INTERNAL;
    for (PendingPull& p : pending_) refuse(p.route, {code, s.message()}, 1);
    pending_.clear();
    waiting_pulls_ = 0;
  }
  if (!s.ok() && scheduler_lost_ && options_.consistency == Consistency::kBsp && reducer_->asks_servers())
    answer_servers_after_loss(s);
  // Workers that came to join too late (or whose join failed) learn it.
  for (JoiningPull& p : joining_)
    refuse(p.pull.route,
           {wire::ErrorCode::INTERNAL, fmt::format("server {}: the job ended at step {} before worker {} joined it",
                                                   options_.server, version_, p.pull.worker)},
           1);
  joining_.clear();
  // A checkpoint begun is complete (or has failed) when serve() returns.
  if (checkpoint_thread_.joinable()) checkpoint_thread_.join();
  // The stop that checkpoint.on_failure = stop asked for is not a success:
  // the job ends short of its steps, and its exit status says so.
  if (s.ok() && options_.stop_on_checkpoint_failure && checkpoint_failed_)
    return io_error(
        "server {}: stopped at step {} because a checkpoint could not be completed "
        "(checkpoint.on_failure = stop; the reason is logged above)",
        options_.server, version_);
  return s;
}

Status ShardServer::serve_until_done() {
  const int workers = options_.layout.workers;
  Deadline deadline = Deadline::after(options_.timeout_s);
  while (!(ended_workers() == workers && !updating_ && queued_.empty())) {
    zmq::pollitem_t items[2] = {{router_->socket().handle(), 0, ZMQ_POLLIN, 0}, {nullptr, notes_.fd(), ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 2, std::chrono::milliseconds(updating_ ? -1 : deadline.remaining_ms()));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;  // a signal interrupted the wait: look again
      continue;
    }
    if (items[1].revents & ZMQ_POLLIN) {
      bool removals = false;
      for (const int64_t note : notes_.take()) {
        if (note == kRemovals) {
          removals = true;
        } else if (note == kUpdateDone) {
          PST_RETURN_IF_ERROR(finish_update());
          deadline = Deadline::after(options_.timeout_s);
        } else {
          PST_RETURN_IF_ERROR(on_progress(static_cast<size_t>(note)));
        }
      }
      if (removals) {
        if (reform_) return Status();  // serve() says why
        PST_RETURN_IF_ERROR(take_removals());
        deadline = Deadline::after(options_.timeout_s);  // a removal is progress
      }
    }
    if (items[0].revents & ZMQ_POLLIN) {
      // The messages queued now, taken without polling again (a receive
      // that finds one makes no system call); a bounded number, so that
      // the notes are not kept waiting.
      for (int taken = 0; taken < kQueuedAtOnce && error_.ok(); ++taken) {
        auto msg = router_->receive(Deadline::after(0), "a message");
        if (!msg.ok() && msg.status().code() == StatusCode::kDeadlineExceeded) break;  // none left
        // Only pushes and shutdowns are progress: a worker that keeps asking
        // for weights must not hide another that stopped pushing.
        const bool progress = msg.ok() && handle(std::move(*msg));
        ++received_;  // after handling: a reader of received() sees its effects
        if (progress) deadline = Deadline::after(options_.timeout_s);
      }
    }
    if (!error_.ok()) return error_;
    std::erase_if(joining_, [&](const JoiningPull& p) {
      if (std::chrono::steady_clock::now() - p.pull.arrived < std::chrono::duration<double>(options_.timeout_s))
        return false;
      refuse(p.pull.route, removed_verdict(p.pull.worker), 1);
      return true;
    });
    // While updating, the update thread's own deadline bounds the wait.
    if (deadline.expired() && !updating_) {
      if (options_.consistency != Consistency::kBsp)
        return deadline_exceeded(
            "server {}: no message for {} s from any worker (at version {}; {} of {} workers "
            "finished)",
            options_.server, options_.timeout_s, version_, ended_workers(), workers);
      std::string missing;
      for (int w = 0; w < workers; ++w) {
        if (pushed_[static_cast<size_t>(w)] || removed_[static_cast<size_t>(w)]) continue;
        const PartialPush& p = partial_[static_cast<size_t>(w)];
        missing += fmt::format(
            "{}worker {} (rank {}{})", missing.empty() ? "" : ", ", w, options_.layout.worker_rank(w),
            p.parts.empty() ? "" : fmt::format("; {} of {} chunks arrived", p.received, owned_chunks_.size()));
      }
      const Status late =
          deadline_exceeded("server {}: no message for {} s while waiting for pushes of step {} from {}",
                            options_.server, options_.timeout_s, version_, missing);
      // Workers gone with the scheduler (one machine lost with both, say):
      // the steps since the last checkpoint are kept all the same.
      return keeps_last_step() ? keep_last_step(late) : late;
    }
  }
  return Status();
}

bool ShardServer::read_valid(Frames frames, std::unique_ptr<InMessage>* m, Rejection* why) const {
  *m = InMessage::parse(std::move(frames), why);
  if (!*m) return false;
  const Expectation e{options_.job_id, options_.layout.nodes(), &plan_, options_.server};
  return validate(**m, e, why) && wire_format_ok(**m, why);
}

bool ShardServer::handle(Routed msg) {
  Rejection why;
  std::unique_ptr<InMessage> m;
  if (!read_valid(std::move(msg.frames), &m, &why)) {
    error_ = reject(msg.route, why, m.get());
    return false;
  }
  const wire::Kind kind = m->header().getKind();
  const int32_t sender = m->header().getSender();
  if (options_.layout.is_worker(sender)) {
    // Which process speaks for the worker: the first heard, or the one the
    // scheduler admitted in its place. A removed worker's process is told
    // so; a new process's pull waits for its admission (a join).
    const int w = options_.layout.worker_index(sender);
    const uint64_t process = m->header().getProcess();
    uint64_t& known = process_[static_cast<size_t>(w)];
    const bool departed = process == known || std::find(departed_.begin(), departed_.end(), process) != departed_.end();
    if (removed_[static_cast<size_t>(w)] || process != known) {
      if (!removed_[static_cast<size_t>(w)] && known == 0) {
        known = process;  // the first process heard for a member's place
      } else if (removed_[static_cast<size_t>(w)] && !departed && kind == wire::Kind::PULL && process != 0 &&
                 options_.consistency == Consistency::kBsp) {
        hold_joining_pull(std::move(msg.route), *m, w);
        return false;
      } else if (departed || never_[static_cast<size_t>(w)]) {
        error_ = reject(msg.route, removed_verdict(w), m.get());
        return false;
      } else {
        // Another process in the name of a place that is someone's (or was
        // a removed worker's): dropped unanswered, as spoofs are.
        rejecter_.drop(senders_.spoofed(sender, msg.route));
        return false;
      }
    }
  }
  if (!senders_.admit(sender, msg.route)) {
    rejecter_.drop(senders_.spoofed(sender, msg.route));
    return false;
  }
  if (kind == wire::Kind::REPORT && options_.layout.is_server(sender) &&
      sender != options_.layout.server_rank(options_.server)) {
    answer_server(msg.route, *m);
    return false;
  }
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

void ShardServer::answer_server(const zmq::message_t& route, const InMessage& m) {
  // Another server that has taken the scheduler as gone asks for a sum of
  // statistics (docs/design.md, The scheduler's death). A sum this server
  // has is the answer. That it has none is a lasting answer only once this
  // server, too, takes no more sums from the scheduler: until its own
  // heartbeat says the scheduler is gone, it answers LATER.
  const auto h = m.header();
  const SumAnswer answer = reducer_->sum_of(h.getStep(), question_round(m));
  const int k = options_.layout.server_index(h.getSender());
  if (answer.lasting) told_[static_cast<size_t>(k)] = std::max(told_[static_cast<size_t>(k)], h.getStep());
  (void)router_->send(
      route,
      answer_sum_question(answer, m, options_.job_id, options_.layout.server_rank(options_.server), options_.server),
      Deadline::after(1));
}

void ShardServer::answer_servers_after_loss(const Status& why) {
  // Every other server in the same place asks this one about its step (the
  // one this server could not complete either) before it gives up; this
  // server stays to answer, up to cluster.timeout_s, so that none waits out
  // its deadline for a server that has left. Pulls meanwhile learn why.
  const int32_t me = options_.layout.server_rank(options_.server);
  auto waiting = [&] {
    for (int k = 0; k < options_.layout.servers; ++k)
      if (k != options_.server && told_[static_cast<size_t>(k)] < version_) return true;
    return false;
  };
  const Deadline end = Deadline::after(options_.timeout_s);
  while (waiting() && !end.expired()) {
    auto msg = router_->receive(Deadline::after(std::min(0.1, static_cast<double>(end.remaining_ms()) / 1000)),
                                "the other servers' questions");
    if (!msg.ok()) continue;
    Rejection bad;
    std::unique_ptr<InMessage> m;
    if (!read_valid(std::move(msg->frames), &m, &bad) || !senders_.admit(m->header().getSender(), msg->route)) continue;
    const int32_t sender = m->header().getSender();
    if (m->header().getKind() == wire::Kind::REPORT && options_.layout.is_server(sender) && sender != me)
      answer_server(msg->route, *m);
    else if (m->header().getKind() == wire::Kind::PULL)
      refuse(msg->route, {wire::ErrorCode::INTERNAL, why.message()}, 1);
  }
}

Status ShardServer::reject(const zmq::message_t& route, const Rejection& why, const InMessage* m) {
  rejecter_.reject(*router_, route, why, m);
  return Status();  // a bad peer never stops the server
}

bool ShardServer::add_part(PartialPush& push, std::unique_ptr<InMessage>& m, Rejection* why) const {
  const int64_t step = m->header().getStep();
  const int w = options_.layout.worker_index(m->header().getSender());
  const auto h = m->header().getPush();
  if (m->chunks() == 0 && !owned_chunks_.empty()) {
    *why = {wire::ErrorCode::BAD_HEADER, fmt::format("an empty part of the push of step {} from worker {}", step, w)};
    return false;
  }
  if (!push.parts.empty() && (step != push.step || h.getTokens() != push.tokens || h.getLossSum() != push.loss_sum)) {
    *why = {wire::ErrorCode::BAD_HEADER,
            fmt::format("a part of the push of step {} from worker {} ({} tokens, loss sum {}) does not match its "
                        "first part (step {}, {} tokens, loss sum {})",
                        step, w, h.getTokens(), h.getLossSum(), push.step, push.tokens, push.loss_sum)};
    return false;
  }
  std::vector<size_t> ranges;
  for (size_t i = 0; i < m->chunks(); ++i) ranges.push_back(range_of_key_.at(key_id(m->key(i))));  // validated
  std::vector<size_t> sorted = ranges;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) {
    if ((i > 0 && sorted[i] == sorted[i - 1]) || (!push.ranges.empty() && push.ranges[sorted[i]].data)) {
      const ChunkKey key = owned_chunks_[sorted[i]].key;
      *why = {wire::ErrorCode::BAD_HEADER, fmt::format("push of step {} from worker {} repeats chunk {}", step, w,
                                                       plan_.describe(key, table_[key.tensor].name))};
      return false;
    }
  }
  if (push.parts.empty()) {
    push.worker = w;
    push.step = step;
    push.tokens = h.getTokens();
    push.loss_sum = h.getLossSum();
    push.ranges.assign(owned_chunks_.size(), WireValues{});
  }
  for (size_t i = 0; i < ranges.size(); ++i) push.ranges[ranges[i]] = m->chunk_values(i);
  push.received += ranges.size();
  push.parts.push_back(std::move(m));
  return true;
}

Status ShardServer::on_push(const zmq::message_t& route, std::unique_ptr<InMessage> message) {
  const int64_t step = message->header().getStep();
  const uint64_t request = message->header().getRequestId();
  const int w = options_.layout.worker_index(message->header().getSender());
  const bool bsp = options_.consistency == Consistency::kBsp;
  if (bsp && (step != version_ || updating_))
    return reject(
        route,
        {wire::ErrorCode::BAD_STEP, fmt::format("push of step {} from worker {}; server {} takes step {}{}", step, w,
                                                options_.server, version_, updating_ ? " and is applying it" : "")},
        message.get());
  if (!bsp && step > version_)
    return reject(route,
                  {wire::ErrorCode::BAD_STEP, fmt::format("push from worker {} computed on version {}; server {} has "
                                                          "made only {}",
                                                          w, step, options_.server, version_)},
                  message.get());
  if (bsp && pushed_[static_cast<size_t>(w)])
    return reject(route, {wire::ErrorCode::BAD_STEP, fmt::format("second push of step {} from worker {}", step, w)},
                  message.get());
  PartialPush& push = partial_[static_cast<size_t>(w)];
  const auto arrived = std::chrono::steady_clock::now();
  Rejection why;
  if (!add_part(push, message, &why)) return reject(route, why, message.get());
  if (push.parts.back()->header().getPush().getStop() && !stop_asked_.exchange(true))
    spdlog::info("server {}: worker {} asks the job to stop after step {}", options_.server, w, step + 1);
  if (options_.metrics) {
    int64_t bytes = 0;
    const InMessage& part = *push.parts.back();
    for (size_t i = 0; i < part.chunks(); ++i) bytes += static_cast<int64_t>(part.frame_bytes(i + 1));
    options_.metrics->bytes_in(bytes);
  }
  OutMessage ack(wire::Kind::PUSH_ACK, options_.job_id, options_.layout.server_rank(options_.server), step, request);
  ack.header().initStepInfo();
  const Status acked = router_->send(route, ack.finish(), Deadline::after(options_.timeout_s));
  // A worker that cannot take its acknowledgement has gone; the push counts,
  // and the next round's deadline names the worker if it does not come back.
  if (!acked.ok())
    spdlog::warn("server {}: worker {} did not take the acknowledgement: {}", options_.server, w, acked.message());
  if (options_.metrics)
    options_.metrics->request("push",
                              std::chrono::duration<double>(std::chrono::steady_clock::now() - arrived).count());
  if (push.received < owned_chunks_.size()) return Status();
  PartialPush done = std::move(push);
  push = PartialPush{};
  if (bsp) {
    add_to_round(std::move(done), w);
    pushed_[static_cast<size_t>(w)] = true;
    if (!round_complete()) return Status();
    // A small shard whose statistics need no other server: updated on this
    // thread at once, which saves two thread hand-offs a step.
    if (update_here()) return update_now();
    start_update();
    return Status();
  }
  // ASP, SSP: each push is its own update, in arrival order.
  ++clocks_[static_cast<size_t>(w)];
  queued_.push_back(std::move(done));
  if (!updating_) start_next_async();
  return answer_ready_pulls();  // a slow worker's push may release others
}

void ShardServer::start_next_async() {
  PartialPush push = std::move(queued_.front());
  queued_.erase(queued_.begin());
  max_staleness_ = std::max(max_staleness_, version_ - push.step);
  if (options_.metrics) options_.metrics->staleness(version_ - push.step);
  add_to_round(std::move(push), 0);
  start_update();
}

void ShardServer::add_to_round(PartialPush push, int64_t slot) {
  // Over inproc a frame is the pushing worker's own buffer, which it waits
  // to get back before its pull: that one is copied. Over tcp and ipc (and
  // MPI, whose frames reach the router over inproc but belong to no worker)
  // the frames are the server's, kept until the update has read them.
  const bool lend = !router_->endpoint().starts_with("inproc://");
  opt_.add_push_ranges(push.ranges, push.tokens, push.loss_sum, slot,
                       lend ? ShardOptimizer::Lend::kYes : ShardOptimizer::Lend::kNo);
  if (lend) lent_.push_back(std::move(push));
}

bool ShardServer::update_here() const {
  return reducer_->local() && options_.consistency == Consistency::kBsp &&
         opt_.local_size() * int64_t{sizeof(float)} <= options_.stream_bytes;
}

Status ShardServer::update_now() {
  start_update(/*here=*/true);
  run_update(/*stream=*/false);
  return finish_update();
}

void ShardServer::start_update(bool here) {
  // The update writes the next snapshot; the current one keeps serving
  // pulls of version_. The one before is reused once ZeroMQ lets go of it.
  if (spare_ && spare_.use_count() == 1) {
    next_snapshot_ = std::move(spare_);
  } else {
    next_snapshot_ = new_snapshot();
  }
  spare_.reset();
  updating_ = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    update_requested_ = !here;
    round_pushed_.assign(pushed_.begin(), pushed_.end());
  }
  if (!here) cv_.notify_all();
}

StepControl ShardServer::local_control() {
  // Every server adds its own flags, so all act on the same step (a
  // checkpoint of it; the job's end after it).
  const bool time_up = options_.max_minutes > 0 &&
                       static_cast<double>(steady_ns() - serve_started_ns_.load()) >= options_.max_minutes * 60e9;
  if (time_up && !time_up_logged_.exchange(true))
    spdlog::info("server {}: train.max_minutes = {} reached; the job stops after this step", options_.server,
                 options_.max_minutes);
  StepControl c;
  c.stop = stop_asked_.load() || stop_requested() || time_up ||
           (options_.stop_on_checkpoint_failure && checkpoint_failed_.load());
  c.checkpoint = options_.checkpoint_minutes > 0 &&
                 static_cast<double>(steady_ns() - last_checkpoint_ns_.load()) >= options_.checkpoint_minutes * 60e9;
  return c;
}

Result<GradStats> ShardServer::agree_on_round(int64_t* waited_ns) {
  std::vector<uint8_t> pushed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pushed = round_pushed_;
  }
  GradStats local = opt_.reduce(pushed);
  local.control = local_control();
  local.contributors = pushed;
  // Another server may wait timeout_s for a worker before it gives up, and
  // the scheduler judges a silent node within timeout_s and a heartbeat:
  // waiting twice that lets their verdict, which names the culprit, arrive.
  auto reduce_over_servers = [&](const GradStats& part) {
    const auto before = std::chrono::steady_clock::now();
    auto sum = reducer_->all_reduce(options_.server, opt_.version(), part, Deadline::after(2 * options_.timeout_s));
    *waited_ns +=
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - before).count();
    return sum;
  };
  PST_ASSIGN_OR_RETURN(GradStats global, reduce_over_servers(local));
  if (global.redo) {
    // A removed worker's push reached some servers only: every server sums
    // again over the workers all of them have, and the statistics are taken
    // again (the second sum agrees by construction).
    local = opt_.reduce(global.contributors);
    local.control = local_control();
    local.contributors = global.contributors;
    PST_ASSIGN_OR_RETURN(global, reduce_over_servers(local));
    if (global.redo)
      return Status(StatusCode::kInternal,
                    fmt::format("server {}: the servers disagree on the workers of step {} twice", options_.server,
                                opt_.version()));
  }
  const std::vector<uint8_t>& took = global.contributors;
  if (took != last_contributors_) {
    std::string who;
    int count = 0;
    for (size_t w = 0; w < took.size(); ++w)
      if (took[w]) who += fmt::format("{}{}", count++ == 0 ? "" : ", ", w);
    spdlog::info("server {}: the update to version {} takes the pushes of {} of {} workers ({})", options_.server,
                 opt_.version() + 1, count, took.size(), count == 0 ? "none: the step is skipped" : who);
    last_contributors_ = took;
  }
  // The next step's batches go to the workers that pushed this one; the
  // batches of those that did not go back to the pool.
  // Workers that join at the next step take theirs too.
  std::vector<uint8_t> next = took;
  for (const Joiner& j : global.joined)
    if (admissible(j)) next[static_cast<size_t>(options_.layout.worker_index(j.rank))] = 1;
  cursor_.applied(took);
  cursor_.assign(next);
  {
    std::lock_guard<std::mutex> lock(mu_);
    next_batches_ = cursor_.batches();
    next_joined_ = global.joined;
  }
  return global;
}

void ShardServer::post(int64_t value) { notes_.post(value); }

void ShardServer::update_loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return update_requested_ || stop_; });
      if (stop_) return;
      update_requested_ = false;
    }
    run_update(/*stream=*/true);
    post(kUpdateDone);
  }
}

void ShardServer::run_update(bool stream) {
  // The receive thread leaves opt_ and next_snapshot_ alone while updating_ is set.
  const auto started = std::chrono::steady_clock::now();
  int64_t waited_ns = 0;  // for the other servers' statistics: not this server's work
  const bool bsp = options_.consistency == Consistency::kBsp;
  Result<GradStats> global = bsp ? agree_on_round(&waited_ns) : opt_.reduce();
  Status status;
  StepReport report;
  Weights& next = *next_snapshot_;
  size_t copied = 0;
  int64_t unannounced = 0;
  // BSP: each updated range goes to the next snapshot, and every
  // stream_bytes the receive loop may send it to the waiting pulls.
  auto with_flags = [&](StepReport r) {
    r.stop = global.ok() && global->control.stop;
    r.checkpoint = global.ok() && (global->control.checkpoint || global->control.stop);
    return r;
  };
  const ShardOptimizer::Progress progress = [&](const StepReport& r, size_t done) {
    fill_snapshot(next, copied, done);
    for (; copied < done; ++copied) unannounced += opt_.owned()[copied].length * int64_t{sizeof(float)};
    if (unannounced < options_.stream_bytes) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      progress_report_ = with_flags(r);
    }
    post(static_cast<int64_t>(done));
    unannounced = 0;
  };
  if (global.ok()) {
    // On the host the update writes the next snapshot itself (fill_snapshot
    // then copies no float32 weights); a device's weights are downloaded.
    float* in_place = opt_.device() ? nullptr : next.fp32.data();
    report = with_flags(opt_.apply(*global, /*clip=*/bsp, bsp && stream ? progress : nullptr, in_place));
    fill_snapshot(next, copied, opt_.owned().size());  // what is left: a skipped step, ASP, SSP, no stream
  } else {
    status = global.status();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    update_status_ = status;
    update_report_ = report;
  }
  const int64_t ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started).count() -
      waited_ns;
  update_ns_ += ns;
  reduce_wait_ns_ += waited_ns;
  ++updates_;
  if (options_.metrics && status.ok())
    options_.metrics->update_done(static_cast<double>(ns) * 1e-9, report.applied,
                                  report.applied && report.clip_coef < 1.0);
}

bool ShardServer::keeps_last_step() const {
  return scheduler_lost_ && options_.consistency == Consistency::kBsp && !options_.checkpoint_root.empty();
}

Status ShardServer::keep_last_step(const Status& why) {
  // Without the scheduler the servers cannot agree on another step; each
  // is at the last one they all completed (a server the scheduler did not
  // answer took the sum from one it did: SchedulerStatsReducer), and keeps
  // it: every server writes its file of that step, server 0 the manifest.
  StepReport keep = last_;
  keep.version = version_;
  keep.checkpoint = true;
  checkpoint_if_due(keep);
  return failed_precondition("{}; a checkpoint of step {} is written: start the job again with --resume latest",
                             why.message(), version_);
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
  lent_.clear();  // the update has read the pushes' frames
  if (!status.ok() && keeps_last_step()) return keep_last_step(status);
  PST_RETURN_IF_ERROR(status);
  last_ = report;
  version_ = report.version;
  spare_ = std::move(snapshot_);
  snapshot_ = std::move(next_snapshot_);
  checkpoint_if_due(report);
  if (report.stop && stopped_at_ < 0) {
    stopped_at_ = version_;
    spdlog::info("server {}: the job stops at step {} (stop requested)", options_.server, version_);
  }
  std::fill(pushed_.begin(), pushed_.end(), false);
  std::vector<Joiner> joined;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (options_.consistency == Consistency::kBsp) batches_ = next_batches_;
    joined.swap(next_joined_);
  }
  take_joins(joined);
  PST_RETURN_IF_ERROR(answer_ready_pulls());
  if (!queued_.empty()) start_next_async();
  // Every worker was removed while the update ran: the servers agree on an
  // empty round too (and the scheduler stops the job below cluster.min_workers).
  if (options_.consistency == Consistency::kBsp && stopped_at_ < 0 && round_complete()) start_update();
  return Status();
}

}  // namespace pst
