// What one process of a job learns from its bootstrap, and the settings it
// resolves for itself. job/ is the composition root: each launch mode has
// one bootstrap that makes a Cluster (job/local.cc: threads of one process;
// job/mpi.cc: mpirun; job/role.cc: processes started on their own that
// meet at the scheduler), and every mode then runs the same nodes
// (job/nodes.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "comm/grad_stats.h"
#include "comm/layout.h"
#include "comm/remote_client.h"
#include "comm/security.h"
#include "comm/socket.h"
#include "core/config.h"
#include "job/resume.h"
#include "monitoring/metrics.h"
#include "worker/task_data.h"

namespace pst {

class MpiGateway;  // comm/mpi_transport.h

// Made by a bootstrap, then read by the node this process (or thread) runs;
// start_barrier and reducer are called from that node's thread only.
struct Cluster {
  int32_t rank = 0;
  JobLayout layout;
  uint64_t job_id = 0;
  std::string scheduler;             // the scheduler's endpoint (heartbeats); empty: none (threads)
  std::vector<std::string> servers;  // endpoints of servers 0..S-1
  // Returns once every server is ready (the start barrier).
  std::function<Status()> start_barrier;
  // The reduction of gradient statistics a server uses.
  std::function<Result<std::shared_ptr<GradStatsReducer>>()> reducer;
  // This process's /metrics, if on; the scheduler's scrape targets known
  // before its rendezvous (under mpirun: every process's).
  MetricsServer* metrics = nullptr;
  std::vector<ScrapeTarget> targets;
  // Made once per process by prepare_start (threads: shared by every node):
  // the checkpoint the job resumes from (checkpoint.resume, every file read
  // and verified), and for servers the initial weights their shards start
  // from before it is restored.
  std::optional<ResumePoint> resume;
  std::shared_ptr<const std::vector<float>> initial;
  // A --role worker that joined a running job (docs/design.md, Membership):
  // the step it starts at, known once its start barrier has passed.
  bool joining = false;
  int64_t join_step = 0;
  // cluster.transport = mpi (job/mpi.cc): a worker's channel to server k,
  // and what a server runs beside its Router to reach the workers; null:
  // ZeroMQ (Dealers to `servers`, the Router alone).
  std::function<Result<std::unique_ptr<Channel>>(int server)> server_channel;
  std::function<Result<std::unique_ptr<MpiGateway>>(zmq::context_t&, Router&)> gateway;
};

// Fills cluster.resume, and cluster.initial when `servers` run in this process.
Status prepare_start(const JobConfig& job, const TaskData& data, bool servers, Cluster& cluster);

// A server's Router (or the scheduler's under mpirun): bound on cluster.host
// at a port the OS picks.
Result<std::unique_ptr<Router>> bind_node_router(const JobConfig& job, zmq::context_t& ctx);

// What worker `worker` of the job's layout tells its RemoteParameterClient:
// the job's deadline and wire (cluster.wire, cluster.wire_rounding with
// train.seed); `interrupt` (may be null) ends its waits.
RemoteClientOptions worker_client_options(const JobConfig& job, uint64_t job_id, int worker, const JobLayout& layout,
                                          const Interrupt* interrupt);

// The job's data, once its model is known to fit in this machine's memory
// (4 fp32 copies of the parameters: a worker's weights, gradients and
// transfer buffers, or a server's weights, moments and gradient). With
// train.epochs it sets train.steps from the data (resolve_epochs).
Result<TaskData> load_job_data(JobConfig& job);

// train.epochs > 0: train.steps = epochs x ceil(batches per epoch /
// (cluster.workers x train.accumulate)), logged. Either way, warns when the
// warmup outlasts the steps.
void resolve_epochs(JobConfig& job, const Dataset& train);

// This machine's host name (gethostname).
std::string host_name();
// security.mode on ctx's sockets (comm/security.h): the keys of
// security.key_file, else `given` (an mpirun job's, from rank 0); nullptr
// when the mode is none. Keep it while the context's sockets live.
Result<std::unique_ptr<JobSecurity>> enable_security(const JobConfig& job, zmq::context_t& ctx,
                                                     const std::optional<JobKeys>& given);

// Per-process settings left to auto: train.threads = 0 (workers share the
// host's cores; servers may use them all) and cluster.overlap = auto.
void resolve_node_settings(JobConfig& job, const JobLayout& layout, int32_t rank, int local_processes, bool all_local);
// The compute threads of one worker or server: `configured` when positive,
// else this process's CPU budget (core/cpus.h) divided among `sharers`
// workers unless the budget is the process's own. Logs the count and why.
int64_t resolve_threads(int64_t configured, int sharers, const char* who);

}  // namespace pst
