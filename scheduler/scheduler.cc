#include "scheduler/scheduler.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <vector>

#include <fmt/format.h>
#include <kj/exception.h>
#include <spdlog/spdlog.h>

#include "comm/grad_stats.h"
#include "comm/message.h"
#include "comm/rejecter.h"
#include "core/stop.h"

namespace pst {
namespace {

using Clock = std::chrono::steady_clock;

std::string node_name(const JobLayout& l, int32_t rank) {
  if (l.is_server(rank)) return fmt::format("server {} (rank {})", l.server_index(rank), rank);
  if (l.is_worker(rank)) return fmt::format("worker {} (rank {})", l.worker_index(rank), rank);
  return fmt::format("rank {}", rank);
}

constexpr size_t kMaxOpenRounds = 8;

// Adds one to *counter (when there is one) as it goes out of scope: after
// the message has been handled, whichever way.
struct Counted {
  explicit Counted(std::atomic<int64_t>* counter) : counter_(counter) {}
  ~Counted() {
    if (counter_) ++*counter_;
  }
  Counted(const Counted&) = delete;
  Counted& operator=(const Counted&) = delete;
  std::atomic<int64_t>* counter_;
};

struct Registrant {
  zmq::message_t route;
  wire::Role role = wire::Role::WORKER;
  std::string endpoint, host, metrics;
  uint64_t request_id = 0;
  uint64_t process = 0;    // Header.process
  bool join_only = false;  // may only join a running job
};

// What the rendezvous leaves to the running job: the servers (for the node
// tables of workers that join), each starting worker's process, and the
// workers that registered beyond cluster.workers (they join once it runs).
struct Roster {
  int start = 0;          // the workers the job starts with (node tables say it)
  bool reformed = false;  // the job re-forms after a server was lost (node tables say it)
  std::vector<Registrant> servers;
  std::vector<uint64_t> worker_process;
  std::vector<Registrant> early;
};

// The node table for the node `to` (given `rank`): every server, and the
// workers listed (rank, host).
using WorkerHosts = std::vector<std::pair<int32_t, std::string>>;
Frames node_table(const SchedulerOptions& o, const Roster& roster, const WorkerHosts& workers, const Registrant& to,
                  int32_t rank, bool joined) {
  const JobLayout& l = o.layout;
  OutMessage t(wire::Kind::NODE_TABLE, o.job_id, 0, 0, to.request_id);
  t.header().setRank(rank);
  t.header().setJoined(joined);
  t.header().setStartWorkers(roster.start);
  t.header().setReformed(roster.reformed);
  auto nodes = t.header().initNodes(static_cast<unsigned>(roster.servers.size() + workers.size()));
  unsigned i = 0;
  for (size_t k = 0; k < roster.servers.size(); ++k, ++i) {
    nodes[i].setRank(l.server_rank(static_cast<int>(k)));
    nodes[i].setRole(wire::Role::SERVER);
    nodes[i].setIndex(static_cast<int32_t>(k));
    nodes[i].setEndpoint(roster.servers[k].endpoint);
    nodes[i].setHost(roster.servers[k].host);
  }
  for (const auto& [wr, host] : workers) {
    nodes[i].setRank(wr);
    nodes[i].setRole(wire::Role::WORKER);
    nodes[i].setIndex(l.worker_index(wr));
    nodes[i].setHost(host);
    ++i;
  }
  return t.finish();
}

// The fields of a registration, each read once, inside a boundary: a
// malformed pointer (outside the segment, past the traversal limit) throws
// kj::Exception, which becomes a rejection, never a crash.
bool read_registration(const InMessage& m, Registrant* r, Rejection* why) {
  try {
    const auto node = m.header().getNode();
    r->role = node.getRole();
    r->endpoint = node.getEndpoint().cStr();
    r->host = node.getHost().cStr();
    r->metrics = node.getMetrics().cStr();
    r->join_only = node.getJoinOnly();
    r->request_id = m.header().getRequestId();
    r->process = m.header().getProcess();
    return true;
  } catch (const kj::Exception& e) {
    *why = {wire::ErrorCode::BAD_HEADER,
            fmt::format("a registration that cannot be read: {}", e.getDescription().cStr())};
    return false;
  }
}

// Phase 1: collects Register messages and answers each with the node table.
// Workers beyond the `start` ones (up to the layout's places, when joins
// are on) wait in roster->early for the job to run. When the job re-forms,
// what its nodes still send on their old lines is dropped unanswered.
Status rendezvous(Router& router, const SchedulerOptions& o, int start, bool reforming,
                  std::vector<ScrapeTarget>* targets, Rejecter& rejecter, RankBinding& senders, Roster* roster) {
  const JobLayout& l = o.layout;
  roster->reformed = reforming;
  // (Servers that registered while the job ran wait in roster->servers.)
  std::vector<Registrant>& servers = roster->servers;
  std::vector<Registrant> workers;
  const Deadline deadline = Deadline::after(o.start_timeout_s);
  // When the job re-forms, a live worker registers again at once; once every
  // server has, workers that have not within the liveness window are taken
  // as gone (dead before the scheduler could tell), and the job re-forms
  // without them if it keeps cluster.min_workers.
  Deadline settle = Deadline::never();
  const Expectation e{o.job_id, l.nodes(), nullptr, -1};
  while (static_cast<int>(servers.size()) < l.servers || static_cast<int>(workers.size()) < start) {
    if (reforming && static_cast<int>(servers.size()) == l.servers &&
        static_cast<int>(workers.size()) >= std::max(1, o.min_workers)) {
      if (settle.is_never()) settle = Deadline::after(o.liveness_s);
      if (settle.expired()) {
        spdlog::warn(
            "scheduler: {} of {} workers registered again within {:.1f} s; the job re-forms without the others",
            workers.size(), start, o.liveness_s);
        start = static_cast<int>(workers.size());
        break;
      }
    }
    auto msg = router.receive(settle.is_never() ? deadline : settle,
                              fmt::format("registrations ({} of {} servers and {} of {} workers so far)",
                                          servers.size(), l.servers, workers.size(), start));
    if (!msg.ok() && !settle.is_never() && msg.status().code() == StatusCode::kDeadlineExceeded) continue;
    if (!msg.ok()) return msg.status();
    const Counted counted(o.received);
    Rejection why;
    auto m = InMessage::parse(std::move(msg->frames), &why);
    if (m && validate(*m, e, &why) && m->header().getKind() != wire::Kind::REGISTER) {
      if (reforming) continue;
      why = {wire::ErrorCode::BAD_KIND,
             fmt::format("{} before the rendezvous is over", kind_name(m->header().getKind()))};
    } else if (m && why.message.empty()) {
      Registrant r;
      if (read_registration(*m, &r, &why)) {
        const bool server = r.role == wire::Role::SERVER;
        auto& list = server ? servers : workers;
        const int limit = server ? l.servers : start;
        const bool early = r.role == wire::Role::WORKER && o.joins &&
                           static_cast<int>(workers.size() + roster->early.size()) < l.workers;
        if (r.join_only && !reforming) {
          // (When the job re-forms, train.output holds its own run.)
          why = {wire::ErrorCode::BAD_HEADER,
                 server ? "this server's train.output holds another run, and the job is not re-forming (a server "
                          "takes a lost one's place only then)"
                        : "this worker may only join a running job (its train.output holds another run), and this "
                          "job has not started"};
        } else if (r.role != wire::Role::SCHEDULER && static_cast<int>(list.size()) < limit) {
          r.route = std::move(msg->route);
          list.push_back(std::move(r));
          continue;
        } else if (early && static_cast<int>(workers.size()) >= start) {
          r.route = std::move(msg->route);
          roster->early.push_back(std::move(r));
          continue;
        } else {
          why = {wire::ErrorCode::BAD_HEADER,
                 "a registration beyond the job's servers and workers (or a second scheduler)"};
        }
      }
    }
    rejecter.reject(router, msg->route, why, m.get());
  }
  roster->start = start;
  WorkerHosts hosts;
  for (size_t w = 0; w < workers.size(); ++w) hosts.emplace_back(l.worker_rank(static_cast<int>(w)), workers[w].host);
  // Each rank speaks from the process that registered it.
  for (size_t k = 0; k < servers.size(); ++k) {
    const int32_t rank = l.server_rank(static_cast<int>(k));
    senders.bind(rank, servers[k].route);
    PST_RETURN_IF_ERROR(router.send(servers[k].route, node_table(o, *roster, hosts, servers[k], rank, false),
                                    Deadline::after(o.timeout_s)));
  }
  for (size_t w = 0; w < workers.size(); ++w) {
    const int32_t rank = l.worker_rank(static_cast<int>(w));
    senders.bind(rank, workers[w].route);
    PST_RETURN_IF_ERROR(router.send(workers[w].route, node_table(o, *roster, hosts, workers[w], rank, false),
                                    Deadline::after(o.timeout_s)));
    roster->worker_process.push_back(workers[w].process);
  }
  for (size_t k = 0; k < servers.size(); ++k)
    targets->push_back({servers[k].metrics, "server", l.server_rank(static_cast<int>(k))});
  for (size_t w = 0; w < workers.size(); ++w)
    targets->push_back({workers[w].metrics, "worker", l.worker_rank(static_cast<int>(w))});
  spdlog::info("scheduler: {} servers and {} workers registered{}", l.servers, start,
               reforming ? "; the job re-forms from its newest checkpoint" : "");
  return Status();
}

// Phase 2, the running job: one message at a time, then the liveness check.
// Owned and called by run_scheduler's thread.
class JobWatch {
 public:
  JobWatch(Router& router, const SchedulerOptions& o, Rejecter& rejecter, RankBinding& senders, Roster roster,
           std::vector<ScrapeTarget>* targets)
      : router_(router),
        o_(o),
        l_(o.layout),
        rejecter_(rejecter),
        senders_(senders),
        roster_(std::move(roster)),
        targets_(targets),
        nodes_(l_.nodes()),
        start_workers_(o.rendezvous ? roster_.start : l_.workers),
        last_seen_(static_cast<size_t>(nodes_), Clock::now()),
        done_(static_cast<size_t>(nodes_), false),
        removed_(static_cast<size_t>(nodes_), false),
        process_(static_cast<size_t>(nodes_), 0),
        beat_routes_(static_cast<size_t>(nodes_)),
        remaining_(l_.servers + start_workers_),
        alive_servers_(l_.servers),
        alive_workers_(start_workers_),
        members_(start_workers_),
        peak_members_(start_workers_) {
    // Places beyond the starting workers are free: not members, not waited for.
    for (int w = start_workers_; w < l_.workers; ++w) {
      done_[static_cast<size_t>(l_.worker_rank(w))] = true;
      removed_[static_cast<size_t>(l_.worker_rank(w))] = true;
    }
    for (size_t w = 0; w < roster_.worker_process.size(); ++w)
      process_[static_cast<size_t>(l_.worker_rank(static_cast<int>(w)))] = roster_.worker_process[w];
    publish_alive();
  }

