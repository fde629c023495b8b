// The per-step constants of the server's Adam/AdamW update (learning rate,
// bias corrections), computed in fp64 as PyTorch does. The element function,
// the host loop adam_update() and the bit-exactness argument are in
// model/elementwise.h, shared with the CUDA kernel.
#pragma once

#include <cmath>
#include <cstdint>

#include "model/elementwise.h"

namespace pst {

// step is the 1-based count of this tensor's updates, including this one.
// wd is applied decoupled (AdamW) or as L2 (Adam) as the caller decides.
AdamConstants adam_constants(double lr, double beta1, double beta2, double eps, double wd, bool decoupled,
                             int64_t step);

}  // namespace pst
