// Pieces of `pst train` shared by the one-process run (cli/train.cc) and the
// processes of an mpirun job (cli/train_mpi.cc).
#pragma once

#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "cli/commands.h"
#include "comm/layout.h"
#include "comm/security.h"
#include "comm/socket.h"
#include "core/config.h"
#include "model/transformer.h"
#include "monitoring/metrics.h"
#include "ps/checkpoint.h"
#include "ps/shard_server.h"
#include "ps/stats_reducer.h"
#include "scheduler/scheduler.h"
#include "worker/task_data.h"
#include "worker/trainer.h"

namespace pst {

// The job's data, once its model is known to fit in this machine's memory
// (4 fp32 copies of the parameters: a worker's weights, gradients and
// transfer buffers, or a server's weights, moments and gradient).
Result<TaskData> load_job_data(const JobConfig& job);
// Opens train.output with its config.toml and metrics.jsonl (appended to
// when the job resumes); null on error (logged).
std::FILE* open_output(const JobConfig& job);
// A fresh job (no checkpoint.resume) refuses an output folder that holds
// another run's model, metrics or checkpoints, unless train.overwrite: its
// files would be mixed with the new ones, and --resume latest would then
// continue the wrong run. Every process of a job checks, before it starts.
Status check_output_is_free(const JobConfig& job);
// With train.overwrite on a fresh job: removes the previous run's
// checkpoints and model. Called by the process that owns them (the one
// process, or server 0) before the job starts; metrics.jsonl is rewritten.
Status clear_previous_run(const JobConfig& job);
// Writes train.output/model.safetensors (worker 0, once the last weights
// are in; TrainerOptions::save).
Status save_trained_model(const JobConfig& job, const TaskData& data, Transformer& model);
// The closing log lines; the exit code.
int finish_training(const Result<TrainSummary>& summary);

// What a process of a multi-process job learns from its bootstrap (MPI, or
// the scheduler's rendezvous when roles start on their own).
struct NodeBootstrap {
  int32_t rank = 0;
  JobLayout layout;
  uint64_t job_id = 0;
  std::string scheduler;             // the scheduler's endpoint (heartbeats)
  std::vector<std::string> servers;  // endpoints of servers 0..S-1
  // Returns once every server is ready (the start barrier).
  std::function<Status()> start_barrier;
  // The reduction of gradient statistics a server uses.
  std::function<std::unique_ptr<GradStatsReducer>()> reducer;
  // This process's /metrics, if on; the scheduler's scrape targets known
  // before its rendezvous (under mpirun: every process's).
  MetricsServer* metrics = nullptr;
  std::vector<ScrapeTarget> targets;
};

// A checkpoint to resume from (checkpoint.resume): its directory and
// verified manifest.
struct ResumePoint {
  std::string dir;
  Manifest manifest;
};
// Null for a fresh job; an error names what is wrong with the checkpoint.
Result<std::optional<ResumePoint>> resume_point(const JobConfig& job, const ParamTable& table);
// Loads server k's ranges of the checkpoint into the server.
Status restore_server(ShardServer& server, const ResumePoint& from, const ParamTable& table, const ShardPlan& plan,
                      int k);

// This machine's host name (gethostname).
std::string host_name();
// security.mode on ctx's sockets (comm/security.h): the keys of
// security.key_file, else `given` (an mpirun job's, from rank 0); nullptr
// when the mode is none. Keep it while the context's sockets live.
Result<std::unique_ptr<JobSecurity>> enable_security(const JobConfig& job, zmq::context_t& ctx,
                                                     const std::optional<JobKeys>& given);
// Starts this process's /metrics at metrics.port + port_offset when
// metrics.enabled (null when off). With metrics.bind = 0.0.0.0 its endpoint
// names the address cluster.host resolves to.
Result<std::unique_ptr<MetricsServer>> start_metrics(const JobConfig& job, int port_offset);
// metrics.file_sd, or its default under train.output.
std::string file_sd_path(const JobConfig& job);
// Keeps /metrics up for metrics.linger_s after the work is done.
void linger_metrics(const JobConfig& job, const MetricsServer* metrics);
// Called by the process that wrote the job's file_sd (the scheduler, or the
// one process) after the job ended well and lingered: the file then lists
// no target, so Prometheus stops scraping processes that have exited on
// purpose and PstNodeDown (up == 0) does not fire for them. A failed job
// keeps its targets: its dead processes are worth an alert.
void retire_scrape_targets(const JobConfig& job, uint64_t job_id, const MetricsServer* metrics);

int run_server_node(const JobConfig& job, const TaskData& data, zmq::context_t& ctx, std::unique_ptr<Router> router,
                    const NodeBootstrap& node);
// The trainer options of worker w of a job of several processes or threads.
TrainerOptions worker_trainer_options(const JobConfig& job, const JobLayout& layout, int w, const Backend& backend,
                                      std::FILE* metrics);
int run_worker_node(const JobConfig& job, const TaskData& data, zmq::context_t& ctx, const NodeBootstrap& node);
int run_scheduler_node(const JobConfig& job, Router& router, const NodeBootstrap& node, bool rendezvous);
// Per-process settings left to auto: train.threads = 0 (workers share the
// host's cores; servers may use them all) and cluster.stream_bytes = 0.
void resolve_node_settings(JobConfig& job, const JobLayout& layout, int32_t rank, int local_processes, bool all_local);
// The compute threads of one worker or server: `configured` when positive,
// else this process's CPU budget (core/cpus.h) divided among `sharers`
// workers unless the budget is the process's own. Logs the count and why.
int64_t resolve_threads(int64_t configured, int sharers, const char* who);

int run_train_mpi(const ConfigArgs& args);
// A job of several servers or workers as threads of this process (inproc).
int run_train_threads(JobConfig& job, const TaskData& data);

}  // namespace pst