  // Workers that registered during the rendezvous beyond the starting ones:
  // they take free places now, as joins.
  Status take_early_joiners() {
    std::vector<Registrant> early = std::move(roster_.early);
    for (Registrant& r : early) PST_RETURN_IF_ERROR(on_join_request(std::move(r)));
    return Status();
  }

  // The job ended: workers still joining learn that they came too late.
  void turn_away_joiners() {
    for (auto& [rank, j] : joining_) {
      const Rejection late{wire::ErrorCode::INTERNAL,
                           fmt::format("the job ended before {} could join it", node_name(l_, rank))};
      // (A joiner still loading its data reads it when it sends its barrier.)
      (void)router_.send(j.route, error_reply(late, o_.job_id, 0, nullptr), Deadline::after(1));
    }
    joining_.clear();
    for (const Registrant& r : spares_) {
      const Rejection unused{wire::ErrorCode::INTERNAL,
                             "the job ended without losing a server: no place for this one to take"};
      (void)router_.send(r.route, error_reply(unused, o_.job_id, 0, nullptr), Deadline::after(1));
    }
    spares_.clear();
  }

  // Servers that registered while the job ran (a restarted container, before
  // the scheduler has taken the lost one as gone): the re-formed job's first.
  std::vector<Registrant> take_spares() { return std::move(spares_); }

