#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/train_common.h"
#include "comm/mpi_session.h"
#include "comm/remote_client.h"
#include "core/logging.h"
#include "core/philox.h"
#include "model/backend.h"
#include "ps/local_client.h"
#include "ps/server.h"
#include "ps/shard_server.h"
#include "ps/stats_reducer.h"
#include "worker/model_file.h"
#include "worker/trainer.h"

namespace pst {

std::FILE* open_output(const JobConfig& job) {
  const std::string dir = job.train.output;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    spdlog::error("train.output = \"{}\": cannot create directory: {}", dir, ec.message());
    return nullptr;
  }
  std::ofstream(dir + "/config.toml") << to_toml(job);
  // A resumed run adds to the history of the run it continues.
  const char* mode = job.checkpoint.resume.empty() ? "w" : "a";
  std::FILE* metrics = std::fopen((dir + "/metrics.jsonl").c_str(), mode);
  if (!metrics) spdlog::error("cannot write {}/metrics.jsonl", dir);
  return metrics;
}

Result<TaskData> load_job_data(const JobConfig& job) {
  PST_ASSIGN_OR_RETURN(TaskData data, load_task_data(job));
  PST_RETURN_IF_ERROR(check_fits_in_memory(build_param_table(job.model, data.src_vocab, data.tgt_vocab), 4));
  return data;
}

Status check_output_is_free(const JobConfig& job) {
  if (!job.checkpoint.resume.empty() || job.train.overwrite) return Status();
  std::vector<std::string> found;
  std::error_code ec;
  for (const char* name : {"model.safetensors", "metrics.jsonl"})
    if (std::filesystem::exists(job.train.output + "/" + name, ec)) found.push_back(name);
  const std::string root = checkpoint_root(job);
  const size_t checkpoints = step_dirs(root).size();
  if (checkpoints > 0) found.push_back(fmt::format("{} checkpoints in {}", checkpoints, root));
  if (found.empty()) return Status();
  std::string list;
  for (const std::string& f : found) list += (list.empty() ? "" : ", ") + f;
  return failed_precondition(
      "train.output = \"{}\" holds another run ({}): continue it with --resume latest, start over with --overwrite "
      "(removes them), or choose another train.output",
      job.train.output, list);
}

Status clear_previous_run(const JobConfig& job) {
  if (!job.train.overwrite || !job.checkpoint.resume.empty()) return Status();
  std::error_code ec;
  for (const auto& [step, dir] : step_dirs(checkpoint_root(job))) {
    std::filesystem::remove_all(dir, ec);
    if (ec) return io_error("--overwrite: cannot remove {}: {}", dir, ec.message());
  }
  std::filesystem::remove(job.train.output + "/model.safetensors", ec);
  if (ec) return io_error("--overwrite: cannot remove {}/model.safetensors: {}", job.train.output, ec.message());
  return Status();
}

Status save_trained_model(const JobConfig& job, const TaskData& data, Transformer& model) {
  const std::string model_path = job.train.output + "/model.safetensors";
  PST_RETURN_IF_ERROR(save_model(model_path, job, model, data.g2p ? &data.g2p->letters : nullptr,
                                 data.g2p ? &data.g2p->phones : nullptr));
  spdlog::info("saved {}", model_path);
  return Status();
}

int finish_training(const Result<TrainSummary>& summary) {
  if (!summary.ok()) {
    spdlog::error("training failed: {}", summary.status().to_string());
    return 1;
  }
  spdlog::info("{} steps ({} applied, {} skipped) in {:.1f}s of training ({:.1f}s wall), {:.0f} tokens/s",
               summary->steps, summary->applied_steps, summary->skipped_steps, summary->train_seconds,
               summary->wall_seconds,
               summary->train_seconds > 0 ? static_cast<double>(summary->tokens) / summary->train_seconds : 0.0);
  return 0;
}

// A graceful stop of a job without servers: its one optimizer is the
// checkpoint's one shard.
static Status checkpoint_single(const JobConfig& job, const ParamTable& table, const ShardOptimizer& opt, double loss) {
  const std::string root = checkpoint_root(job);
  const std::string dir = checkpoint_dir(root, opt.version());
  ShardState state;
  state.ranges = opt.owned();
  opt.export_state(&state.weights, &state.exp_avg, &state.exp_avg_sq);
  StepReport report;
  report.version = opt.version();
  report.applied_steps = opt.applied_steps();
  Manifest m =
      step_manifest(to_toml(job), static_cast<uint64_t>(job.train.seed), table, 1, job.cluster.chunk_bytes, report);
  m.loss = loss;
  PST_ASSIGN_OR_RETURN(int64_t bytes, write_checkpoint_part(root, dir, 0, table, state, std::move(m),
                                                            job.checkpoint.keep, Deadline::after(0)));
  spdlog::info("checkpoint of step {}: {:.1f} MiB ({})", opt.version(), static_cast<double>(bytes) / (1 << 20), dir);
  return Status();
}

