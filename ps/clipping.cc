#include "ps/clipping.h"

#include "model/elementwise.h"

#include <algorithm>
#include <cmath>

namespace pst {

GradStats grad_stats(const float* g, int64_t n) {
  GradStats s;
  s.sum_squares = sum_squares(g, n, &s.nonfinite);
  return s;
}

double clip_coefficient(double norm, double max_norm) {
  if (max_norm <= 0.0) return 1.0;
  return std::min(1.0, max_norm / (norm + 1e-6));
}

}  // namespace pst
