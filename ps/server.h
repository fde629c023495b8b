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
#include "model/backend.h"
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
  // device: where the weights and Adam moments live and the fused update
  // runs (a GPU backend when a server or a single process runs on one); null
  // keeps them in host memory. Gradients are reduced on the host either way.
  // The device backend must outlive the optimizer.
  ShardOptimizer(const JobConfig& job, const ParamTable& table, std::vector<ChunkRange> owned,
                 const float* initial, Backend* device = nullptr);
  ~ShardOptimizer();
  ShardOptimizer(const ShardOptimizer&) = delete;
  ShardOptimizer& operator=(const ShardOptimizer&) = delete;

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
  // Owned ranges that are adjacent both in the flat layout and in the local
  // buffers, merged, so copies move few large blocks.
  struct Run {
    int64_t local = 0, flat = 0, length = 0;
  };

  std::vector<ChunkRange> owned_;
  std::vector<int64_t> local_offset_;  // start of each owned range in the local buffers
  std::vector<Run> runs_;
  std::vector<float> grad_;
  // The state the update reads and writes: host vectors, or device buffers
  // of device_ (then state_ points into them).
  std::vector<float> weights_, exp_avg_, exp_avg_sq_;
  Backend* device_ = nullptr;
  float* device_state_ = nullptr;  // weights, exp_avg, exp_avg_sq, grad: 4 x n floats
  float* w_ = nullptr;
  float* m_ = nullptr;
  float* v_ = nullptr;
  std::vector<std::vector<float>> pushed_;  // buffers of this round's pushes (reused)
  std::vector<int64_t> push_tokens_;        // one per push of this round
  double push_loss_ = 0.0;
  int64_t version_ = 0;
  int64_t applied_ = 0;
};

}  // namespace pst
