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

// S server processes started without MPI: each reports its statistics to
// the scheduler, which answers with the sum (added in server order).
// Thread safety: the Dealer is used only by the calling (update) thread;
// abandon() may be called from any thread.
class SchedulerStatsReducer final : public GradStatsReducer {
 public:
  SchedulerStatsReducer(std::unique_ptr<Dealer> scheduler, uint64_t job_id, int32_t rank)
      : scheduler_(std::move(scheduler)), job_id_(job_id), rank_(rank) {}
  Result<GradStats> all_reduce(int server, int64_t step, const GradStats& local, Deadline deadline) override;
  void abandon(const std::string& why) override;

 private:
  std::unique_ptr<Dealer> scheduler_;
  std::mutex mu_;
  std::string abandoned_;  // guarded by mu_; empty: not abandoned
  uint64_t job_id_;
  int32_t rank_;
  uint64_t request_ = 1;
};

}  // namespace pst
