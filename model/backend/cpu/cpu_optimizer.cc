// The host loops of the optimizer's element-wise math (model/elementwise.h),
// shared by the CPU backend and the server's host path.
#include <algorithm>
#include <cmath>
#include <vector>

#include "model/elementwise.h"

namespace pst {

void adam_update(float* w, float* m, float* v, const float* g, int64_t n, const AdamConstants& k) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) adam_update_element(w[i], m[i], v[i], g[i], k);
}

double sum_squares(const float* x, int64_t n, bool* nonfinite) {
  // Blocks of a fixed size summed in order, then the blocks' sums in order:
  // the result does not depend on the number of threads.
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
  int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (n > 65536)
  for (int64_t b = 0; b < blocks; ++b) {
    double sum = 0.0;
    const int64_t end = std::min(n, (b + 1) * kBlock);
#pragma omp simd reduction(+ : sum) reduction(| : bad)
    for (int64_t i = b * kBlock; i < end; ++i) {
      const double v = x[i];
      sum += v * v;
      bad |= std::isfinite(x[i]) ? 0 : 1;
    }
    partial[static_cast<size_t>(b)] = sum;
  }
  double sum = 0.0;
  for (double p : partial) sum += p;
  *nonfinite = bad != 0 || !std::isfinite(sum);
  return sum;
}

}  // namespace pst
