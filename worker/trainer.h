// The worker's training loop (docs/design.md, One BSP step, from the worker's side): pull
// weights, forward and backward on its batches, push the gradient, repeat;
// validation every train.eval_every steps, test metrics at the end. It talks
// to the servers only through a ParameterClient.
#pragma once

#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/parameter_client.h"
#include "core/config.h"
#include "data/data_cursor.h"
#include "model/transformer.h"
#include "monitoring/metrics.h"
#include "worker/evaluate.h"
#include "worker/task_data.h"

namespace pst {

struct TrainSummary {
  int64_t steps = 0;          // rounds run
  int64_t applied_steps = 0;  // optimizer steps applied
  int64_t skipped_steps = 0;
  double train_seconds = 0;  // wall time of training steps, excluding evaluation
  double wall_seconds = 0;
  int64_t tokens = 0;    // target tokens trained on
  double last_loss = 0;  // mean loss of the last logging interval
  EvalResult valid;
  EvalResult test;
  bool have_test = false;
  // A graceful stop (a signal, train.max_minutes) ended training before
  // train.steps: no evaluation after it; --resume latest continues.
  bool stopped = false;
  bool eval_stopped = false;  // a stop during the final evaluation cut it short
  // Early stopping (train.patience) ended training before train.steps; the
  // final validation and test ran.
  bool early_stopped = false;
  // The step of the best validation (train.keep_best, train.patience; -1:
  // none), and its figure (train.best_metric).
  int64_t best_step = -1;
  double best = 0;
  bool lead = false;  // this worker did the final evaluation and wrote the model
};

struct TrainerOptions {
  // The data shards this loop trains on each step, each pushed as worker
  // `shard` of `workers` (its every W-th batch and its dropout masks): one
  // shard for a worker process, all of them when one process plays every
  // worker of a job.
  std::vector<int64_t> shards = {0};
  int64_t workers = 1;
  // Validation (train.eval_every) and test (train.test_at_end) metrics, and
  // the model written at the end (save). Without it, this worker does the
  // final ones only if the servers name it lead (StepReport: worker 0 was
  // removed from the job).
  bool evaluate = true;
  // Honour train.max_minutes here (a lone process); with servers they do,
  // by stopping the job as a signal would.
  bool stop_at_max_minutes = true;
  bool progress = true;          // a progress bar where core/terminal.h allows one
  double clip_norm = 0;          // clip each pushed gradient to this global norm here (ASP, SSP); 0: the servers clip
  std::FILE* metrics = nullptr;  // JSON lines of train/valid/test records, if set
  // For a worker that does not evaluate from the start: called when the
  // servers name it lead (worker 0 was removed) and when they stop (a worker
  // joined in a lower place): returns the metrics file to write from the
  // step after `step` (the job's, without the rows of later steps), or null.
  std::function<std::FILE*(bool lead, int64_t step)> metrics_for_lead;
  // Push per layer and pull in layer order when the client can (cluster.overlap).
  bool overlap = false;
  // Hand the client host copies of a CPU model's weights and gradients, as
  // for a GPU model, instead of the model's own buffers (tests compare the
  // two).
  bool stage_buffers = false;
  WorkerMetrics* monitor = nullptr;  // Prometheus series of this worker, if any
  // The step a resumed job starts at (the checkpoint's): the first pull asks
  // for that version.
  int64_t first_step = 0;
  // The batches not trained on yet (a resumed job's: Manifest::data_pool).
  // Each step hands them to the shards (data/data_cursor.h), unless the
  // servers say which batch comes next (a BSP worker process: they follow
  // the job's membership).
  DataPool data_pool;
  // Writes the model as `file` in the job's output: "model.safetensors"
  // once the last weights are in the model, before the final validation and
  // test (by the worker that evaluates), so that a stop during that
  // evaluation (which ends it at once) keeps it, and again with the best
  // weights (train.keep_best); "best.safetensors" at each better
  // validation. Null: nothing to write.
  std::function<Status(const std::string& file)> save;
};

// Thread safety: a Trainer is used by one thread (its model's and client's
// owner); run() once.
class Trainer {
 public:
  // model, client and data must outlive the trainer. The model's weights are
  // replaced by the first pull.
  Trainer(const JobConfig& job, const TaskData& data, Transformer* model, ParameterClient* client,
          TrainerOptions options);
  ~Trainer();
  Result<TrainSummary> run();

 private:
  struct Run;         // the state of one run(), in trainer.cc
  struct StepTotals;  // one step's tokens and loss over its shards
  void clip_gradient();
  Status need(int64_t end);
  Result<StepReport> pull(int64_t min_version);
  // Completes the pull in progress; where pulls carry rounded weights
  // (cluster.wire = bf16), replaces the model's with the servers' exact
  // float32 weights of `version` (before validation and the model file).
  Status exact_weights(int64_t version);
  // Forward, backward and push of shard i's batch at `step`; adds to `totals`.
  Status train_shard(size_t i, int64_t step, int64_t version, int64_t batch, StepTotals& totals);
  void log_step(int64_t step, const StepReport& info, const StepTotals& totals, bool last);
  void validate(int64_t step);
  // Keeps the best validation (train.keep_best) and asks the job to stop
  // after `patience` validations without a better one.
  void track_best(int64_t step);
  // train.keep_best: the best weights into the model, written as the model.
  Status restore_best();
  void test();

  const JobConfig& job_;
  const TaskData& data_;
  Transformer* model_;
  ParameterClient* client_;
  TrainerOptions opt_;
  std::unique_ptr<Run> run_;
};

}  // namespace pst