  bool running() const { return remaining_ > 0; }
  // Workers still in the job and not finished: those a re-formed job waits for.
  int live_workers() const { return static_cast<int>(alive_workers_); }
  // OK, or why the job stopped short: fewer workers than cluster.min_workers.
  const Status& outcome() const { return too_few_; }

  // The next message (if one comes within a second), then the verdict on
  // silent nodes. An error ends the job.
  Status step() {
    auto msg = router_.receive(Deadline::after(std::min(1.0, o_.timeout_s)), "messages of the job");
    if (msg.ok()) {
      PST_RETURN_IF_ERROR(handle(*msg));
    } else if (msg.status().code() != StatusCode::kDeadlineExceeded) {
      return msg.status();
    }
    return check_liveness();
  }

 private:
  struct Round {                  // statistics of a round in progress
    std::vector<GradStats> part;  // server k's statistics
    std::vector<bool> in;
    std::vector<std::pair<zmq::message_t, uint64_t>> routes;
    int count = 0;
  };

  void publish_alive() {
    if (!o_.metrics) return;
    o_.metrics->set_members("server", alive_servers_);
    o_.metrics->set_members("worker", alive_workers_);
  }

  Status handle(Routed& msg) {
    const Counted counted(o_.received);
    Rejection why;
    auto m = InMessage::parse(std::move(msg.frames), &why);
    const Expectation e{o_.job_id, nodes_, nullptr, -1};
    if (!m || !validate(*m, e, &why)) {
      rejecter_.reject(router_, msg.route, why, m.get());
      return Status();
    }
    const auto h = m->header();
    const int32_t rank = h.getSender();
    if (h.getKind() == wire::Kind::REGISTER && o_.joins) {
      Registrant r;
      if (!read_registration(*m, &r, &why)) {
        rejecter_.reject(router_, msg.route, why, m.get());
        return Status();
      }
      r.route = std::move(msg.route);
      return on_join_request(std::move(r));
    }
    if (rank < 1 || rank >= nodes_) {
      // A registration after the rendezvous (a node started late, or once
      // too often) has no rank: the job's members are fixed.
      const Rejection late{wire::ErrorCode::BAD_HEADER,
                           h.getKind() == wire::Kind::REGISTER
                               ? "the job has started: its servers and workers have all registered"
                               : fmt::format("sender {} is not a node of this job (ranks 1..{})", rank, nodes_ - 1)};
      rejecter_.reject(router_, msg.route, late, m.get());
      return Status();
    }
    if (!senders_.admit(rank, msg.route)) {
      rejecter_.drop(senders_.spoofed(rank, msg.route));
      return Status();
    }
    const auto joining = joining_.find(rank);
    const bool joiner = joining != joining_.end() && joining->second.process == h.getProcess();
    if (removed_[static_cast<size_t>(rank)] && !joiner) {
      // A worker that was stopped (SIGSTOP) past the liveness window and
      // runs again: it is not a member any more, and its servers refuse it too.
      rejecter_.reject(router_, msg.route,
                       {wire::ErrorCode::UNKNOWN_SENDER,
                        fmt::format("{} was removed from the job after {:.1f} s without a heartbeat; it does not "
                                    "come back (exit, and start a new one)",
                                    node_name(l_, rank), o_.liveness_s)},
                       m.get());
      return Status();
    }
    last_seen_[static_cast<size_t>(rank)] = Clock::now();
    try {
      switch (h.getKind()) {
        case wire::Kind::SHUTDOWN: on_shutdown(rank); break;
        case wire::Kind::BARRIER:
          if (joiner) {  // ready: it joins at the next step
            joining->second.barrier_request = h.getRequestId();
            joining->second.ready = true;
            return Status();
          }
          return on_barrier(rank, msg, h.getRequestId());
        case wire::Kind::REPORT: return on_stats(rank, msg, *m);
        case wire::Kind::HEARTBEAT: {
          // The line the scheduler answers on (Membership): a copy of the route.
          zmq::message_t& route = beat_routes_[static_cast<size_t>(rank)];
          if (route.size() != msg.route.size() || std::memcmp(route.data(), msg.route.data(), route.size()) != 0)
            route.copy(msg.route);
          // The acknowledgement tells the node the scheduler is alive; a
          // node with no room for it misses one, not the scheduler's turn.
          OutMessage ack(wire::Kind::HEARTBEAT, o_.job_id, 0, 0, h.getRequestId());
          (void)router_.send(msg.route, ack.finish(), Deadline::after(0));
          break;
        }
        default: break;
      }
    } catch (const kj::Exception& ex) {  // a field that cannot be read
      rejecter_.reject(
          router_, msg.route,
          {wire::ErrorCode::BAD_HEADER, fmt::format("a message that cannot be read: {}", ex.getDescription().cStr())},
          nullptr);
    }
    return Status();
  }

