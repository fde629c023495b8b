#include "model/backend.h"

#include <spdlog/spdlog.h>

namespace pst {

#if !defined(PST_HAVE_CUDA)
// This build has no CUDA backend (nvcc was not found at configure time).
bool cuda_compiled() { return false; }

int cuda_device_count(std::string* why) {
  if (why) *why = "this build has no CUDA backend (nvcc was not found when it was configured)";
  return 0;
}

Result<std::unique_ptr<Backend>> make_cuda_backend(const CudaOptions&) {
  return failed_precondition("cuda: this build has no CUDA backend (nvcc was not found when it was configured)");
}
#endif

Result<std::unique_ptr<Backend>> make_backend(const DeviceSpec& device, MatmulPrecision matmul, int threads) {
  switch (device.kind) {
    case DeviceKind::kCpu: return make_cpu_backend(threads);
    case DeviceKind::kAuto: {
      std::string why;
      if (cuda_device_count(&why) > 0) return make_cuda_backend(CudaOptions{0, matmul});
      spdlog::info("device auto: no CUDA device ({}); using the CPU", why);
      return make_cpu_backend(threads);
    }
    case DeviceKind::kCuda: {
      std::string why;
      const int count = cuda_device_count(&why);
      if (count == 0)
        return failed_precondition("train.device = \"cuda:{}\": no CUDA device ({}); use auto or cpu", device.index,
                                   why);
      if (device.index >= count)
        return failed_precondition("train.device = \"cuda:{}\": there {} {} CUDA device{} (0..{})", device.index,
                                   count == 1 ? "is" : "are", count, count == 1 ? "" : "s", count - 1);
      return make_cuda_backend(CudaOptions{device.index, matmul});
    }
  }
  return invalid_argument("unknown device kind");
}

}  // namespace pst
