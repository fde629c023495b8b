// The fused Adam/AdamW kernel. This file is compiled with -fmad=false so that
// nvcc contracts nothing the element function does not ask for: the update
// then has the rounding of the host's (and PyTorch's), bit for bit.
#include <algorithm>

#include "model/backend/cuda/cuda_kernels.h"

namespace pst::cuda {
namespace {

__global__ void adam_kernel(float* w, float* m, float* v, const float* g, int64_t n, AdamConstants k) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)
    adam_update_element(w[i], m[i], v[i], g[i], k);
}

}  // namespace

void adam_update(float* w, float* m, float* v, const float* g, int64_t n, const AdamConstants& k, cudaStream_t stream) {
  if (n <= 0) return;
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, int64_t{1} << 20);
  adam_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(w, m, v, g, n, k);
}

}  // namespace pst::cuda
