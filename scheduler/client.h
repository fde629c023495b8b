// The nodes' side of every conversation with the scheduler when the roles
// start on their own (`pst train --role`; scheduler/scheduler.h is the
// other side): registration and the node table, the start barrier, and the
// servers' sum of gradient statistics. Heartbeats and Shutdowns are
// scheduler/heartbeat.h's. Under mpirun, MPI does the first three
// (job/mpi.cc).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "comm/grad_stats.h"
#include "comm/layout.h"
#include "comm/protocol.capnp.h"
#include "comm/socket.h"
#include "core/status.h"

namespace pst {

// A node's registration: its role, the endpoint it bound (servers), its host
// and its /metrics (empty when off).
struct NodeRegistration {
  wire::Role role = wire::Role::WORKER;
  std::string endpoint, host, metrics;
  // train.output holds a run: a worker may only join a running job, a
  // server only take a lost one's place when the job re-forms.
  bool join_only = false;
};
// The scheduler's answer: this node's rank and the servers' endpoints
// (servers 0..S-1); joined: the job runs already, and this worker joins it.
struct NodeTable {
  int32_t rank = -1;
  std::vector<std::string> servers;
  bool joined = false;
  int32_t start_workers = 0;  // the workers the job (re-)starts with; 0: cluster.workers
  bool reformed = false;      // the job re-forms: resume from its newest complete checkpoint
};

// Registers with the scheduler of job `job_id` (of `layout`) and waits for
// the node table, at most timeout_s (cluster.start_timeout_s) or until the
// process is asked to stop. Each answer is checked: a rank of the node's
// role, an endpoint for every server.
// Thread safety: these functions use `scheduler` from the calling thread only.
Result<NodeTable> register_with_scheduler(Dealer& scheduler, uint64_t job_id, const JobLayout& layout,
                                          const NodeRegistration& node, double timeout_s);
// The start barrier: returns once every server of the job is ready, within
// start_timeout_s (sending within timeout_s), with the step the node starts
// at: 0, or for a worker that joins a running job, the step it was admitted at.
Result<int64_t> pass_start_barrier(Dealer& scheduler, uint64_t job_id, int32_t rank, double timeout_s,
                                   double start_timeout_s);

// The other servers of a job, for the question a server asks them once the
// scheduler is gone (docs/design.md, The scheduler's death).
struct PeerServers {
  zmq::context_t* context = nullptr;   // none: no server is asked
  std::vector<std::string> endpoints;  // by server index; this server's own is not asked
};

// S server processes started without MPI: each reports its statistics to
// the scheduler, which answers with the sum (added in server order). Once
// the scheduler is gone (abandon()), a server still waiting for a sum asks
// the other servers for it: should the scheduler have died between its
// answers, the servers that had the sum give it to those that did not, and
// every server completes the same step.
// Thread safety: all_reduce is called by the update thread only; abandon()
// and sum_of() may be called from any thread.
class SchedulerStatsReducer final : public GradStatsReducer {
 public:
  SchedulerStatsReducer(std::unique_ptr<Dealer> scheduler, uint64_t job_id, int32_t rank, PeerServers peers = {})
      : scheduler_(std::move(scheduler)), job_id_(job_id), rank_(rank), peers_(std::move(peers)) {}
  Result<GradStats> all_reduce(int server, int64_t step, const GradStats& local, Deadline deadline) override;
  void abandon(const std::string& why) override;
  SumAnswer sum_of(int64_t step, int round) const override;
  bool asks_servers() const override { return peers_.context != nullptr && peers_.endpoints.size() > 1; }

 private:
  struct Sum {
    int64_t step = -1;
    int round = 0;
    GradStats total;
  };
  // The sum from a server that has it, or the error `lost` (the scheduler
  // is gone) when none does or some do not answer by the deadline.
  Result<GradStats> ask_servers(int server, int64_t step, int round, const std::string& lost, Deadline deadline);
  void keep(Sum sum);  // (mu_ held)

  std::unique_ptr<Dealer> scheduler_;
  mutable std::mutex mu_;
  std::string abandoned_;  // guarded by mu_; empty: not abandoned
  std::vector<Sum> sums_;  // guarded by mu_: the last rounds' sums (the newest last)
  uint64_t job_id_;
  int32_t rank_;
  PeerServers peers_;
  std::vector<std::unique_ptr<Dealer>> peer_lines_;  // by server index, made when first asked
  uint64_t request_ = 1;
  int64_t last_step_ = -1;
  int round_ = 0;
};

}  // namespace pst
