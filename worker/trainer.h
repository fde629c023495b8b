// The worker's training loop (DESIGN.md §3 from the worker's side): pull
// weights, forward and backward on its batches, push the gradient, repeat;
// validation every train.eval_every steps, test metrics at the end. It talks
// to the servers only through a ParameterClient.
#pragma once

#include <cstdio>
#include <string>

#include "comm/parameter_client.h"
#include "core/config.h"
#include "model/transformer.h"
#include "worker/evaluate.h"
#include "worker/task_data.h"

namespace pst {

struct TrainSummary {
  int64_t steps = 0;          // rounds run
  int64_t applied_steps = 0;  // optimizer steps applied
  int64_t skipped_steps = 0;
  double train_seconds = 0;   // wall time of training steps, excluding evaluation
  double wall_seconds = 0;
  int64_t tokens = 0;         // target tokens trained on
  double last_loss = 0;       // mean loss of the last logging interval
  EvalResult valid;
  EvalResult test;
  bool have_test = false;
};

struct TrainerOptions {
  int64_t worker = 0;
  int64_t workers = 1;
  bool evaluate_test = true;  // test metrics at the end
  std::FILE* metrics = nullptr;  // JSON lines of train/valid/test records, if set
};

class Trainer {
 public:
  // model, client and data must outlive the trainer. The model's weights are
  // replaced by the first pull.
  Trainer(const JobConfig& job, const TaskData& data, Transformer* model, ParameterClient* client,
          TrainerOptions options);
  Result<TrainSummary> run();

 private:
  const JobConfig& job_;
  const TaskData& data_;
  Transformer* model_;
  ParameterClient* client_;
  TrainerOptions opt_;
};

}  // namespace pst