  void on_shutdown(int32_t rank) {
    if (done_[static_cast<size_t>(rank)]) return;
    done_[static_cast<size_t>(rank)] = true;
    --remaining_;
    --(l_.is_server(rank) ? alive_servers_ : alive_workers_);
    publish_alive();
  }

  // The start barrier: released once every server (and node) is in.
  Status on_barrier(int32_t rank, Routed& msg, uint64_t request) {
    if (released_) return Status();
    barrier_.push_back({std::move(msg.route), request, rank});
    if (l_.is_server(rank)) ++servers_at_barrier_;
    if (servers_at_barrier_ < l_.servers || static_cast<int>(barrier_.size()) < l_.servers + start_workers_)
      return Status();
    for (Waiting& w : barrier_) {
      OutMessage r(wire::Kind::BARRIER, o_.job_id, 0, 0, w.request);
      told(router_.send(w.route, r.finish(), Deadline::after(o_.timeout_s)), w.rank, "its start");
    }
    released_ = true;
    spdlog::info("scheduler: every server is ready; the job starts");
    if (o_.on_start) o_.on_start();
    return Status();
  }

  // A server's statistics of a round; once every server's are in, each gets
  // the sum, added in server order.
  Status on_stats(int32_t rank, Routed& msg, const InMessage& m) {
    const auto h = m.header();
    if (h.which() != wire::Header::STATS || !l_.is_server(rank)) return Status();
    const size_t k = static_cast<size_t>(l_.server_index(rank));
    // A BSP job has one round in flight, two around its edges: more open
    // rounds are a server's bug, not state to keep.
    if (!rounds_.count(h.getStep()) && rounds_.size() >= kMaxOpenRounds) {
      rejecter_.reject(
          router_, msg.route,
          {wire::ErrorCode::BAD_STEP, fmt::format("statistics of step {} while {} rounds are open (at most {})",
                                                  h.getStep(), rounds_.size(), kMaxOpenRounds)},
          &m);
      return Status();
    }
    GradStats part = from_wire(h.getStats());
    if (std::string bad; !contributors_fit(part, l_.workers, &bad)) {
      rejecter_.reject(router_, msg.route,
                       {wire::ErrorCode::BAD_HEADER, fmt::format("statistics of step {}: {}", h.getStep(), bad)}, &m);
      return Status();
    }
    Round& r = rounds_[h.getStep()];
    if (r.in.empty()) {
      r.part.assign(static_cast<size_t>(l_.servers), GradStats{});
      r.in.assign(static_cast<size_t>(l_.servers), false);
      r.routes.resize(static_cast<size_t>(l_.servers));
    }
    if (r.in[k]) return Status();
    r.in[k] = true;
    r.part[k] = std::move(part);
    r.routes[k] = {std::move(msg.route), h.getRequestId()};
    if (++r.count < l_.servers) return Status();
    GradStats total = sum_over_servers(r.part);
    // A stop asked of the scheduler (a signal) joins the servers' own: all
    // of them checkpoint this round and the job ends after it. So does a job
    // left with fewer workers than cluster.min_workers.
    const bool asked = total.control.stop;
    const bool signalled = stop_requested();  // read once: every server gets the same answer
    const bool too_few = members_ < o_.min_workers;
    total.control.stop = asked || signalled || too_few;
    if (total.control.stop && !asked && !stop_logged_) {
      if (signalled)
        spdlog::info("scheduler: stop requested (signal {}); the job stops after step {} with a checkpoint",
                     stop_signal(), h.getStep() + 1);
      else
        spdlog::warn(
            "scheduler: {}, fewer than cluster.min_workers = {}; the job stops after step {} with a checkpoint",
            remain(), o_.min_workers, h.getStep() + 1);
      stop_logged_ = true;
      if (!signalled)
        too_few_ = deadline_exceeded(
            "scheduler: the job stopped after step {} with a checkpoint: {} (the others sent no heartbeat), fewer "
            "than cluster.min_workers = {}; start workers and resume (checkpoint.resume = auto)",
            h.getStep() + 1, remain(), o_.min_workers);
    }
    // Workers past their start barrier join at the next step: every server
    // admits them with this answer (not with one that asks for a redo: the
    // servers' second answer is the step's).
    std::vector<int32_t> admitted;
    if (!total.redo && !total.control.stop)
      for (auto& [rank, j] : joining_)
        if (j.ready) {
          total.joined.push_back({rank, j.process});
          admitted.push_back(rank);
        }
    for (size_t s = 0; s < r.routes.size(); ++s) {
      OutMessage reply(wire::Kind::REPORT, o_.job_id, 0, h.getStep(), r.routes[s].second);
      to_wire(total, reply.header().initStats());
      told(router_.send(r.routes[s].first, reply.finish(), Deadline::after(o_.timeout_s)),
           l_.server_rank(static_cast<int>(s)), fmt::format("the sum of step {}", h.getStep()));
    }
    rounds_.erase(h.getStep());
    for (int32_t rank : admitted) PST_RETURN_IF_ERROR(admit(rank, h.getStep() + 1));
    return Status();
  }

