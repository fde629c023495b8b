// The server side of one BSP step (docs/design.md, One BSP step, steps 3-5) for the chunks a
// server owns: collect the workers' pushes, form the token-weighted mean
// gradient, report its partial sum of squares, then clip and apply
// Adam/AdamW under the learning-rate schedule.
//
// Thread safety: not thread-safe; the owner serialises calls.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "comm/shard_plan.h"
#include "comm/step_report.h"
#include "core/bf16.h"
#include "core/config.h"
#include "model/backend.h"
#include "model/param_table.h"
#include "ps/adam.h"
#include "ps/clipping.h"
#include "ps/schedule.h"

namespace pst {

// Every tensor as one chunk: the layout of a single in-process server.
std::vector<ChunkRange> whole_tensors(const ParamTable& table);

class ShardOptimizer {
 public:
  // initial: the model's flat initial weights (only owned ranges are read).
  // device: where the weights, Adam moments and pushed gradients live and
  // where reduction, clipping and the fused update run (a GPU backend when a
  // server or a single process runs on one); null keeps everything in host
  // memory. The device backend must outlive the optimizer.
  ShardOptimizer(const JobConfig& job, const ParamTable& table, std::vector<ChunkRange> owned, const float* initial,
                 Backend* device = nullptr);
  ~ShardOptimizer();
  ShardOptimizer(const ShardOptimizer&) = delete;
  ShardOptimizer& operator=(const ShardOptimizer&) = delete;

  // lend (add_push, add_push_ranges): float32 host memory the optimizer
  // reads where it is instead of copying it; the caller keeps it alive and
  // unchanged until apply() returns.
  enum class Lend { kNo, kYes };
  // Records a worker's gradient of this round (flat layout, host memory;
  // only owned ranges are read, and copied unless lent to a host optimizer:
  // an in-process server whose round ends within the push lends it, and so
  // saves a pass over the gradient).
  void add_push(const float* grads, int64_t tokens, double loss_sum, Lend lend = Lend::kNo);
  // The same from device memory of the optimizer's device (a worker on the
  // same GPU); needs a device.
  void add_push_device(const float* grads, int64_t tokens, double loss_sum);
  // The same from separate host buffers, one per owned range (in owned()
  // order), as a remote push delivers them: float32, or bfloat16 values
  // (cluster.wire = bf16) widened to float32 as they are copied. slot: the
  // pushing worker's index, so that pushes combine in worker order whatever
  // order they arrive in (-1: the next free slot).
  // lend: float32 ranges on a host optimizer are read where they are, not
  // copied (a server's received frames). bfloat16 ranges, and ranges not
  // aligned for float, are copied all the same.
  void add_push_ranges(const std::vector<WireValues>& ranges, int64_t tokens, double loss_sum, int64_t slot = -1,
                       Lend lend = Lend::kNo);
  int64_t pushes() const { return pushes_; }
  // Floats the host holds for copies of pushes (allocated, all slots).
  int64_t host_push_floats() const;
  // Forms the token-weighted mean of the pushes and returns its statistics
  // over the owned ranges; every slot claimed this round must be filled.
  GradStats reduce();
  // The same over the slots flagged in `only` (a slot of a worker that was
  // removed mid-round may be empty or left out), in slot order, so the
  // result equals a job of just those workers bit for bit. May be called
  // again with fewer slots before apply() (the servers' redo, comm/grad_stats.h).
  // With no slot flagged, apply() skips the step.
  GradStats reduce(const std::vector<uint8_t>& only);
  // Applies the step with the global statistics (summed over all servers).
  // clip = false when the workers clip their own gradients (ASP, SSP).
  // progress, when given, is called after each owned range is updated, in
  // owned() order, with the report (complete but for the weights) and the
  // number of ranges updated so far; not at all when the step is skipped.
  // next (host optimizers only): the updated weights are written there
  // (local order, local_size() floats) instead of in place, and that buffer
  // holds the optimizer's weights from then on (a skipped step copies them
  // there): the caller keeps it alive, and writes nothing to it, until an
  // apply() with another buffer or the optimizer's end. A server serves its
  // pulls from the weights the update wrote, with no pass that copies them.
  using Progress = std::function<void(const StepReport&, size_t ranges_done)>;
  StepReport apply(const GradStats& global, bool clip = true, const Progress& progress = nullptr,
                   float* next = nullptr);

