// `pst train` as one process: S servers and W workers as threads over
// inproc sockets (cluster.in_process = threads, or whenever checkpoints are
// on), or one thread that plays every worker in turn against an in-process
// optimizer (sequential).
#include <condition_variable>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

#include "core/logging.h"
#include "core/philox.h"
#include "job/cluster.h"
#include "job/launch.h"
#include "job/nodes.h"
#include "job/outputs.h"
#include "job/resume.h"
#include "model/backend.h"
#include "ps/local_client.h"
#include "ps/shard_optimizer.h"

namespace pst {
namespace {

// The start barrier of a job of threads. A thread that fails before it
// (a bad checkpoint, a device it cannot open) releases the others with an
// error, so the job ends at once rather than at their deadlines.
// Thread safety: every method may be called from any thread.
class StartBarrier {
 public:
  explicit StartBarrier(int parties) : parties_(parties) {}
  Status arrive() {
    std::unique_lock<std::mutex> lock(mu_);
    if (++arrived_ == parties_) open_ = true;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_ || failed_; });
    return open_ ? Status() : failed_precondition("another server or worker of the job failed before the start");
  }
  // Called when a thread's node has failed; the first failure before the
  // start is the job's.
  void fail(const Status& s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (open_ || failed_) return;
    failed_ = true;
    first_ = s;
    cv_.notify_all();
  }
  Status first_failure() {
    std::lock_guard<std::mutex> lock(mu_);
    return first_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  const int parties_;
  int arrived_ = 0;      // guarded by mu_
  bool open_ = false;    // guarded by mu_
  bool failed_ = false;  // guarded by mu_
  Status first_;         // guarded by mu_
};

// One thread plays every worker of the job in turn (each its own shard of
// the data and dropout masks): the steps of the distributed job, computed
// in order; one optimizer keeps every shard.
Status train_sequential(JobConfig& job, const TaskData& data) {
  PST_RETURN_IF_ERROR(clear_previous_run(job));  // (with servers, server 0 does it)
  job.train.threads = resolve_threads(job.train.threads, 1, "worker");
  PST_ASSIGN_OR_RETURN(auto backend, make_backend(*parse_device(job.train.device), job.train.matmul,
                                                  static_cast<int>(job.train.threads), job.train.blas));
  Transformer model(job.model, data.src_vocab, data.tgt_vocab, backend.get());
  std::vector<float> init(static_cast<size_t>(model.num_params()));
  init_params(model.table(), static_cast<uint64_t>(job.train.seed), init.data());
  spdlog::info("model: {} parameters ({} tensors), backend {}", model.num_params(), model.table().size(),
               backend->name());
  // On a GPU the in-process server keeps its state there and runs the fused
  // update on it, as a single-GPU PyTorch job does.
  Backend* server_device = std::string(backend->name()) == "cuda" ? backend.get() : nullptr;
  ShardOptimizer server(job, model.table(), whole_tensors(model.table()), init.data(), server_device);
  PST_ASSIGN_OR_RETURN(OutputFile metrics, open_output(job));
  const int64_t workers = job.cluster.workers;
  if (job.cluster.consistency != Consistency::kBsp)
    spdlog::info("cluster.consistency = {}: one thread runs its workers in lockstep (BSP)",
                 to_string(job.cluster.consistency));
  LocalParameterClient client(&server, server_device != nullptr, static_cast<int>(workers));
  const uint64_t id = job_id(job);
  PST_ASSIGN_OR_RETURN(auto prom, start_process_metrics(job, id));
  std::unique_ptr<WorkerMetrics> monitor;
  if (prom) monitor = std::make_unique<WorkerMetrics>(prom->families(), 0);
  TrainerOptions topt;
  topt.monitor = monitor.get();
  topt.metrics = metrics.get();
  topt.workers = workers;
  topt.shards.clear();
  for (int64_t w = 0; w < workers; ++w) topt.shards.push_back(w);
  topt.save = [&](const std::string& file) { return save_trained_model(job, data, model, file); };
  Trainer trainer(job, data, &model, &client, topt);
  auto summary = trainer.run();
  metrics.reset();
  if (summary.ok() && summary->stopped) {
    const Status s = checkpoint_single(job, model.table(), server, summary->last_loss);
    if (!s.ok()) spdlog::error("the checkpoint at the stop was not written: {}", s.message());
  }
  PST_RETURN_IF_ERROR(report_summary(summary));
  close_metrics(job, id, prom.get(), /*owns_file_sd=*/true);
  return Status();
}

}  // namespace