  // What became of an answer to a node that waits on the scheduler (the
  // start barrier, a round's sum). A node can die between asking and being
  // answered (a server killed after it sent its statistics): its line is
  // gone, and the answer with it. That is the node's fault, not the job's:
  // the others are answered all the same, and the liveness check decides
  // what the silent node's absence means (a worker removed, the job
  // re-formed or ended), as for a node that dies at any other moment.
  void told(const Status& sent, int32_t rank, const std::string& what) const {
    if (!sent.ok())
      spdlog::warn("scheduler: {} did not take {}: {}; the liveness check decides whether it is gone",
                   node_name(l_, rank), what, sent.message());
  }

  // "2 of 3 workers remain": members now, of the most the job has had.
  std::string remain() const { return fmt::format("{} of {} workers remain", members_, peak_members_); }

  // A worker that registered once the job runs: the lowest free place (never
  // filled, or a removed worker's), bound to its process; it joins once it
  // has passed its start barrier.
  Status on_join_request(Registrant r) {
    if (r.role == wire::Role::SERVER && restarts_left_ > 0 && static_cast<int>(spares_.size()) < l_.servers) {
      spdlog::info(
          "scheduler: a server on {} registered while the job runs; it takes the place of a server that is lost, "
          "if one is",
          r.host);
      spares_.push_back(std::move(r));
      return Status();
    }
    int32_t place = -1;
    if (r.role == wire::Role::WORKER)
      for (int w = 0; w < l_.workers && place < 0; ++w) {
        const int32_t rank = l_.worker_rank(w);
        if (removed_[static_cast<size_t>(rank)] && !joining_.count(rank)) place = rank;
      }
    if (place < 0) {
      const std::string why =
          r.role != wire::Role::WORKER
              ? fmt::format("the job has started: a {} cannot join it (only workers can)",
                            r.role == wire::Role::SERVER ? "server" : "scheduler")
              : fmt::format(
                    "the job has started and has all the workers it takes (cluster.max_workers = {}, with "
                    "{} joining)",
                    l_.workers, joining_.size());
      rejecter_.reject(router_, r.route, {wire::ErrorCode::BAD_HEADER, why}, nullptr);
      return Status();
    }
    WorkerHosts me{{place, r.host}};
    const Status sent =
        router_.send(r.route, node_table(o_, roster_, me, r, place, true), Deadline::after(o_.timeout_s));
    if (!sent.ok()) {  // it has gone already: the place stays free
      spdlog::warn("scheduler: a worker on {} that registered did not take its node table: {}", r.host, sent.message());
      return Status();
    }
    senders_.bind(place, r.route);
    Join& j = joining_[place];
    j.route.copy(r.route);
    j.process = r.process;
    j.metrics = r.metrics;
    last_seen_[static_cast<size_t>(place)] = Clock::now();
    spdlog::info("scheduler: a worker on {} takes the free place of {}; it joins the job at a step once it is ready",
                 r.host, node_name(l_, place));
    return Status();
  }

