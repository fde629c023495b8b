// The host loops of the optimizer's element-wise math (model/elementwise.h),
// shared by the CPU backend and the server's host path.
#include <cmath>

#include "model/elementwise.h"

namespace pst {

void adam_update(float* w, float* m, float* v, const float* g, int64_t n, const AdamConstants& k) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) adam_update_element(w[i], m[i], v[i], g[i], k);
}

double sum_squares(const float* x, int64_t n, bool* nonfinite) {
  double sum = 0.0;
  int bad = 0;
#pragma omp parallel for simd reduction(+ : sum) reduction(| : bad) schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    sum += v * v;
    bad |= std::isfinite(x[i]) ? 0 : 1;
  }
  *nonfinite = bad != 0 || !std::isfinite(sum);
  return sum;
}

}  // namespace pst
