#include "model/backend.h"

#include <spdlog/spdlog.h>

namespace pst {

Result<std::unique_ptr<Backend>> make_backend(DeviceKind device, int threads) {
  switch (device) {
    case DeviceKind::kCpu:
      return make_cpu_backend(threads);
    case DeviceKind::kAuto:
      spdlog::info("device auto: this build has no CUDA backend; using the CPU");
      return make_cpu_backend(threads);
    case DeviceKind::kCuda:
      return failed_precondition(
          "train.device = \"cuda\": this build has no CUDA backend (allowed here: auto, cpu)");
  }
  return invalid_argument("unknown device");
}

}  // namespace pst
