#include "ps/clipping.h"

#include <algorithm>
#include <cmath>

namespace pst {

GradStats grad_stats(const float* g, int64_t n) {
  double sum = 0.0;
  int bad = 0;
#pragma omp parallel for simd reduction(+ : sum) reduction(| : bad) schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const double x = g[i];
    sum += x * x;
    bad |= std::isfinite(g[i]) ? 0 : 1;
  }
  GradStats s;
  s.sum_squares = sum;
  s.nonfinite = bad != 0 || !std::isfinite(sum);
  return s;
}

double clip_coefficient(double norm, double max_norm) {
  if (max_norm <= 0.0) return 1.0;
  return std::min(1.0, max_norm / (norm + 1e-6));
}

}  // namespace pst
