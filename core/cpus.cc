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
  // The arguments as the kernel keeps them: NUL-terminated, one after another.
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t begin = 0; begin < all.size();) {
    const size_t end = all.find('\0', begin);
    args.push_back(all.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    begin = end == std::string::npos ? all.size() : end + 1;
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  if (args.empty()) {
    spdlog::warn(
        "OMP_WAIT_POLICY: /proc/self/cmdline is unreadable; OpenMP threads spin while they wait (set "
        "OMP_WAIT_POLICY=PASSIVE in the environment)");
    return;
  }
  // The program's own path, not /proc/self/exe: the process keeps its name
  // (ps, pgrep, top).
  std::array<char, 4096> self{};
  const ssize_t length = readlink("/proc/self/exe", self.data(), self.size() - 1);
  execv(length > 0 ? self.data() : "/proc/self/exe", argv.data());
  spdlog::warn(
      "OMP_WAIT_POLICY: starting again with it set failed ({}); OpenMP threads spin while they wait (set "
      "OMP_WAIT_POLICY=PASSIVE in the environment)",
      std::strerror(errno));
}

}  // namespace pst
