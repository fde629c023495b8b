#include "ps/clipping.h"

#include "model/elementwise.h"

#include <cmath>

namespace pst {

GradStats grad_stats(const float* g, int64_t n) {
  GradStats s;
  s.sum_squares = sum_squares(g, n, &s.nonfinite);
  return s;
}

}  // namespace pst
