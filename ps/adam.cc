#include "ps/adam.h"

namespace pst {

AdamConstants adam_constants(double lr, double beta1, double beta2, double eps, double wd, bool decoupled,
                             int64_t step) {
  AdamConstants k;
  k.beta1 = static_cast<float>(beta1);
  k.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  k.beta2 = static_cast<float>(beta2);
  k.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  k.decay_factor = decoupled ? static_cast<float>(1.0 - lr * wd) : 1.0f;
  k.l2 = decoupled ? 0.0f : static_cast<float>(wd);
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  k.neg_step_size = static_cast<float>(-(lr / bc1));
  k.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  k.eps = static_cast<float>(eps);
  return k;
}

}  // namespace pst
