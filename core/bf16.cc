#include "core/bf16.h"

#include <algorithm>

#include "core/parallel.h"

namespace pst {

void to_bf16(const float* in, uint16_t* out, int64_t n) {
  elementwise(n, int64_t{1} << 18, [&](int64_t i) { out[i] = to_bf16(in[i]); });
}

void from_bf16(const uint16_t* in, float* out, int64_t n) {
  elementwise(n, int64_t{1} << 18, [&](int64_t i) { out[i] = from_bf16(in[i]); });
}

void to_fp32(WireValues in, float* out, int64_t n) {
  if (in.bf16) {
    from_bf16(static_cast<const uint16_t*>(in.data), out, n);
  } else {
    std::copy_n(static_cast<const float*>(in.data), n, out);
  }
}

}  // namespace pst
