#include "job/outputs.h"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "comm/socket.h"
#include "model/backend.h"
#include "ps/checkpoint.h"
#include "ps/shard_server.h"
#include "worker/model_file.h"

namespace pst {

namespace {

// The step of a metrics.jsonl row ({"kind":...,"step":N,...}); -1 when it has none.
int64_t row_step(const std::string& row) {
  const size_t at = row.find("\"step\":");
  if (at == std::string::npos) return -1;
  return std::strtoll(row.c_str() + at + 7, nullptr, 10);
}

// Keeps the rows of metrics.jsonl up to step `last` (and those without a step).
Status drop_rows_after(const std::string& path, int64_t last) {
  std::ifstream in(path);
  if (!in) return Status();  // nothing logged yet
  std::string kept, row;
  int64_t dropped = 0;
  while (std::getline(in, row)) {
    if (row_step(row) > last) {
      ++dropped;
      continue;
    }
    kept += row + "\n";
  }
  if (dropped == 0) return Status();
  PST_RETURN_IF_ERROR(write_atomic(path, kept));
  spdlog::info("{}: dropped {} rows of steps after {}, where the job resumes", path, dropped, last);
  return Status();
}

}  // namespace

Result<OutputFile> open_output(const JobConfig& job, int64_t resumed_at) {
  const std::string dir = job.train.output;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return io_error("train.output = \"{}\": cannot create directory: {}", dir, ec.message());
  std::ofstream(dir + "/config.toml") << to_toml(job);
  if (resumed_at >= 0) PST_RETURN_IF_ERROR(drop_rows_after(dir + "/metrics.jsonl", resumed_at));
  // A resumed run adds to the history of the run it continues.
  const char* mode = job.checkpoint.resume.empty() && resumed_at < 0 ? "w" : "a";
  std::FILE* metrics = std::fopen((dir + "/metrics.jsonl").c_str(), mode);
  if (!metrics) return io_error("cannot write {}/metrics.jsonl", dir);
  return OutputFile(metrics);
}

Status check_output_is_free(const JobConfig& job) {
  if (!job.checkpoint.resume.empty() || job.train.overwrite) return Status();
  std::vector<std::string> found;
  std::error_code ec;
  for (const char* name : {"model.safetensors", "best.safetensors", "metrics.jsonl"})
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
  for (const char* name : {"model.safetensors", "best.safetensors", "config.json", "vocab.json", "tokenizer.model"}) {
    std::filesystem::remove(job.train.output + "/" + name, ec);
    if (ec) return io_error("--overwrite: cannot remove {}/{}: {}", job.train.output, name, ec.message());
  }
  return Status();
}

Status save_trained_model(const JobConfig& job, const TaskData& data, Transformer& model, const std::string& file) {
  const std::string model_path = job.train.output + "/" + file;
  // (Created by worker 0's metrics file, unless another worker writes the model.)
  std::error_code ec;
  std::filesystem::create_directories(job.train.output, ec);
  if (ec) return io_error("train.output = \"{}\": cannot create directory: {}", job.train.output, ec.message());
  PST_RETURN_IF_ERROR(save_model(model_path, job, model, data.g2p ? &data.g2p->letters : nullptr,
                                 data.g2p ? &data.g2p->phones : nullptr, &data.tokenizer));
  PST_RETURN_IF_ERROR(write_model_card(job.train.output, job, model, data.g2p ? &data.g2p->letters : nullptr,
                                       data.g2p ? &data.g2p->phones : nullptr, &data.tokenizer));
  spdlog::info("saved {} (and config.json{} for other tools)", model_path, data.g2p ? ", vocab.json" : "");
  return Status();
}

Status report_summary(const Result<TrainSummary>& summary) {
  if (!summary.ok()) return summary.status().with_context("training failed");
  spdlog::info("{} steps ({} applied, {} skipped) in {:.1f}s of training ({:.1f}s wall), {:.0f} tokens/s",
               summary->steps, summary->applied_steps, summary->skipped_steps, summary->train_seconds,
               summary->wall_seconds,
               summary->train_seconds > 0 ? static_cast<double>(summary->tokens) / summary->train_seconds : 0.0);
  return Status();
}

Result<std::unique_ptr<MetricsServer>> start_metrics(const JobConfig& job, int port_offset) {
  if (!job.metrics.enabled) return std::unique_ptr<MetricsServer>();
  std::string advertise;  // scrape targets name the process's address, not 0.0.0.0
  if (job.metrics.bind == "0.0.0.0") {
    PST_ASSIGN_OR_RETURN(advertise, resolve_host(job.cluster.host, job.cluster.interface));
  }
  PST_ASSIGN_OR_RETURN(const PortRange range, parse_port_range(job.cluster.port_range));
  PST_ASSIGN_OR_RETURN(
      auto m, MetricsServer::start(job.metrics, port_offset, cuda_compiled() ? "cpu+cuda" : "cpu", advertise, range));
  spdlog::info("metrics at http://{}/metrics", m->endpoint());
  return m;
}

Result<std::unique_ptr<MetricsServer>> start_process_metrics(const JobConfig& job, uint64_t job_id) {
  PST_ASSIGN_OR_RETURN(auto m, start_metrics(job, 0));
  if (m) m->set_ready();  // one process: no rendezvous to wait for
  if (m) PST_RETURN_IF_ERROR(write_file_sd(file_sd_path(job), {{m->endpoint(), "process", 0}}, job_id));
  return m;
}

std::string file_sd_path(const JobConfig& job) {
  return job.metrics.file_sd.empty() ? job.train.output + "/prometheus-targets.json" : job.metrics.file_sd;
}

void close_metrics(const JobConfig& job, uint64_t job_id, const MetricsServer* metrics, bool owns_file_sd) {
  if (!metrics) return;
  if (job.metrics.linger_s > 0) {
    spdlog::info("metrics stay up for {} s (metrics.linger_s)", job.metrics.linger_s);
    std::this_thread::sleep_for(std::chrono::duration<double>(job.metrics.linger_s));
  }
  if (!owns_file_sd) return;
  const std::string path = file_sd_path(job);
  const Status s = write_file_sd(path, {}, job_id);
  if (!s.ok())
    spdlog::warn("the job's scrape targets stay in {}: {}", path, s.message());
  else
    spdlog::info("the job ended well: no scrape targets left in {}", path);
}

}  // namespace pst
