#include "core/cpus.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

#include <cblas.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace pst {
namespace {

std::optional<long long> parse_int(const std::string& s) {
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (end == s.c_str()) return std::nullopt;
  while (*end == ' ' || *end == '\n' || *end == '\t') ++end;
  if (*end != '\0' && *end != ',') return std::nullopt;
  return v;
}

// Quota / period in CPUs, when both are positive numbers.
std::optional<double> quota_cpus(const std::string& quota, const std::string& period) {
  const auto q = parse_int(quota), p = parse_int(period);
  if (!q || !p || *q <= 0 || *p <= 0) return std::nullopt;
  return static_cast<double>(*q) / static_cast<double>(*p);
}

std::optional<std::string> read_text(const char* path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

CpuBudget cpu_budget(const CpuSources& s) {
  CpuBudget b;
  if (s.omp_num_threads) {
    const auto n = parse_int(*s.omp_num_threads);
    if (n && *n > 0) {
      b.cpus = static_cast<int>(std::min<long long>(*n, 1024));
      b.why = fmt::format("OMP_NUM_THREADS={}", *n);
      b.own = true;
      return b;
    }
  }
  b.cpus = std::max(1, s.online);
  b.why = fmt::format("{} CPUs online", b.cpus);
  if (s.affinity > 0 && s.affinity < b.cpus) {
    b.cpus = s.affinity;
    b.why = fmt::format("affinity mask of {} CPUs", s.affinity);
    b.own = true;
  }
  std::optional<double> quota;
  if (s.cgroup_v2_max) {
    std::istringstream in(*s.cgroup_v2_max);
    std::string q, p;
    in >> q >> p;
    quota = quota_cpus(q, p);
  } else if (s.cgroup_v1_quota && s.cgroup_v1_period) {
    quota = quota_cpus(*s.cgroup_v1_quota, *s.cgroup_v1_period);
  }
  if (quota) {
    const int n = std::max(1, static_cast<int>(std::ceil(*quota - 1e-9)));
    if (n < b.cpus) {
      b.cpus = n;
      b.why = fmt::format("cgroup CPU quota of {:.3g} CPUs", *quota);
      b.own = true;
    }
  }
  return b;
}

CpuSources read_cpu_sources() {
  CpuSources s;
  if (const char* omp = std::getenv("OMP_NUM_THREADS")) s.omp_num_threads = omp;
  s.online = static_cast<int>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) s.affinity = CPU_COUNT(&set);
  s.cgroup_v2_max = read_text("/sys/fs/cgroup/cpu.max");
  if (!s.cgroup_v2_max) {
    s.cgroup_v1_quota = read_text("/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
    s.cgroup_v1_period = read_text("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
  }
  return s;
}

CpuBudget cpu_budget() { return cpu_budget(read_cpu_sources()); }

namespace {

// Starts this program again in this process: execv of the file
// /proc/self/exe links to, with the arguments of /proc/self/cmdline and the
// environment as it is now. Returns only when that failed, with why.
std::string restart_self() {
  // The arguments as the kernel keeps them: NUL-terminated, one after another.
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t begin = 0; begin < all.size();) {
    const size_t end = all.find('\0', begin);
    args.push_back(all.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    begin = end == std::string::npos ? all.size() : end + 1;
  }
  if (args.empty()) return "/proc/self/cmdline is unreadable";
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The program's own path, not /proc/self/exe: the process keeps its name
  // (ps, pgrep, top).
  std::array<char, 4096> self{};
  const ssize_t length = readlink("/proc/self/exe", self.data(), self.size() - 1);
  execv(length > 0 ? self.data() : "/proc/self/exe", argv.data());
  return fmt::format("starting again failed ({})", std::strerror(errno));
}

}  // namespace

void restart_with_passive_openmp() {
  constexpr const char* kRestarted = "PST_OPENMP_RESTARTED";
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) {
    if (std::getenv(kRestarted) != nullptr) {
      unsetenv(kRestarted);
      spdlog::info("started again with OMP_WAIT_POLICY=PASSIVE: OpenMP threads sleep while they wait");
    }
    return;
  }
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  setenv(kRestarted, "1", 1);
  const std::string failed = restart_self();
  spdlog::warn(
      "OMP_WAIT_POLICY: {}; OpenMP threads spin while they wait (set OMP_WAIT_POLICY=PASSIVE in the environment)",
      failed);
}

VectorWidth openblas_kernels_width(std::string_view kernels) {
  // The names openblas_get_corename() gives (OpenBLAS's dynamic.c); its
  // Zen kernels are Haswell's.
  for (std::string_view k : {"SkylakeX", "Cooperlake", "SapphireRapids"})
    if (kernels == k) return VectorWidth::kAvx512;
  for (std::string_view k : {"Haswell", "Zen"})
    if (kernels == k) return VectorWidth::kAvx2;
  return VectorWidth::kOlder;
}

CpuVectors cpu_vectors() {
  CpuVectors v;
  v.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  // OpenBLAS's SkylakeX kernels use all four.
  v.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  v.avx512_bf16 = v.avx512 && __builtin_cpu_supports("avx512bf16");
  return v;
}

std::string fitting_openblas_kernels(std::string_view chosen, const CpuVectors& cpu) {
  if (openblas_kernels_width(chosen) != VectorWidth::kOlder) return "";
  if (cpu.avx512) return cpu.avx512_bf16 ? "Cooperlake" : "SkylakeX";
  if (cpu.avx2_fma) return "Haswell";
  return "";
}

namespace {
constexpr const char* kOpenBlasChose = "PST_OPENBLAS_OWN_CHOICE";
}  // namespace

void restart_with_fitting_openblas_kernels() {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;  // the user's choice, or this function's
  const std::string chosen = openblas_get_corename();
  const std::string fitting = fitting_openblas_kernels(chosen, cpu_vectors());
  if (fitting.empty()) return;
  setenv("OPENBLAS_CORETYPE", fitting.c_str(), 1);
  setenv(kOpenBlasChose, chosen.c_str(), 1);
  const std::string failed = restart_self();
  unsetenv("OPENBLAS_CORETYPE");
  unsetenv(kOpenBlasChose);
  spdlog::warn(
      "OpenBLAS runs its {} kernels, which use neither AVX2 nor AVX-512, on a CPU that has {}, and starting again "
      "with OPENBLAS_CORETYPE={} failed: {}. Matrix products run several times slower than they could: set "
      "OPENBLAS_CORETYPE={} in the environment",
      chosen, fitting == "Haswell" ? "AVX2" : "AVX-512", fitting, failed, fitting);
}

std::string openblas_kernels_note() {
  const char* own = std::getenv(kOpenBlasChose);
  const char* set = std::getenv("OPENBLAS_CORETYPE");
  if (own == nullptr || set == nullptr) return "";
  return fmt::format(
      "OpenBLAS runs its {} kernels: its own choice for this CPU, {}, uses neither AVX2 nor AVX-512, so pst set "
      "OPENBLAS_CORETYPE={} (set OPENBLAS_CORETYPE to choose)",
      openblas_get_corename(), own, set);
}

}  // namespace pst