  // Copies the owned ranges of the current weights into a flat host buffer.
  void copy_weights(float* flat) const;
  // The same into device memory of the optimizer's device; needs a device.
  void copy_weights_device(float* flat) const;
  // The owned weights in local order (owned ranges back to back, n floats).
  // A copy onto the buffer that holds them (apply()'s next) copies nothing.
  void copy_local_weights(float* local) const;
  // The same for owned ranges [first, last) only, at their local offsets.
  void copy_local_weights(float* local, size_t first, size_t last) const;
  int64_t local_size() const { return n_; }
  // The owned weights and Adam moments (local order), for a checkpoint.
  void export_state(std::vector<float>* weights, std::vector<float>* exp_avg, std::vector<float>* exp_avg_sq) const;
  // Restores them (local order, local_size() floats each) with the round and
  // optimizer-step counters, as a resumed job starts: the schedule goes on
  // from applied_steps.
  void import_state(const float* weights, const float* exp_avg, const float* exp_avg_sq, int64_t version,
                    int64_t applied_steps);
  int64_t local_offset(size_t range) const { return local_offset_[range]; }
  Backend* device() const { return device_; }
  int64_t version() const { return version_; }
  int64_t applied_steps() const { return applied_; }
  const std::vector<ChunkRange>& owned() const { return owned_; }

 private:
  // Owned ranges that are adjacent both in the flat layout and in the local
  // buffers, merged, so copies move few large blocks.
  struct Run {
    int64_t local = 0, flat = 0, length = 0;
  };

  // Claims push slot `slot` (-1: the next) and records the push's tokens and
  // loss; returns the slot's index.
  size_t claim_push_slot(int64_t slot, int64_t tokens, double loss_sum);
  // A device's buffer of slot k (n_ floats, local order), allocated on first
  // use and reused.
  float* slot_buffer(size_t k);
  // The host buffer of slot k, sized to `floats` (its capacity kept across
  // rounds): the push's ranges that are copied, back to back.
  float* host_copies(size_t k, int64_t floats);

  JobConfig job_;
  const ParamTable& table_;
  LrSchedule schedule_;
  std::vector<ChunkRange> owned_;
  std::vector<int64_t> local_offset_;  // start of each owned range in the local buffers
  std::vector<Run> runs_;
  int64_t n_ = 0;  // owned floats
  Backend* device_ = nullptr;
  // Local buffers of n_ floats: host vectors (host_weights_; host_state_
  // holds exp_avg, exp_avg_sq, grad), or device memory of device_
  // (device_state_ holds weights, exp_avg, exp_avg_sq, grad: 4 n_ floats).
  // w_, m_, v_ and grad_ point into whichever holds them; w_ into the
  // caller's buffer once apply() has been given one (host_weights_ is then
  // released).
  std::vector<float> host_weights_;
  std::vector<float> host_state_;
  float* device_state_ = nullptr;
  float* w_ = nullptr;
  float* m_ = nullptr;
  float* v_ = nullptr;
  float* grad_ = nullptr;  // the reduced gradient of this round
  // Device: each slot's buffer (null until used; reduce() may swap one with
  // grad_), and their storage.
  std::vector<float*> pushed_;
  std::vector<float*> device_pushed_;
  // Host: where each slot's push lies, per owned range (the lent frames, or
  // its copy in host_pushed_), and where the reduced gradient of each range
  // lies (grad_, or the one push's ranges).
  std::vector<std::vector<const float*>> push_ranges_;
  std::vector<const float*> grad_ranges_;
  std::vector<std::vector<float>> host_pushed_;
  std::vector<int64_t> push_tokens_;  // per slot of this round; -1: empty
  std::vector<double> push_loss_;     // per slot of this round
  std::vector<uint8_t> included_;     // per slot: in the last reduce()
  int64_t pushes_ = 0;                // filled slots
  int64_t swapped_ = -1;              // a device slot whose buffer reduce() swapped with grad_ (one push), this round
  int64_t version_ = 0;
  int64_t applied_ = 0;
};

}  // namespace pst