// The /metrics of a job that is one process, and its file_sd with that one target.
static Result<std::unique_ptr<MetricsServer>> start_process_metrics(const JobConfig& job, uint64_t job_id) {
  PST_ASSIGN_OR_RETURN(auto m, start_metrics(job, 0));
  if (m) m->set_ready();  // one process: no rendezvous to wait for
  if (m) PST_RETURN_IF_ERROR(write_file_sd(file_sd_path(job), {{m->endpoint(), "process", 0}}, job_id));
  return m;
}

int run_train_threads(JobConfig& job, const TaskData& data) {
  const JobLayout layout{static_cast<int>(job.cluster.servers), static_cast<int>(job.cluster.workers)};
  const uint64_t job_id = pst::job_id(job);
  const ParamTable table = build_param_table(job.model, data.src_vocab, data.tgt_vocab);
  auto plan = ShardPlan::make(table.numels(), layout.servers, job.cluster.chunk_bytes);
  if (!plan.ok()) {
    spdlog::error("{}", plan.status().message());
    return 2;
  }
  job.train.threads = resolve_threads(job.train.threads, layout.workers, "each worker");
  std::vector<float> initial(static_cast<size_t>(table.total_numel()));
  init_params(table, static_cast<uint64_t>(job.train.seed), initial.data());
  std::unique_ptr<GradStatsReducer> reducer;
  if (layout.servers == 1) {
    reducer = std::make_unique<SingleServerReducer>();
  } else {
    reducer = std::make_unique<ThreadStatsReducer>(layout.servers);
  }
  auto prom = start_process_metrics(job, job_id);
  if (!prom.ok()) {
    spdlog::error("{}", prom.status().message());
    return 2;
  }
  std::vector<std::unique_ptr<ServerMetrics>> server_metrics;
  std::vector<std::unique_ptr<WorkerMetrics>> worker_metrics;
  zmq::context_t ctx;
  std::vector<std::unique_ptr<ShardServer>> servers;
  std::vector<std::string> endpoints;
  for (int k = 0; k < layout.servers; ++k) {
    auto router = Router::bind(ctx, fmt::format("inproc://pst-server-{}", k));
    if (!router.ok()) {
      spdlog::error("{}", router.status().message());
      return 2;
    }
    endpoints.push_back((*router)->endpoint());
    ShardServerOptions options = shard_server_options(job, job_id, k, layout);
    if (*prom) {
      server_metrics.push_back(std::make_unique<ServerMetrics>((*prom)->families(), layout.server_rank(k), k));
      options.metrics = server_metrics.back().get();
    }
    servers.push_back(std::make_unique<ShardServer>(job, table, *plan, initial.data(), reducer.get(), ctx,
                                                    std::move(*router), options));
  }
  for (int w = 0; w < layout.workers && *prom; ++w)
    worker_metrics.push_back(std::make_unique<WorkerMetrics>((*prom)->families(), layout.worker_rank(w)));
  auto resume = resume_point(job, table);
  if (!resume.ok()) {
    spdlog::error("{}", resume.status().message());
    return 2;
  }
  for (int k = 0; k < layout.servers && *resume; ++k) {
    const Status s = restore_server(*servers[static_cast<size_t>(k)], **resume, table, *plan, k);
    if (!s.ok()) {
      spdlog::error("{}", s.message());
      return 2;
    }
  }
  std::vector<std::unique_ptr<Backend>> backends;
  std::vector<std::unique_ptr<Transformer>> models;
  for (int w = 0; w < layout.workers; ++w) {
    auto be = make_backend(*parse_device(job.train.device), job.train.matmul, static_cast<int>(job.train.threads));
    if (!be.ok()) {
      spdlog::error("{}", be.status().message());
      return 2;
    }
    backends.push_back(std::move(*be));
    models.push_back(std::make_unique<Transformer>(job.model, data.src_vocab, data.tgt_vocab, backends.back().get()));
  }
  spdlog::info("{} servers and {} workers as threads of this process; backend {}, {} threads per worker",
               layout.servers, layout.workers, backends[0]->name(), job.train.threads);
  std::FILE* metrics = open_output(job);
  if (!metrics) return 2;
  std::vector<Status> status(static_cast<size_t>(layout.servers + layout.workers));
  Result<TrainSummary> summary0 = failed_precondition("worker 0 did not run");
  std::vector<std::thread> threads;
  for (int k = 0; k < layout.servers; ++k)
    threads.emplace_back([&, k] { status[static_cast<size_t>(k)] = servers[static_cast<size_t>(k)]->serve(); });
  for (int w = 0; w < layout.workers; ++w) {
    threads.emplace_back([&, w] {
      Status& st = status[static_cast<size_t>(layout.servers + w)];
      auto client = RemoteParameterClient::connect(ctx, *plan, endpoints,
                                                   RemoteClientOptions{job_id, w, layout, job.cluster.timeout_s});
      if (!client.ok()) {
        st = client.status();
        return;
      }
      TrainerOptions topt = worker_trainer_options(job, layout, w, *backends[static_cast<size_t>(w)], metrics);
      if (w == 0) topt.save = [&] { return save_trained_model(job, data, *models[0]); };
      if (*prom) topt.monitor = worker_metrics[static_cast<size_t>(w)].get();
      if (*resume) topt.first_step = (*resume)->manifest.step;
      Trainer trainer(job, data, models[static_cast<size_t>(w)].get(), client->get(), topt);
      auto summary = trainer.run();
      st = summary.ok() ? (*client)->shutdown() : summary.status();
      if (w == 0) summary0 = std::move(summary);
    });
  }
  for (auto& t : threads) t.join();
  std::fclose(metrics);
  for (size_t i = 0; i < status.size(); ++i) {
    if (status[i].ok()) continue;
    const int i_ = static_cast<int>(i);
    spdlog::error("{} {}: {}", i_ < layout.servers ? "server" : "worker",
                  i_ < layout.servers ? i_ : i_ - layout.servers, status[i].message());
    return 1;
  }
  const int rc = finish_training(summary0);
  if (rc == 0) linger_metrics(job, prom->get());
  if (rc == 0) retire_scrape_targets(job, job_id, prom->get());
  return rc;
}

