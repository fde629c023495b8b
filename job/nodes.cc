#include "job/nodes.h"

#include <algorithm>
#include <string_view>

#include <spdlog/spdlog.h>

#include "comm/mpi_transport.h"
#include "comm/remote_client.h"
#include "job/outputs.h"
#include "job/resume.h"
#include "model/param_table.h"
#include "ps/shard_server.h"
#include "scheduler/heartbeat.h"
#include "scheduler/scheduler.h"

namespace pst {
namespace {

// The liveness window: a process (or the scheduler's acknowledgements)
// silent this long is taken as gone.
double liveness_s(const JobConfig& job) {
  return job.cluster.heartbeat_s * static_cast<double>(job.cluster.heartbeat_misses);
}

}  // namespace

Status run_server(const JobConfig& job, const TaskData& data, zmq::context_t& ctx, std::unique_ptr<Router> router,
                  const Cluster& cluster) {
  const JobLayout& layout = cluster.layout;
  const int k = layout.server_index(cluster.rank);
  const ParamTable table = build_param_table(job.model, data.src_vocab, data.tgt_vocab);
  PST_ASSIGN_OR_RETURN(ShardPlan plan, ShardPlan::make(table.numels(), layout.servers, job.cluster.chunk_bytes));
  PST_CHECK_MSG(cluster.initial != nullptr, "server {}: the bootstrap made no initial weights", k);
  PST_ASSIGN_OR_RETURN(std::shared_ptr<GradStatsReducer> reducer, cluster.reducer());
  const std::string endpoint = router->endpoint();
  std::unique_ptr<ServerMetrics> metrics;
  if (cluster.metrics) metrics = std::make_unique<ServerMetrics>(cluster.metrics->families(), cluster.rank, k);
  if (k == 0) PST_RETURN_IF_ERROR(clear_previous_run(job));
  ShardServerOptions options = shard_server_options(job, cluster.job_id, k, layout);
  options.start_workers = static_cast<int>(job.cluster.workers);
  options.metrics = metrics.get();
  Router* bound = router.get();
  ShardServer server(job, table, plan, cluster.initial->data(), reducer.get(), std::move(router), options);
  // Made after the server, so it ends first: it hands over the Router's last
  // answers while the Router still exists.
  std::unique_ptr<MpiGateway> gateway;
  if (cluster.gateway) {
    PST_ASSIGN_OR_RETURN(gateway, cluster.gateway(ctx, *bound));
    spdlog::info("server {}: pushes and pulls over MPI (cluster.transport = mpi)", k);
  }
  if (cluster.resume) PST_RETURN_IF_ERROR(restore_server(server, *cluster.resume, table, plan, k, job.cluster.workers));
  spdlog::info("server {} at {}: {} chunks, {:.1f} MiB of weights", k, endpoint, plan.owned(k).size(),
               static_cast<double>(plan.bytes(k)) / (1 << 20));
  // The scheduler's word on membership comes on the heartbeat's line.
  // A scheduler that acknowledges no beat for the liveness window is gone:
  // the server stops with a checkpoint of the last step all completed.
  Heartbeat heartbeat(
      ctx, cluster.scheduler, cluster.job_id, cluster.rank, job.cluster.heartbeat_s,
      [&server](const std::vector<int32_t>& removed, const std::vector<uint64_t>& processes) {
        server.remove_workers(removed, processes);
      },
      liveness_s(job),
      [&server, &cluster](double silent) {
        server.scheduler_lost(
            fmt::format("the scheduler ({}) has acknowledged no heartbeat for {:.1f} s", cluster.scheduler, silent));
      },
      [&server](const std::string& why) { server.reform(why); });
  PST_RETURN_IF_ERROR(cluster.start_barrier());
  heartbeat.watch();
  if (cluster.metrics) cluster.metrics->set_ready();
  PST_RETURN_IF_ERROR(server.serve());
  heartbeat.finish();
  const double per_update = 1e3 / static_cast<double>(std::max<int64_t>(1, server.updates()));
  spdlog::info(
      "server {}: {} steps ({:.2f} ms of update and {:.2f} ms waiting for the servers' statistics a step), {} "
      "messages rejected{}",
      k, server.version(), server.update_seconds() * per_update, server.reduce_wait_seconds() * per_update,
      server.rejected(), server.rejected() > 0 ? fmt::format(" ({})", server.rejected_reasons()) : "");
  return Status();
}

TrainerOptions worker_trainer_options(const JobConfig& job, const JobLayout& layout, int w, const Backend& backend,
                                      std::FILE* metrics) {
  TrainerOptions topt;
  topt.shards = {w};
  topt.workers = layout.workers;
  topt.evaluate = w == 0;
  topt.progress = w == 0;
  topt.stop_at_max_minutes = false;
  topt.metrics = w == 0 ? metrics : nullptr;
  topt.overlap = job.cluster.overlap == Overlap::kOn ||
                 (job.cluster.overlap == Overlap::kAuto && std::string_view(backend.name()) == "cuda");
  if (job.cluster.consistency != Consistency::kBsp) topt.clip_norm = job.optim.clip_norm;
  return topt;
}

Status run_worker(const JobConfig& job, const TaskData& data, zmq::context_t& ctx, const Cluster& cluster) {
  const JobLayout& layout = cluster.layout;
  const int w = layout.worker_index(cluster.rank);
  PST_ASSIGN_OR_RETURN(auto backend, make_backend(*parse_device(job.train.device), job.train.matmul,
                                                  static_cast<int>(job.train.threads), job.train.blas));
  Transformer model(job.model, data.src_vocab, data.tgt_vocab, backend.get());
  PST_ASSIGN_OR_RETURN(ShardPlan plan,
                       ShardPlan::make(model.table().numels(), layout.servers, job.cluster.chunk_bytes));
  // The scheduler's word that the job re-forms ends every wait on the
  // servers (one of them is gone): the worker registers again.
  Interrupt reform;
  const RemoteClientOptions copt = worker_client_options(job, cluster.job_id, w, layout, &reform);
  std::unique_ptr<RemoteParameterClient> client;
  if (cluster.server_channel) {
    std::vector<std::unique_ptr<Channel>> channels;
    for (int k = 0; k < layout.servers; ++k) {
      PST_ASSIGN_OR_RETURN(auto channel, cluster.server_channel(k));
      channels.push_back(std::move(channel));
    }
    PST_ASSIGN_OR_RETURN(client, RemoteParameterClient::connect(plan, std::move(channels), copt));
  } else {
    PST_ASSIGN_OR_RETURN(client, RemoteParameterClient::connect(ctx, plan, cluster.servers, copt));
  }
  OutputFile metrics;  // worker 0's (of the workers the job started with)
  if (w == 0 && !cluster.joining) {
    PST_ASSIGN_OR_RETURN(metrics, open_output(job, cluster.resume ? cluster.resume->manifest.step : -1));
  }
  // (A worker whose scheduler is gone logs it; its servers stop the job.)
  Heartbeat heartbeat(ctx, cluster.scheduler, cluster.job_id, cluster.rank, job.cluster.heartbeat_s, nullptr,
                      liveness_s(job), nullptr,
                      [&reform, w](const std::string& why) { reform.raise(aborted("worker {}: {}", w, why)); });
  PST_RETURN_IF_ERROR(cluster.start_barrier());
  heartbeat.watch();
  if (cluster.metrics) cluster.metrics->set_ready();
  TrainerOptions topt = worker_trainer_options(job, layout, w, *backend, metrics.get());
  // Worker 0 writes the model, or the worker the servers name lead once it
  // was removed (docs/design.md, Membership).
  topt.save = [&](const std::string& file) { return save_trained_model(job, data, model, file); };
  // ... and keeps metrics.jsonl while it is the lead.
  topt.metrics_for_lead = [&](bool lead, int64_t step) -> std::FILE* {
    metrics.reset();
    if (!lead) return nullptr;
    auto opened = open_output(job, step);
    if (!opened.ok()) {
      spdlog::warn("worker {}: metrics.jsonl not kept from step {}: {}", w, step + 1, opened.status().message());
      return nullptr;
    }
    metrics = std::move(*opened);
    spdlog::info("worker {}: the lead; it keeps {}/metrics.jsonl from step {}", w, job.train.output, step + 1);
    return metrics.get();
  };
  if (cluster.resume) {
    topt.first_step = cluster.resume->manifest.step;
    topt.data_pool = cluster.resume->manifest.data_pool(job.cluster.workers);
  }
  if (cluster.joining) {
    // A worker that joined a running job starts at the servers' step; the
    // servers say which batch it trains on, and the lead writes the model.
    topt.first_step = cluster.join_step;
    topt.evaluate = false;
    topt.progress = false;
    topt.metrics = nullptr;
    spdlog::info("worker {} joined the job at step {}", w, cluster.join_step);
  }
  std::unique_ptr<WorkerMetrics> monitor;
  if (cluster.metrics) monitor = std::make_unique<WorkerMetrics>(cluster.metrics->families(), cluster.rank);
  topt.monitor = monitor.get();
  Trainer trainer(job, data, &model, client.get(), topt);
  auto summary = trainer.run();
  if (!summary.ok()) return summary.status().with_context("training failed");
  PST_RETURN_IF_ERROR(client->shutdown());
  heartbeat.finish();
  return summary->lead ? report_summary(summary) : Status();
}

Status run_scheduler(const JobConfig& job, Router& router, const Cluster& cluster, bool rendezvous) {
  spdlog::info("job {:016x}: 1 scheduler, {} servers, {} workers; scheduler at {}", cluster.job_id,
               cluster.layout.servers, cluster.layout.workers, router.endpoint());
  SchedulerOptions options;
  options.job_id = cluster.job_id;
  options.layout = cluster.layout;
  options.timeout_s = job.cluster.timeout_s;
  options.liveness_s = liveness_s(job);
  options.min_workers = static_cast<int>(job.cluster.min_workers);
  // With the rendezvous, the workers' places are cluster.max_workers and
  // workers join in free ones (BSP: the servers agree on the step).
  options.start_workers = static_cast<int>(job.cluster.workers);
  options.joins = rendezvous && job.cluster.consistency == Consistency::kBsp;
  // A lost server re-forms the job from its newest checkpoint (BSP: ASP and
  // SSP servers hold no common step to checkpoint).
  options.max_restarts = options.joins ? static_cast<int>(job.cluster.max_restarts) : 0;
  options.start_timeout_s = job.cluster.start_timeout_s;
  options.rendezvous = rendezvous;
  options.on_start = [&cluster] {
    if (cluster.metrics) cluster.metrics->set_ready();
  };
  std::unique_ptr<SchedulerMetrics> metrics;
  if (cluster.metrics) {
    metrics = std::make_unique<SchedulerMetrics>(cluster.metrics->families(), cluster.rank);
    options.metrics = metrics.get();
    options.file_sd = file_sd_path(job);
    options.targets = cluster.targets;
  }
  if (!rendezvous) {  // under mpirun the ranks meet at an MPI barrier first
    PST_RETURN_IF_ERROR(cluster.start_barrier());
    options.on_start();
  }
  PST_RETURN_IF_ERROR(pst::run_scheduler(router, options));
  spdlog::info("every node has finished");
  return Status();
}

}  // namespace pst