Status train_threads(JobConfig& job, const TaskData& data) {
  const JobLayout layout{static_cast<int>(job.cluster.servers), static_cast<int>(job.cluster.workers)};
  const uint64_t id = job_id(job);
  job.train.threads = resolve_threads(job.train.threads, layout.workers, "each worker");
  PST_ASSIGN_OR_RETURN(auto prom, start_process_metrics(job, id));
  zmq::context_t ctx;
  std::vector<std::unique_ptr<Router>> routers;
  std::vector<std::string> endpoints;
  for (int k = 0; k < layout.servers; ++k) {
    PST_ASSIGN_OR_RETURN(auto router, Router::bind(ctx, fmt::format("inproc://pst-server-{}", k)));
    endpoints.push_back(router->endpoint());
    routers.push_back(std::move(router));
  }
  std::shared_ptr<GradStatsReducer> reducer;
  if (layout.servers == 1)
    reducer = std::make_shared<SingleServerReducer>();
  else
    reducer = std::make_shared<ThreadStatsReducer>(layout.servers);
  StartBarrier barrier(layout.servers + layout.workers);
  // The checkpoint is read and verified, and the initial weights made, once
  // for every node.
  Cluster start;
  PST_RETURN_IF_ERROR(prepare_start(job, data, /*servers=*/true, start));
  std::vector<Cluster> nodes(static_cast<size_t>(layout.servers + layout.workers), start);
  for (size_t i = 0; i < nodes.size(); ++i) {
    Cluster& c = nodes[i];
    c.rank = static_cast<int32_t>(i) + 1;  // rank 0 is the scheduler's, which a job of threads has none of
    c.layout = layout;
    c.job_id = id;
    c.servers = endpoints;
    c.start_barrier = [&barrier] { return barrier.arrive(); };
    c.reducer = [reducer]() -> Result<std::shared_ptr<GradStatsReducer>> { return reducer; };
    c.metrics = prom.get();
  }
  spdlog::info("{} servers and {} workers as threads of this process, {} compute threads per worker", layout.servers,
               layout.workers, job.train.threads);
  auto name = [&](size_t i) {
    const int k = static_cast<int>(i);
    return k < layout.servers ? fmt::format("server {}", k) : fmt::format("worker {}", k - layout.servers);
  };
  std::vector<Status> status(nodes.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < nodes.size(); ++i) {
    threads.emplace_back([&, i] {
      const bool server = static_cast<int>(i) < layout.servers;
      status[i] =
          server ? run_server(job, data, ctx, std::move(routers[i]), nodes[i]) : run_worker(job, data, ctx, nodes[i]);
      if (!status[i].ok()) barrier.fail(status[i].with_context(name(i)));
    });
  }
  for (auto& t : threads) t.join();
  // A failure before the start is the job's; after it, the first node's in
  // rank order.
  if (Status first = barrier.first_failure(); !first.ok()) return first;
  for (size_t i = 0; i < status.size(); ++i)
    if (!status[i].ok()) return status[i].with_context(name(i));
  close_metrics(job, id, prom.get(), /*owns_file_sd=*/true);
  return Status();
}

Status train_local(const TrainArgs& args) {
  PST_ASSIGN_OR_RETURN(JobConfig job, load_config(args.config, args.sets));
  init_logging(job.train.log_level);
  spdlog::info("resolved config:\n{}", to_toml(job));
  PST_RETURN_IF_ERROR(check_fixed_size(job, "a one-process"));
  PST_RETURN_IF_ERROR(check_zmq_transport(job, "a one-process"));
  PST_RETURN_IF_ERROR(check_output_is_free(job));
  PST_ASSIGN_OR_RETURN(TaskData data, load_job_data(job));
  // Checkpoints are the servers' work: a job that writes or resumes them
  // runs its server as a thread even when it has one server and one worker.
  const bool checkpoints =
      job.checkpoint.every_steps > 0 || job.checkpoint.every_minutes > 0 || !job.checkpoint.resume.empty();
  if ((job.cluster.servers > 1 || job.cluster.workers > 1 || checkpoints) &&
      job.cluster.in_process == InProcess::kThreads)
    return train_threads(job, data);
  if (checkpoints)
    return invalid_argument("checkpoints need cluster.in_process = threads (or mpirun, or --role): servers write them");
  return train_sequential(job, data);
}

}  // namespace pst
