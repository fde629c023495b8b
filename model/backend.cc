#include "model/backend.h"

#include <cstdlib>
#include <limits>
#include <mutex>

#include <spdlog/spdlog.h>

#include "core/fma_peak.h"

namespace pst {

#if !defined(PST_HAVE_CUDA)
// This build has no CUDA backend (nvcc was not found at configure time).
constexpr const char* kNoCuda = "this build has no CUDA backend (nvcc was not found when it was configured)";

bool cuda_compiled() { return false; }

int cuda_device_count(std::string* why) {
  if (why) *why = kNoCuda;
  return 0;
}

bool cuda_blas_loaded(std::string* why) {
  if (why) *why = kNoCuda;
  return false;
}

Result<std::unique_ptr<Backend>> make_cuda_backend(const CudaOptions&) {
  return failed_precondition("cuda: {}", kNoCuda);
}
#endif

std::optional<LocalRank> local_rank_from_env() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK", "MPI_LOCALRANKID"}) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') continue;
    const auto rank = parse_count(value);
    if (!rank || *rank > std::numeric_limits<int>::max()) {
      spdlog::warn("{} = '{}' is not a local rank (a number >= 0); ignored", name, value);
      continue;
    }
    return LocalRank{static_cast<int>(*rank), name};
  }
  return std::nullopt;
}

int local_device(const std::optional<LocalRank>& local, int count) {
  if (!local || count <= 0) return 0;
  return local->rank % count;
}

namespace {

// The CUDA backend on the local rank's device, of `count` present.
Result<std::unique_ptr<Backend>> local_rank_backend(const char* device, int count, MatmulPrecision matmul) {
  const std::optional<LocalRank> local = local_rank_from_env();
  const int index = local_device(local, count);
  if (local)
    spdlog::info("device {}: cuda:{} ({} = {}, {} visible CUDA device{})", device, index, local->source, local->rank,
                 count, count == 1 ? "" : "s");
  else
    spdlog::info("device {}: cuda:0 (no local rank in the environment; {} visible CUDA device{})", device, count,
                 count == 1 ? "" : "s");
  return make_cuda_backend(CudaOptions{index, matmul});
}

// A job's CPU backend. With bf16 products the log says, once a process,
// what the cores' measured peaks say of them (core/fma_peak.h): on a CPU
// whose bf16 dot products run below its float32 multiply-adds the job would
// run slower than in fp32, and a user who chose bf16 for speed should know.
Result<std::unique_ptr<Backend>> job_cpu_backend(int threads, MatmulPrecision matmul, CpuBlas blas) {
  auto backend = make_cpu_backend(threads, matmul, blas);
  if (backend.ok() && matmul == MatmulPrecision::kBf16) {
    static std::once_flag once;
    std::call_once(once, [] {
      // One thread each, a few tenths of a second in all: the ratio is a
      // core's, and 0.5x or 2x does not hide in a busy machine's noise.
      const double bf16 = measure_bf16_dot_peak(1, 0.03, 3);
      const double fp32 = measure_fma_peak(1, 0.03, 3).gflops;
      bool slower = false;
      const std::string note = bf16_products_note(bf16, fp32, &slower);
      spdlog::log(slower ? spdlog::level::warn : spdlog::level::info, "train.matmul = \"bf16\": {}", note);
    });
  }
  return backend;
}

}  // namespace

Result<std::unique_ptr<Backend>> make_backend(const DeviceSpec& device, MatmulPrecision matmul, int threads,
                                              CpuBlas blas) {
  switch (device.kind) {
    case DeviceKind::kCpu: return job_cpu_backend(threads, matmul, blas);
    case DeviceKind::kAuto: {
      std::string why;
      if (const int count = cuda_device_count(&why); count > 0) return local_rank_backend("auto", count, matmul);
      spdlog::info("device auto: no CUDA device ({}); using the CPU", why);
      // auto takes what the machine has: bf16 products where the CPU has them.
      if (matmul == MatmulPrecision::kBf16 && !cpu_bf16_products(&why)) {
        spdlog::warn("device auto: train.matmul = \"bf16\", but {}; the CPU's products are fp32", why);
        return make_cpu_backend(threads, MatmulPrecision::kFp32, blas);
      }
      return job_cpu_backend(threads, matmul, blas);
    }
    case DeviceKind::kCuda: {
      std::string why;
      const int count = cuda_device_count(&why);
      const std::string name = device.index < 0 ? "cuda" : fmt::format("cuda:{}", device.index);
      if (count == 0)
        return failed_precondition("train.device = \"{}\": no CUDA device ({}); use auto or cpu", name, why);
      if (device.index < 0) return local_rank_backend("cuda", count, matmul);
      if (device.index >= count)
        return failed_precondition("train.device = \"{}\": there {} {} CUDA device{} (0..{})", name,
                                   count == 1 ? "is" : "are", count, count == 1 ? "" : "s", count - 1);
      return make_cuda_backend(CudaOptions{device.index, matmul});
    }
  }
  return invalid_argument("unknown device kind");
}

}  // namespace pst
