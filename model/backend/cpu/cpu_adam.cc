#include "model/elementwise.h"

namespace pst {

void adam_update(float* w, float* m, float* v, const float* g, int64_t n, const AdamConstants& k) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) adam_update_element(w[i], m[i], v[i], g[i], k);
}

}  // namespace pst