  // The joiner of `rank` is a member from `step` on: its barrier is answered
  // with that step.
  Status admit(int32_t rank, int64_t step) {
    auto it = joining_.find(rank);
    Join j = std::move(it->second);
    joining_.erase(it);
    const size_t r = static_cast<size_t>(rank);
    removed_[r] = false;
    done_[r] = false;
    process_[r] = j.process;
    last_seen_[r] = Clock::now();
    ++remaining_;
    ++alive_workers_;
    ++members_;
    peak_members_ = std::max(peak_members_, members_);
    publish_alive();
    spdlog::info("scheduler: {} joins the job at step {}; {} workers in the job", node_name(l_, rank), step, members_);
    OutMessage go(wire::Kind::BARRIER, o_.job_id, 0, step, j.barrier_request);
    const Status sent = router_.send(j.route, go.finish(), Deadline::after(o_.timeout_s));
    if (!sent.ok()) spdlog::warn("scheduler: {} did not take its start: {}", node_name(l_, rank), sent.message());
    if (!j.metrics.empty() && targets_ && !o_.file_sd.empty()) {
      std::erase_if(*targets_, [&](const ScrapeTarget& t) { return t.rank == rank; });
      targets_->push_back({j.metrics, "worker", rank});
      const Status written = write_file_sd(o_.file_sd, *targets_, o_.job_id);
      if (!written.ok()) spdlog::warn("scheduler: scrape targets: {}", written.message());
    }
    return Status();
  }

