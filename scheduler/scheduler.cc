#include "scheduler/scheduler.h"

#include <chrono>
#include <map>
#include <vector>

#include <fmt/format.h>
#include <kj/exception.h>
#include <spdlog/spdlog.h>

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
};

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
    r->request_id = m.header().getRequestId();
    return true;
  } catch (const kj::Exception& e) {
    *why = {wire::ErrorCode::BAD_HEADER,
            fmt::format("a registration that cannot be read: {}", e.getDescription().cStr())};
    return false;
  }
}

// Phase 1: collects Register messages and answers each with the node table.
Status rendezvous(Router& router, const SchedulerOptions& o, std::vector<ScrapeTarget>* targets, Rejecter& rejecter,
                  RankBinding& senders) {
  const JobLayout& l = o.layout;
  std::vector<Registrant> servers, workers;
  const Deadline deadline = Deadline::after(o.start_timeout_s);
  const Expectation e{o.job_id, l.nodes(), nullptr, -1};
  while (static_cast<int>(servers.size()) < l.servers || static_cast<int>(workers.size()) < l.workers) {
    auto msg = router.receive(deadline, fmt::format("registrations ({} of {} servers and {} of {} workers so far)",
                                                    servers.size(), l.servers, workers.size(), l.workers));
    if (!msg.ok()) return msg.status();
    const Counted counted(o.received);
    Rejection why;
    auto m = InMessage::parse(std::move(msg->frames), &why);
    if (m && validate(*m, e, &why) && m->header().getKind() != wire::Kind::REGISTER)
      why = {wire::ErrorCode::BAD_KIND,
             fmt::format("{} before the rendezvous is over", kind_name(m->header().getKind()))};
    else if (m && why.message.empty()) {
      Registrant r;
      if (read_registration(*m, &r, &why)) {
        auto& list = r.role == wire::Role::SERVER ? servers : workers;
        const int limit = r.role == wire::Role::SERVER ? l.servers : l.workers;
        if (r.role != wire::Role::SCHEDULER && static_cast<int>(list.size()) < limit) {
          r.route = std::move(msg->route);
          list.push_back(std::move(r));
          continue;
        }
        why = {wire::ErrorCode::BAD_HEADER,
               "a registration beyond the job's servers and workers (or a second scheduler)"};
      }
    }
    rejecter.reject(router, msg->route, why, m.get());
  }
  auto send_table = [&](const Registrant& r, int32_t rank) {
    senders.bind(rank, r.route);  // the rank speaks from the process that registered
    OutMessage t(wire::Kind::NODE_TABLE, o.job_id, 0, 0, r.request_id);
    t.header().setRank(rank);
    auto nodes = t.header().initNodes(static_cast<unsigned>(servers.size() + workers.size()));
    unsigned i = 0;
    for (size_t k = 0; k < servers.size(); ++k, ++i) {
      nodes[i].setRank(l.server_rank(static_cast<int>(k)));
      nodes[i].setRole(wire::Role::SERVER);
      nodes[i].setIndex(static_cast<int32_t>(k));
      nodes[i].setEndpoint(servers[k].endpoint);
      nodes[i].setHost(servers[k].host);
    }
    for (size_t w = 0; w < workers.size(); ++w, ++i) {
      nodes[i].setRank(l.worker_rank(static_cast<int>(w)));
      nodes[i].setRole(wire::Role::WORKER);
      nodes[i].setIndex(static_cast<int32_t>(w));
      nodes[i].setHost(workers[w].host);
    }
    return router.send(r.route, t.finish(), Deadline::after(o.timeout_s));
  };
  for (size_t k = 0; k < servers.size(); ++k)
    PST_RETURN_IF_ERROR(send_table(servers[k], l.server_rank(static_cast<int>(k))));
  for (size_t w = 0; w < workers.size(); ++w)
    PST_RETURN_IF_ERROR(send_table(workers[w], l.worker_rank(static_cast<int>(w))));
  for (size_t k = 0; k < servers.size(); ++k)
    targets->push_back({servers[k].metrics, "server", l.server_rank(static_cast<int>(k))});
  for (size_t w = 0; w < workers.size(); ++w)
    targets->push_back({workers[w].metrics, "worker", l.worker_rank(static_cast<int>(w))});
  spdlog::info("scheduler: {} servers and {} workers registered", l.servers, l.workers);
  return Status();
}

}  // namespace

