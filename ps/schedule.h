// Learning-rate schedules (docs/design.md, Optimizer and schedules). Each is a pure function of the
// applied-step counter t (0 for the first update); skipped steps do not
// advance t. All but inverse_sqrt take an optional linear warmup:
// lr(t) = lr * (t+1)/warmup for t < warmup, then the decay below with
// s = t - warmup and D = total - warmup:
//   constant     lr
//   linear       min + (lr - min) * max(0, 1 - s/D)         (torch LinearLR)
//   cosine       min + (lr - min) * (1 + cos(pi * min(s, D)/D)) / 2
//                (torch CosineAnnealingLR; with cycle_steps > 0 the SGDR
//                restarts of CosineAnnealingWarmRestarts(T_0, T_mult))
//   step         lr * gamma^floor(s / step_size)            (torch StepLR)
//   exponential  lr * exp(-decay_rate * s)                  (torch ExponentialLR)
//   inverse_sqrt lr * d_model^-0.5 * min(n^-0.5, n * warmup^-1.5), n = t+1
//                (Vaswani et al.; optim.lr is a multiplier, 1 = the paper)
#pragma once

#include <cstdint>

#include "core/config.h"

namespace pst {

class LrSchedule {
 public:
  // total_steps: schedule.total_steps, or train.steps when that is 0.
  LrSchedule(const ScheduleConfig& cfg, double base_lr, int64_t d_model, int64_t total_steps);
  double lr(int64_t t) const;

 private:
  ScheduleConfig cfg_;
  double base_;
  int64_t d_model_;
  int64_t total_;
};

// Convenience: the schedule of a job.
LrSchedule make_schedule(const JobConfig& job);

}  // namespace pst