int run_train(const ConfigArgs& args) {
  if (launched_by_mpirun()) return run_train_mpi(args);
  auto job = load_config(args.config, args.sets);
  if (!job.ok()) {
    spdlog::error("{}", job.status().message());
    return 2;
  }
  init_logging(job->train.log_level);
  spdlog::info("resolved config:\n{}", to_toml(*job));
  Status free = check_output_is_free(*job);
  if (free.ok()) free = clear_previous_run(*job);
  if (!free.ok()) {
    spdlog::error("{}", free.message());
    return 2;
  }
  auto data = load_job_data(*job);
  if (!data.ok()) {
    spdlog::error("{}", data.status().message());
    return 2;
  }
  // Checkpoints are the servers' work: a job that writes or resumes them
  // runs its server as a thread even when it has one server and one worker.
  const bool checkpoints =
      job->checkpoint.every_steps > 0 || job->checkpoint.every_minutes > 0 || !job->checkpoint.resume.empty();
  if ((job->cluster.servers > 1 || job->cluster.workers > 1 || checkpoints) &&
      job->cluster.in_process == InProcess::kThreads)
    return run_train_threads(*job, *data);
  if (checkpoints) {
    spdlog::error("checkpoints need cluster.in_process = threads (or mpirun, or --role): servers write them");
    return 2;
  }
  job->train.threads = resolve_threads(job->train.threads, 1, "worker");
  auto backend =
      make_backend(*parse_device(job->train.device), job->train.matmul, static_cast<int>(job->train.threads));
  if (!backend.ok()) {
    spdlog::error("{}", backend.status().message());
    return 2;
  }
  Transformer model(job->model, data->src_vocab, data->tgt_vocab, backend->get());
  std::vector<float> init(static_cast<size_t>(model.num_params()));
  init_params(model.table(), static_cast<uint64_t>(job->train.seed), init.data());
  spdlog::info("model: {} parameters ({} tensors), backend {}", model.num_params(), model.table().size(),
               (*backend)->name());

  // On a GPU the in-process server keeps its state there and runs the fused
  // update on it, as a single-GPU PyTorch job does.
  Backend* server_device = std::string((*backend)->name()) == "cuda" ? backend->get() : nullptr;
  ShardOptimizer server(*job, model.table(), whole_tensors(model.table()), init.data(), server_device);
  std::FILE* metrics = open_output(*job);
  if (!metrics) return 2;
  // One thread plays every worker of the job in turn (each its own shard of
  // the data and dropout masks): the steps of the distributed job, computed
  // in order; one server keeps every shard.
  const int64_t workers = job->cluster.workers;
  if (job->cluster.consistency != Consistency::kBsp)
    spdlog::info("cluster.consistency = {}: one thread runs its workers in lockstep (BSP)",
                 to_string(job->cluster.consistency));
  LocalParameterClient client(&server, server_device != nullptr, static_cast<int>(workers));
  const uint64_t id = job_id(*job);
  auto prom = start_process_metrics(*job, id);
  if (!prom.ok()) {
    spdlog::error("{}", prom.status().message());
    return 2;
  }
  std::unique_ptr<WorkerMetrics> monitor;
  if (*prom) monitor = std::make_unique<WorkerMetrics>((*prom)->families(), 0);
  TrainerOptions topt;
  topt.monitor = monitor.get();
  topt.metrics = metrics;
  topt.workers = workers;
  topt.shards.clear();
  for (int64_t w = 0; w < workers; ++w) topt.shards.push_back(w);
  topt.save = [&] { return save_trained_model(*job, *data, model); };
  Trainer trainer(*job, *data, &model, &client, topt);
  auto summary = trainer.run();
  std::fclose(metrics);
  if (summary.ok() && summary->stopped) {
    const Status s = checkpoint_single(*job, model.table(), server, summary->last_loss);
    if (!s.ok()) spdlog::error("the checkpoint at the stop was not written: {}", s.message());
  }
  const int rc = finish_training(summary);
  if (rc == 0) linger_metrics(*job, prom->get());
  if (rc == 0) retire_scrape_targets(*job, id, prom->get());
  return rc;
}

}  // namespace pst
