// What a job leaves behind and shows while it runs: train.output (its
// config, metrics.jsonl, model.safetensors), /metrics and the file_sd file
// Prometheus discovers the job's processes by.
#pragma once

#include <cstdio>
#include <memory>
#include <string>

#include "core/config.h"
#include "model/transformer.h"
#include "monitoring/metrics.h"
#include "worker/task_data.h"
#include "worker/trainer.h"

namespace pst {

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};
using OutputFile = std::unique_ptr<std::FILE, FileCloser>;
// Opens train.output with its config.toml and metrics.jsonl (appended to
// when the job resumes); the file is metrics.jsonl. Given `resumed_at` (a
// job that resumes at that step, or a worker that keeps the record from
// there once it is the lead) it appends after dropping the rows of later
// steps (the run it continues logged them before its checkpoint was taken),
// so that each step has one row.
Result<OutputFile> open_output(const JobConfig& job, int64_t resumed_at = -1);
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
Status save_trained_model(const JobConfig& job, const TaskData& data, Transformer& model,
                          const std::string& file = "model.safetensors");
// Worker 0's closing log line; the summary's error, if it has one.
Status report_summary(const Result<TrainSummary>& summary);

// Starts this process's /metrics at metrics.port + port_offset when
// metrics.enabled (null when off). With metrics.bind = 0.0.0.0 its endpoint
// names the address cluster.host resolves to.
Result<std::unique_ptr<MetricsServer>> start_metrics(const JobConfig& job, int port_offset);
// The /metrics of a job that is one process (ready at once: no rendezvous),
// and its file_sd with that one target.
Result<std::unique_ptr<MetricsServer>> start_process_metrics(const JobConfig& job, uint64_t job_id);
// metrics.file_sd, or its default under train.output.
std::string file_sd_path(const JobConfig& job);
// After a job that ended well: keeps /metrics up for metrics.linger_s, then,
// in the process that wrote the job's file_sd (`owns_file_sd`: the
// scheduler, or the one process), empties it, so that Prometheus stops
// scraping processes that have exited on purpose and PstNodeDown (up == 0)
// does not fire for them. A failed job keeps its targets: its dead
// processes are worth an alert.
void close_metrics(const JobConfig& job, uint64_t job_id, const MetricsServer* metrics, bool owns_file_sd);

}  // namespace pst
