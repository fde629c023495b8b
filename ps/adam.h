// One Adam/AdamW update of one element, in exactly the operation order and
// rounding of torch.optim.Adam / AdamW (single-tensor path, PyTorch 1.13), so
// that pst's updates match PyTorch bit for bit:
//   Adam (L2):  g = fma(w, wd, g)                  grad.add(param, alpha=wd)
//   AdamW:      w = w * (1 - lr*wd)                param.mul_(1 - lr*wd)
//   m = fma(g, 1-b1, m*b1)                         exp_avg.mul_(b1).add_(g, alpha=1-b1)
//   v = fma((1-b2)*g, g, v*b2)                     exp_avg_sq.mul_(b2).addcmul_(g, g, value=1-b2)
//   w = w + (-lr/bc1 * m) / (sqrt(v)/sqrt(bc2) + eps)
// PyTorch's CPU kernels use fused multiply-adds for add(alpha=) and addcmul;
// std::fma reproduces them. Compile callers with -ffp-contract=off.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/hd.h"

namespace pst {

struct AdamConstants {
  float beta1 = 0.9f, one_minus_beta1 = 0.1f;
  float beta2 = 0.999f, one_minus_beta2 = 0.001f;
  float decay_factor = 1.0f;  // AdamW: 1 - lr*wd (1 = no decay)
  float l2 = 0.0f;            // Adam: wd added to the gradient (0 = none)
  float neg_step_size = 0.0f;  // -lr / (1 - beta1^step)
  float bc2_sqrt = 1.0f;       // sqrt(1 - beta2^step)
  float eps = 1e-8f;
};

// step is the 1-based count of this tensor's updates, including this one.
// wd is applied decoupled (AdamW) or as L2 (Adam) as the caller decides.
AdamConstants adam_constants(double lr, double beta1, double beta2, double eps, double wd,
                             bool decoupled, int64_t step);

PST_HD void adam_update_element(float& w, float& m, float& v, float g, const AdamConstants& k) {
  g = fmaf(w, k.l2, g);
  w = w * k.decay_factor;
  m = fmaf(g, k.one_minus_beta1, m * k.beta1);
  v = fmaf(k.one_minus_beta2 * g, g, v * k.beta2);
  const float denom = sqrtf(v) / k.bc2_sqrt + k.eps;
  w = w + (k.neg_step_size * m) / denom;
}

void adam_update(float* w, float* m, float* v, const float* g, int64_t n, const AdamConstants& k);

}  // namespace pst