  // A node silent for longer than the limit is dead. A worker of a job
  // that met at the rendezvous is removed and the job goes on; otherwise the
  // job ends, and the servers waiting for statistics and the nodes at the
  // barrier learn why.
  Status check_liveness() {
    const auto now = Clock::now();
    // Before the start barrier, nodes registered with --role may still be
    // loading their data (and send no heartbeat yet): the start deadline
    // applies. Under mpirun every node beats from the start.
    const double limit = released_ || !o_.rendezvous ? o_.liveness_s : o_.start_timeout_s;
    // A joiner loads its data before its barrier (no heartbeat yet): the
    // start deadline applies until then. One that dies frees its place.
    for (auto it = joining_.begin(); it != joining_.end();) {
      const double silent = std::chrono::duration<double>(now - last_seen_[static_cast<size_t>(it->first)]).count();
      if (silent <= (it->second.ready ? o_.liveness_s : o_.start_timeout_s)) {
        ++it;
        continue;
      }
      spdlog::warn("scheduler: {} sent nothing for {:.1f} s while joining; its place is free again",
                   node_name(l_, it->first), silent);
      it = joining_.erase(it);
    }
    for (int32_t r = 1; r < nodes_; ++r) {
      const double silent = std::chrono::duration<double>(now - last_seen_[static_cast<size_t>(r)]).count();
      if (done_[static_cast<size_t>(r)] || silent <= limit) continue;
      if (o_.metrics) o_.metrics->failure(l_.is_server(r) ? "server" : "worker");
      if (released_ && o_.rendezvous && l_.is_worker(r)) {
        PST_RETURN_IF_ERROR(remove_worker(r, silent));
        continue;
      }
      const Status dead = deadline_exceeded(
          "scheduler: {} sent nothing for {:.1f} s (no heartbeat); it is taken as dead", node_name(l_, r), silent);
      --(l_.is_server(r) ? alive_servers_ : alive_workers_);
      publish_alive();
      if (released_ && o_.rendezvous && restarts_left_ > 0 && alive_workers_ > 0) return reform(r, dead);
      const Rejection verdict{wire::ErrorCode::INTERNAL, dead.message()};
      for (auto& [step, round] : rounds_)
        for (auto& [route, request] : round.routes)
          if (route.size() > 0)
            (void)router_.send(route, error_reply(verdict, o_.job_id, 0, nullptr), Deadline::after(1));
      if (!released_)
        for (Waiting& w : barrier_)
          (void)router_.send(w.route, error_reply(verdict, o_.job_id, 0, nullptr), Deadline::after(1));
      return dead;
    }
    return Status();
  }

 public:
  // How many more times a lost server re-forms the job (SchedulerOptions::max_restarts).
  void allow_restarts(int n) { restarts_left_ = n; }

 private:
  // Server rank `lost` is gone: every live node learns that the job
  // re-forms (an error with code REFORM on its heartbeat line, and on the
  // line of a statistics round or a join it waits on), and the watch ends
  // with kAborted.
  Status reform(int32_t lost, const Status& dead) {
    const std::string why = fmt::format(
        "{}; the job re-forms: every node registers again, and training resumes from the newest complete "
        "checkpoint once a server takes its place ({} restarts left after this one)",
        dead.message(), restarts_left_ - 1);
    spdlog::warn("{}", why);
    if (o_.metrics) o_.metrics->reformed();
    const Rejection word{wire::ErrorCode::REFORM, why};
    auto tell = [&](const zmq::message_t& route) {
      if (route.size() > 0) (void)router_.send(route, error_reply(word, o_.job_id, 0, nullptr), Deadline::after(1));
    };
    for (int32_t q = 1; q < nodes_; ++q)
      if (q != lost && !done_[static_cast<size_t>(q)]) tell(beat_routes_[static_cast<size_t>(q)]);
    for (auto& [step, round] : rounds_)
      for (auto& [route, request] : round.routes) tell(route);
    for (auto& [rank, j] : joining_) tell(j.route);
    joining_.clear();
    return aborted("{}", why);
  }

 private:
  // Takes worker rank r out of the job: the servers learn it on their
  // heartbeat lines (the whole list each time, so a lost message is made up
  // by the next), and stop waiting for its pushes.
  Status remove_worker(int32_t r, double silent) {
    removed_[static_cast<size_t>(r)] = true;
    done_[static_cast<size_t>(r)] = true;
    --remaining_;
    --alive_workers_;
    --members_;
    publish_alive();
    spdlog::warn("scheduler: {} sent nothing for {:.1f} s (no heartbeat): removed from the job; {}", node_name(l_, r),
                 silent, remain());
    // The list names each removed worker's process too: a server applies it
    // only to that process, not to a worker that has joined in its place
    // since (the list and the join come on different lines).
    OutMessage note(wire::Kind::MEMBERSHIP, o_.job_id, 0, 0, 0);
    std::vector<int32_t> gone;
    for (int32_t q = 1; q < nodes_; ++q)
      if (removed_[static_cast<size_t>(q)] && process_[static_cast<size_t>(q)] != 0) gone.push_back(q);
    auto list = note.header().initDeparted(static_cast<unsigned>(gone.size()));
    auto processes = note.header().initDepartedProcesses(static_cast<unsigned>(gone.size()));
    for (unsigned i = 0; i < list.size(); ++i) {
      list.set(i, gone[i]);
      processes.set(i, process_[static_cast<size_t>(gone[i])]);
    }
    const Frames frames = note.finish();
    for (int32_t q = 1; q < nodes_; ++q) {
      const zmq::message_t& route = beat_routes_[static_cast<size_t>(q)];
      if (!l_.is_server(q) || done_[static_cast<size_t>(q)] || route.size() == 0) continue;
      Frames copy;
      for (const zmq::message_t& f : frames) copy.emplace_back(f.data(), f.size());
      const Status sent = router_.send(route, std::move(copy), Deadline::after(o_.timeout_s));
      if (!sent.ok()) spdlog::warn("scheduler: {} did not take the membership: {}", node_name(l_, q), sent.message());
    }
    return Status();
  }

