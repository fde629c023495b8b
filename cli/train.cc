#include <cstdio>
#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/train_common.h"
#include "comm/mpi_session.h"
#include "core/logging.h"
#include "model/backend.h"
#include "ps/local_client.h"
#include "ps/server.h"
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
  std::FILE* metrics = std::fopen((dir + "/metrics.jsonl").c_str(), "w");
  if (!metrics) spdlog::error("cannot write {}/metrics.jsonl", dir);
  return metrics;
}

int finish_training(const JobConfig& job, const TaskData& data, Transformer& model,
                    const Result<TrainSummary>& summary) {
  if (!summary.ok()) {
    spdlog::error("training failed: {}", summary.status().to_string());
    return 1;
  }
  const std::string model_path = job.train.output + "/model.safetensors";
  Status s = save_model(model_path, job, model, data.g2p ? &data.g2p->letters : nullptr,
                        data.g2p ? &data.g2p->phones : nullptr);
  if (!s.ok()) {
    spdlog::error("{}", s.to_string());
    return 1;
  }
  spdlog::info("{} steps ({} applied, {} skipped) in {:.1f}s of training ({:.1f}s wall), {:.0f} tokens/s",
               summary->steps, summary->applied_steps, summary->skipped_steps, summary->train_seconds,
               summary->wall_seconds,
               summary->train_seconds > 0 ? static_cast<double>(summary->tokens) / summary->train_seconds : 0.0);
  spdlog::info("saved {}", model_path);
  return 0;
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
  auto data = load_task_data(*job);
  if (!data.ok()) {
    spdlog::error("{}", data.status().message());
    return 2;
  }
  auto backend = make_backend(*parse_device(job->train.device), job->train.matmul,
                              static_cast<int>(job->train.threads));
  if (!backend.ok()) {
    spdlog::error("{}", backend.status().message());
    return 2;
  }
  Transformer model(job->model, data->src_vocab, data->tgt_vocab, backend->get());
  std::vector<float> init(static_cast<size_t>(model.num_params()));
  init_params(model.table(), static_cast<uint64_t>(job->train.seed), init.data());
  spdlog::info("model: {} parameters ({} tensors), backend {}", model.num_params(),
               model.table().size(), (*backend)->name());

  // On a GPU the in-process server keeps its state there and runs the fused
  // update on it, as a single-GPU PyTorch job does.
  Backend* server_device = std::string((*backend)->name()) == "cuda" ? backend->get() : nullptr;
  ShardOptimizer server(*job, model.table(), whole_tensors(model.table()), init.data(), server_device);
  std::FILE* metrics = open_output(*job);
  if (!metrics) return 2;
  // Without mpirun one process plays every worker of the job in turn (each
  // its own shard of the data and dropout masks), which gives the steps of
  // the distributed job; cluster.servers only matters across processes.
  const int64_t workers = job->cluster.workers;
  if (job->cluster.consistency != Consistency::kBsp)
    spdlog::info("cluster.consistency = {}: one process runs its workers in lockstep (BSP); the mode applies "
                 "to mpirun jobs",
                 to_string(job->cluster.consistency));
  if (job->cluster.servers > 1)
    spdlog::info("cluster.servers = {}: one process keeps every shard (servers are separate only under mpirun)",
                 job->cluster.servers);
  LocalParameterClient client(&server, server_device != nullptr, static_cast<int>(workers));
  TrainerOptions topt;
  topt.metrics = metrics;
  topt.workers = workers;
  topt.shards.clear();
  for (int64_t w = 0; w < workers; ++w) topt.shards.push_back(w);
  Trainer trainer(*job, *data, &model, &client, topt);
  auto summary = trainer.run();
  std::fclose(metrics);
  return finish_training(*job, *data, model, summary);
}

}  // namespace pst
