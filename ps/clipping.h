// Global-norm gradient clipping as torch.nn.utils.clip_grad_norm_:
// norm = ||g||_2 over all parameters, coef = min(1, max_norm / (norm + 1e-6)),
// g *= coef. pst sums squares in fp64, per shard, so that servers can add
// their partial sums (docs/design.md, One BSP step, step 4).
#pragma once

#include <cstdint>

#include "model/elementwise.h"

namespace pst {

struct GradStats {
  double sum_squares = 0.0;
  bool nonfinite = false;  // some element is inf or NaN
  // Control flags that ride on the servers' reduction, so that every server
  // acts on them at the same step (docs/design.md, Checkpoints): some server wants a
  // checkpoint of this step (checkpoint.every_minutes), some node asked the
  // job to stop after it (a signal).
  bool checkpoint = false;
  bool stop = false;

  GradStats& operator+=(const GradStats& o) {
    sum_squares += o.sum_squares;
    nonfinite = nonfinite || o.nonfinite;
    checkpoint = checkpoint || o.checkpoint;
    stop = stop || o.stop;
    return *this;
  }
};

GradStats grad_stats(const float* g, int64_t n);

// clip_coefficient (the factor for a global norm) is in model/elementwise.h,
// shared with workers that clip their own gradient (ASP, SSP).

}  // namespace pst
