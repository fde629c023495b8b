// Resuming a job from a checkpoint (checkpoint.resume), and the checkpoint
// of a job that has no servers (one process, its one optimizer).
#pragma once

#include <optional>
#include <string>

#include "comm/shard_plan.h"
#include "core/config.h"
#include "model/param_table.h"
#include "ps/checkpoint.h"
#include "ps/shard_optimizer.h"
#include "ps/shard_server.h"

namespace pst {

// A checkpoint to resume from: its directory and verified manifest.
struct ResumePoint {
  std::string dir;
  Manifest manifest;
};
// Null for a fresh job; an error names what is wrong with the checkpoint.
Result<std::optional<ResumePoint>> resume_point(const JobConfig& job, const ParamTable& table);
// With checkpoint.resume = auto, the message that the job has run to its
// end (its newest complete checkpoint is at train.steps, or past it), so a
// process started again after the end (a StatefulSet's server, a restart
// policy) has nothing to do; null otherwise, and when the checkpoint cannot
// be read (resume_point then names what is wrong).
std::optional<std::string> finished_run(const JobConfig& job);
// Loads server k's ranges of the checkpoint, and the data pool, into the
// server of a job of `workers`.
Status restore_server(ShardServer& server, const ResumePoint& from, const ParamTable& table, const ShardPlan& plan,
                      int k, int workers);
// A graceful stop of a job without servers: its one optimizer is the
// checkpoint's one shard.
Status checkpoint_single(const JobConfig& job, const ParamTable& table, const ShardOptimizer& opt, double loss);

}  // namespace pst
