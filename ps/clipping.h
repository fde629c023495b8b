// Global-norm gradient clipping as torch.nn.utils.clip_grad_norm_:
// norm = ||g||_2 over all parameters, coef = min(1, max_norm / (norm + 1e-6)),
// g *= coef. pst sums squares in fp64, per shard, so that servers can add
// their partial sums (docs/design.md, One BSP step, step 4).
#pragma once

#include <cstdint>

#include "comm/grad_stats.h"
#include "model/elementwise.h"

namespace pst {

GradStats grad_stats(const float* g, int64_t n);

// clip_coefficient (the factor for a global norm) is in model/elementwise.h,
// shared with workers that clip their own gradient (ASP, SSP).

}  // namespace pst