Status run_scheduler(Router& router, const SchedulerOptions& o) {
  const JobLayout& l = o.layout;
  std::vector<ScrapeTarget> targets = o.targets;
  // Rejections are counted (pst_messages_rejected_total), logged at a
  // bounded rate and answered only where the peer has room (comm/rejecter.h).
  Rejecter rejecter(o.job_id, 0, "scheduler", [metrics = o.metrics](const char* reason) {
    if (metrics) metrics->rejected(reason);
  });
  // Which process speaks for each rank: the one that registered it, or
  // (mpirun, no rendezvous) the first one heard in its name.
  RankBinding senders(l.nodes());
  if (o.rendezvous) PST_RETURN_IF_ERROR(rendezvous(router, o, &targets, rejecter, senders));
  if (!o.file_sd.empty()) {
    PST_RETURN_IF_ERROR(write_file_sd(o.file_sd, targets, o.job_id));
    spdlog::info("scheduler: Prometheus targets of {} processes in {}", targets.size(), o.file_sd);
  }
  int64_t alive_servers = l.servers, alive_workers = l.workers;
  auto publish_alive = [&] {
    if (!o.metrics) return;
    o.metrics->set_alive("server", alive_servers);
    o.metrics->set_alive("worker", alive_workers);
  };
  publish_alive();
  const int32_t nodes = l.nodes();
  std::vector<Clock::time_point> last_seen(static_cast<size_t>(nodes), Clock::now());
  std::vector<bool> done(static_cast<size_t>(nodes), false);
  int remaining = nodes - 1;
  // Barrier: the routes waiting for release; released once every server is in.
  std::vector<std::pair<zmq::message_t, uint64_t>> barrier;
  int servers_at_barrier = 0;
  bool released = false;
  // Statistics of rounds in progress: per round, each server's part and route.
  struct Round {
    std::vector<double> sum;
    std::vector<bool> nonfinite, in;
    bool checkpoint = false, stop = false;
    std::vector<std::pair<zmq::message_t, uint64_t>> routes;
    int count = 0;
  };
  std::map<int64_t, Round> rounds;
  bool stop_logged = false;
  const Expectation e{o.job_id, nodes, nullptr, -1};
  while (remaining > 0) {
    auto msg = router.receive(Deadline::after(std::min(1.0, o.timeout_s)), "messages of the job");
    if (msg.ok()) {
      const Counted counted(o.received);
      Rejection why;
      auto m = InMessage::parse(std::move(msg->frames), &why);
      if (!m || !validate(*m, e, &why)) {
        rejecter.reject(router, msg->route, why, m.get());
        continue;
      }
      const auto h = m->header();
      const int32_t rank = h.getSender();
      if (rank < 1 || rank >= nodes) {
        // A registration after the rendezvous (a node started late, or once
        // too often) has no rank: the job's members are fixed.
        const Rejection late{wire::ErrorCode::BAD_HEADER,
                             h.getKind() == wire::Kind::REGISTER
                                 ? "the job has started: its servers and workers have all registered"
                                 : fmt::format("sender {} is not a node of this job (ranks 1..{})", rank, nodes - 1)};
        rejecter.reject(router, msg->route, late, m.get());
        continue;
      }
      if (!senders.admit(rank, msg->route)) {
        rejecter.drop(senders.spoofed(rank, msg->route));
        continue;
      }
      last_seen[static_cast<size_t>(rank)] = Clock::now();
      try {
        switch (h.getKind()) {
          case wire::Kind::SHUTDOWN:
            if (!done[static_cast<size_t>(rank)]) {
              done[static_cast<size_t>(rank)] = true;
              --remaining;
              --(l.is_server(rank) ? alive_servers : alive_workers);
              publish_alive();
            }
            break;
          case wire::Kind::BARRIER:
            if (released) break;
            barrier.emplace_back(std::move(msg->route), h.getRequestId());
            if (l.is_server(rank)) ++servers_at_barrier;
            if (servers_at_barrier == l.servers && static_cast<int>(barrier.size()) == l.servers + l.workers) {
              for (auto& [route, request] : barrier) {
                OutMessage r(wire::Kind::BARRIER, o.job_id, 0, 0, request);
                PST_RETURN_IF_ERROR(router.send(route, r.finish(), Deadline::after(o.timeout_s)));
              }
              released = true;
              spdlog::info("scheduler: every server is ready; the job starts");
              if (o.on_start) o.on_start();
            }
            break;
          case wire::Kind::REPORT: {
            if (h.which() != wire::Header::STATS || !l.is_server(rank)) break;
            const size_t k = static_cast<size_t>(l.server_index(rank));
            // A BSP job has one round in flight, two around its edges: more
            // open rounds are a server's bug, not state to keep.
            if (!rounds.count(h.getStep()) && rounds.size() >= kMaxOpenRounds) {
              rejecter.reject(
                  router, msg->route,
                  {wire::ErrorCode::BAD_STEP, fmt::format("statistics of step {} while {} rounds are open (at most {})",
                                                          h.getStep(), rounds.size(), kMaxOpenRounds)},
                  m.get());
              break;
            }
            Round& r = rounds[h.getStep()];
            if (r.in.empty()) {
              r.sum.assign(static_cast<size_t>(l.servers), 0.0);
              r.nonfinite.assign(static_cast<size_t>(l.servers), false);
              r.in.assign(static_cast<size_t>(l.servers), false);
              r.routes.resize(static_cast<size_t>(l.servers));
            }
            if (r.in[k]) break;
            r.in[k] = true;
            r.sum[k] = h.getStats().getSumSquares();
            r.nonfinite[k] = h.getStats().getNonfinite();
            r.checkpoint = r.checkpoint || h.getStats().getCheckpoint();
            r.stop = r.stop || h.getStats().getStop();
            r.routes[k] = {std::move(msg->route), h.getRequestId()};
            if (++r.count < l.servers) break;
            double total = 0;
            bool bad = false;
            for (int s = 0; s < l.servers; ++s) {
              total += r.sum[static_cast<size_t>(s)];
              bad = bad || r.nonfinite[static_cast<size_t>(s)];
            }
            // A stop asked of the scheduler (a signal) joins the servers' own:
            // all of them checkpoint this round and the job ends after it.
            const bool stop = r.stop || stop_requested();  // read once: every server gets the same answer
            if (stop && !r.stop && !stop_logged) {
              spdlog::info("scheduler: stop requested (signal {}); the job stops after step {} with a checkpoint",
                           stop_signal(), h.getStep() + 1);
              stop_logged = true;
            }
            for (auto& [route, request] : r.routes) {
              OutMessage reply(wire::Kind::REPORT, o.job_id, 0, h.getStep(), request);
              auto st = reply.header().initStats();
              st.setSumSquares(total);
              st.setNonfinite(bad);
              st.setCheckpoint(r.checkpoint);
              st.setStop(stop);
              PST_RETURN_IF_ERROR(router.send(route, reply.finish(), Deadline::after(o.timeout_s)));
            }
            rounds.erase(h.getStep());
            break;
          }
          default: break;  // heartbeats
        }
      } catch (const kj::Exception& e) {  // a field that cannot be read
        rejecter.reject(
            router, msg->route,
            {wire::ErrorCode::BAD_HEADER, fmt::format("a message that cannot be read: {}", e.getDescription().cStr())},
            nullptr);
      }
    } else if (msg.status().code() != StatusCode::kDeadlineExceeded) {
      return msg.status();
    }
    const auto now = Clock::now();
    // Before the start barrier, nodes registered with --role may still be
    // loading their data (and send no heartbeat yet): the start deadline
    // applies. Under mpirun every node beats from the start.
    const double limit = released || !o.rendezvous ? o.timeout_s : o.start_timeout_s;
    for (int32_t r = 1; r < nodes; ++r) {
      const double silent = std::chrono::duration<double>(now - last_seen[static_cast<size_t>(r)]).count();
      if (done[static_cast<size_t>(r)] || silent <= limit) continue;
      const Status dead = deadline_exceeded(
          "scheduler: {} sent nothing for {:.0f} s (no heartbeat); it is taken as dead", node_name(l, r), silent);
      if (o.metrics) {
        o.metrics->failure(l.is_server(r) ? "server" : "worker");
        --(l.is_server(r) ? alive_servers : alive_workers);
        publish_alive();
      }
      // Servers waiting for statistics and nodes at the barrier learn why.
      const Rejection verdict{wire::ErrorCode::INTERNAL, dead.message()};
      for (auto& [step, round] : rounds)
        for (auto& [route, request] : round.routes)
          if (route.size() > 0)
            (void)router.send(route, error_reply(verdict, o.job_id, 0, nullptr), Deadline::after(1));
      if (!released)
        for (auto& [route, request] : barrier)
          (void)router.send(route, error_reply(verdict, o.job_id, 0, nullptr), Deadline::after(1));
      return dead;
    }
  }
  if (rejecter.count() > 0) spdlog::info("scheduler: {} messages rejected ({})", rejecter.count(), rejecter.reasons());
  return Status();
}

}  // namespace pst
