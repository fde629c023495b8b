// Pieces of `pst train` shared by the one-process run (cli/train.cc) and the
// processes of an mpirun job (cli/train_mpi.cc).
#pragma once

#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "core/config.h"
#include "model/transformer.h"
#include "worker/task_data.h"
#include "worker/trainer.h"

namespace pst {

// Opens train.output with its config.toml and metrics.jsonl; null on error
// (logged).
std::FILE* open_output(const JobConfig& job);
// Writes model.safetensors and the closing log lines; the exit code.
int finish_training(const JobConfig& job, const TaskData& data, Transformer& model,
                    const Result<TrainSummary>& summary);

int run_train_mpi(const ConfigArgs& args);

}  // namespace pst