  Router& router_;
  const SchedulerOptions& o_;
  const JobLayout& l_;
  Rejecter& rejecter_;
  RankBinding& senders_;
  Roster roster_;
  std::vector<ScrapeTarget>* targets_;
  const int32_t nodes_;
  const int start_workers_;
  std::vector<Clock::time_point> last_seen_;
  std::vector<bool> done_;                   // sent Shutdown, or removed
  std::vector<bool> removed_;                // workers taken out of the job, and free places
  std::vector<uint64_t> process_;            // the process each worker rank was given to (0: unknown)
  std::vector<zmq::message_t> beat_routes_;  // each node's heartbeat line
  int remaining_;
  int64_t alive_servers_, alive_workers_;
  int64_t members_;        // workers in the job (not removed; a finished one counts)
  int64_t peak_members_;   // the most it has had
  struct Join {            // a worker joining: registered, not yet admitted
    zmq::message_t route;  // its line to the scheduler (registration, start barrier)
    uint64_t process = 0;
    std::string metrics;
    bool ready = false;  // past its start barrier (which waits for its admission)
    uint64_t barrier_request = 0;
  };
  std::map<int32_t, Join> joining_;
  std::vector<Registrant> spares_;  // servers waiting for a re-form
  // The start barrier: the routes waiting for release.
  struct Waiting {
    zmq::message_t route;
    uint64_t request = 0;
    int32_t rank = 0;
  };
  std::vector<Waiting> barrier_;
  int servers_at_barrier_ = 0;
  bool released_ = false;
  std::map<int64_t, Round> rounds_;
  bool stop_logged_ = false;
  Status too_few_;
  int restarts_left_ = 0;
};

}  // namespace

Status run_scheduler(Router& router, const SchedulerOptions& o) {
  std::vector<ScrapeTarget> targets = o.targets;
  // Rejections are counted (pst_messages_rejected_total), logged at a
  // bounded rate and answered only where the peer has room (comm/rejecter.h).
  Rejecter rejecter(o.job_id, 0, "scheduler", [metrics = o.metrics](const char* reason) {
    if (metrics) metrics->rejected(reason);
  });
  // Which process speaks for each rank: the one that registered it, or
  // (mpirun, no rendezvous) the first one heard in its name.
  RankBinding senders(o.layout.nodes());
  Roster roster;
  const int start = o.start_workers > 0 ? o.start_workers : o.layout.workers;
  if (o.rendezvous)
    PST_RETURN_IF_ERROR(rendezvous(router, o, start, /*reforming=*/false, &targets, rejecter, senders, &roster));
  if (!o.file_sd.empty()) {
    PST_RETURN_IF_ERROR(write_file_sd(o.file_sd, targets, o.job_id));
    spdlog::info("scheduler: Prometheus targets of {} processes in {}", targets.size(), o.file_sd);
  }
  // A lost server ends a watch with kAborted when the job may re-form: the
  // rendezvous runs again for the servers and the workers that remained.
  Status ran;
  for (int restarts = 0;; ++restarts) {
    JobWatch watch(router, o, rejecter, senders, std::move(roster), &targets);
    watch.allow_restarts(o.max_restarts - restarts);
    PST_RETURN_IF_ERROR(watch.take_early_joiners());
    ran = Status();
    while (ran.ok() && watch.running()) ran = watch.step();
    if (ran.code() != StatusCode::kAborted) {
      watch.turn_away_joiners();
      PST_RETURN_IF_ERROR(ran);
      ran = watch.outcome();
      break;
    }
    // Each rank speaks again from the process that registers it now; the
    // servers that registered while the job ran are the first.
    senders = RankBinding(o.layout.nodes());
    roster = Roster();
    roster.servers = watch.take_spares();
    targets = o.targets;
    PST_RETURN_IF_ERROR(
        rendezvous(router, o, watch.live_workers(), /*reforming=*/true, &targets, rejecter, senders, &roster));
    if (!o.file_sd.empty()) PST_RETURN_IF_ERROR(write_file_sd(o.file_sd, targets, o.job_id));
  }
  if (rejecter.count() > 0) spdlog::info("scheduler: {} messages rejected ({})", rejecter.count(), rejecter.reasons());
  return ran;
}

}  // namespace pst
