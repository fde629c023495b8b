// The server side of one BSP step (DESIGN.md §3, steps 3-5) for the chunks a
// server owns: collect the workers' pushes, form the token-weighted mean
// gradient, report its partial sum of squares, then clip and apply
// Adam/AdamW under the learning-rate schedule.
//
// Thread safety: not thread-safe; the owner serialises calls.
#pragma once

#include <cstdint>
#include <vector>

#include "core/config.h"
#include "model/param_table.h"
#include "ps/adam.h"
#include "ps/clipping.h"
#include "ps/schedule.h"

namespace pst {

// A contiguous range of one tensor, in floats of the model's flat layout.
struct ChunkRange {
  int64_t tensor = 0;  // index in the parameter table
  int64_t begin = 0;   // offset into the flat buffer
  int64_t length = 0;
};

// Every tensor as one chunk: the layout of a single in-process server.
std::vector<ChunkRange> whole_tensors(const ParamTable& table);

struct StepReport {
  int64_t version = 0;        // rounds completed, including this one
  int64_t applied_steps = 0;  // optimizer steps applied so far
  bool applied = false;       // false when skipped (non-finite gradient)
  double grad_norm = 0.0;     // global norm before clipping
  double clip_coef = 1.0;
  double lr = 0.0;            // learning rate of this step (of the next one if skipped)
  int64_t tokens = 0;         // tokens in this step's pushes
  double loss_sum = 0.0;      // summed loss in this step's pushes
};

class ShardOptimizer {
 public:
  // initial: the model's flat initial weights (only owned ranges are read).
  ShardOptimizer(const JobConfig& job, const ParamTable& table, std::vector<ChunkRange> owned,
                 const float* initial);

  // Records a worker's gradient of this round (flat layout; only owned ranges
  // are read and copied).
  void add_push(const float* grads, int64_t tokens, double loss_sum);
  int64_t pushes() const { return static_cast<int64_t>(push_tokens_.size()); }
  // Forms the token-weighted mean of the pushes and returns its statistics
  // over the owned ranges.
  GradStats reduce();
  // Applies the step with the global statistics (summed over all servers).
  StepReport apply(const GradStats& global);

  // Copies the owned ranges of the current weights into a flat buffer.
  void copy_weights(float* flat) const;
  int64_t version() const { return version_; }
  int64_t applied_steps() const { return applied_; }
  const std::vector<ChunkRange>& owned() const { return owned_; }

 private:
  JobConfig job_;
  const ParamTable& table_;
  LrSchedule schedule_;
  std::vector<ChunkRange> owned_;
  std::vector<int64_t> local_offset_;  // start of each owned range in the local buffers
  std::vector<float> weights_, exp_avg_, exp_avg_sq_, grad_;
  std::vector<std::vector<float>> pushed_;  // buffers of this round's pushes (reused)
  std::vector<int64_t> push_tokens_;        // one per push of this round
  double push_loss_ = 0.0;
  int64_t version_ = 0;
  int64_t applied_ = 0;
};

}  // namespace pst
