// The CPU budget of a process with train.threads = 0, for each source that
// can limit it, against the count worked out by hand.
#include "core/cpus.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace pst {
namespace {

CpuSources machine(int online, int affinity) {
  CpuSources s;
  s.online = online;
  s.affinity = affinity;
  return s;
}

TEST(CpusTest, TheWholeMachineWhenNothingLimits) {
  const CpuBudget b = cpu_budget(machine(8, 8));
  EXPECT_EQ(b.cpus, 8);
  EXPECT_FALSE(b.own);
  EXPECT_EQ(b.why, "8 CPUs online");
}

TEST(CpusTest, OmpNumThreadsWinsAndIsTheProcesssOwn) {
  CpuSources s = machine(8, 2);
  s.omp_num_threads = "3";
  EXPECT_EQ(cpu_budget(s).cpus, 3);
  EXPECT_TRUE(cpu_budget(s).own);
  EXPECT_EQ(cpu_budget(s).why, "OMP_NUM_THREADS=3");
  s.omp_num_threads = "5,2";  // nested levels: the first is the process's
  EXPECT_EQ(cpu_budget(s).cpus, 5);
  for (const char* bad : {"", "0", "-2", "many"}) {
    s.omp_num_threads = bad;
    EXPECT_EQ(cpu_budget(s).cpus, 2) << "OMP_NUM_THREADS='" << bad << "' is ignored";
  }
}

TEST(CpusTest, AffinityMask) {
  const CpuBudget b = cpu_budget(machine(16, 4));
  EXPECT_EQ(b.cpus, 4);
  EXPECT_TRUE(b.own);
  EXPECT_EQ(b.why, "affinity mask of 4 CPUs");
}

TEST(CpusTest, CgroupQuotasRoundUp) {
  CpuSources s = machine(16, 16);
  s.cgroup_v2_max = "150000 100000\n";
  EXPECT_EQ(cpu_budget(s).cpus, 2);
  EXPECT_EQ(cpu_budget(s).why, "cgroup CPU quota of 1.5 CPUs");
  s.cgroup_v2_max = "max 100000\n";
  EXPECT_EQ(cpu_budget(s).cpus, 16);
  s.cgroup_v2_max.reset();
  s.cgroup_v1_quota = "300000\n";
  s.cgroup_v1_period = "100000\n";
  EXPECT_EQ(cpu_budget(s).cpus, 3);
  s.cgroup_v1_quota = "-1\n";
  EXPECT_EQ(cpu_budget(s).cpus, 16);
  s.cgroup_v2_max = "50000 100000";  // half a CPU is still one thread
  EXPECT_EQ(cpu_budget(s).cpus, 1);
}

TEST(CpusTest, TheSmallestLimitWins) {
  CpuSources s = machine(16, 6);
  s.cgroup_v2_max = "400000 100000";
  EXPECT_EQ(cpu_budget(s).cpus, 4);
  s.cgroup_v2_max = "800000 100000";
  EXPECT_EQ(cpu_budget(s).cpus, 6);
  EXPECT_EQ(cpu_budget(s).why, "affinity mask of 6 CPUs");
}

TEST(CpusTest, ThisProcessHasABudget) {
  const CpuBudget b = cpu_budget();
  EXPECT_GE(b.cpus, 1);
  EXPECT_FALSE(b.why.empty());
}

// The helper's stderr (tests/core/openmp_waits.cc), run by the shell with
// `env` first: e.g. "-u OMP_WAIT_POLICY".
std::string openmp_waits(const std::string& env, const std::string& args) {
  const std::string command = "env " + env + " " + PST_OPENMP_WAITS + " " + args + " 2>&1";
  FILE* p = popen(command.c_str(), "r");
  EXPECT_NE(p, nullptr) << command;
  if (p == nullptr) return "";
  std::string out;
  std::array<char, 4096> buffer;
  for (size_t n; (n = fread(buffer.data(), 1, buffer.size(), p)) > 0;) out.append(buffer.data(), n);
  EXPECT_EQ(pclose(p), 0) << command << "\n" << out;
  return out;
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// libgomp's own account of its settings is the oracle: with a passive
// policy read at load it spins 0 times before it sleeps.
TEST(OpenMpWaitsTest, ARestartMakesLibgompWaitPassively) {
  const std::string out = openmp_waits("-u OMP_WAIT_POLICY -u GOMP_SPINCOUNT", "restart 'two words' '' x");
  EXPECT_EQ(count(out, "main begins"), 2u) << out;
  EXPECT_NE(out.find("OMP_WAIT_POLICY = 'PASSIVE'"), std::string::npos) << out;
  EXPECT_NE(out.find("GOMP_SPINCOUNT = '0'"), std::string::npos) << out;
  // Every argument came through the restart as it was, the empty one too.
  EXPECT_NE(out.find("arg [two words]\narg []\narg [x]\n"), std::string::npos) << out;
  EXPECT_NE(out.find("name [openmp_waits]"), std::string::npos) << out;  // ps and pgrep still know it
  EXPECT_NE(out.find("started again with OMP_WAIT_POLICY=PASSIVE"), std::string::npos) << out;
}

TEST(OpenMpWaitsTest, ASetenvAfterLoadingChangesNothing) {
  // Why the restart: libgomp has read its environment before main.
  const std::string out = openmp_waits("-u OMP_WAIT_POLICY -u GOMP_SPINCOUNT", "setenv");
  EXPECT_EQ(count(out, "main begins"), 1u) << out;
  EXPECT_EQ(out.find("GOMP_SPINCOUNT = '0'"), std::string::npos) << out;
  EXPECT_NE(out.find("GOMP_SPINCOUNT = '"), std::string::npos) << out;
}

TEST(OpenMpWaitsTest, APolicyTheUserSetHolds) {
  const std::string out = openmp_waits("OMP_WAIT_POLICY=ACTIVE", "restart");
  EXPECT_EQ(count(out, "main begins"), 1u) << out;
  EXPECT_NE(out.find("OMP_WAIT_POLICY = 'ACTIVE'"), std::string::npos) << out;
}

// fitting_openblas_kernels against a table written from OpenBLAS's kernel
// names: a choice without AVX2 or AVX-512 gives way on a CPU that has them,
// any other stands.
TEST(OpenBlasKernelsTest, AChoiceOlderThanTheCpusVectorsGivesWay) {
  const CpuVectors none, avx2{true, false, false}, avx512{true, true, false}, bf16{true, true, true};
  struct Case {
    const char* chosen;
    CpuVectors cpu;
    const char* fitting;
  };
  for (const Case& c :
       {Case{"Prescott", bf16, "Cooperlake"}, Case{"Prescott", avx512, "SkylakeX"}, Case{"Nehalem", avx2, "Haswell"},
        Case{"Sandybridge", avx512, "SkylakeX"}, Case{"Core2", none, ""}, Case{"Prescott", none, ""},
        Case{"Haswell", bf16, ""}, Case{"Zen", avx512, ""}, Case{"SkylakeX", bf16, ""}, Case{"Cooperlake", avx512, ""},
        Case{"SapphireRapids", bf16, ""}})
    EXPECT_EQ(fitting_openblas_kernels(c.chosen, c.cpu), c.fitting)
        << c.chosen << " on avx2 " << c.cpu.avx2_fma << " avx512 " << c.cpu.avx512 << " bf16 " << c.cpu.avx512_bf16;
}

// The value after "LABEL [" in the helper's output, up to "]".
std::string bracketed(const std::string& out, const std::string& label) {
  const size_t at = out.find(label + " [");
  if (at == std::string::npos) return "<none>";
  const size_t begin = at + label.size() + 2;
  return out.substr(begin, out.find(']', begin) - begin);
}

// The oracle is the kernel's own flags: on a CPU whose /proc/cpuinfo lists
// AVX2 and FMA, a program that calls the restart runs OpenBLAS kernels
// with AVX2 or AVX-512, whatever OpenBLAS chose for itself; when it had to
// start again, it says so (on an Emerald Rapids Xeon OpenBLAS 0.3.21 chose
// Prescott).
TEST(OpenBlasKernelsTest, AProgramThatRestartsRunsKernelsThatFitTheCpu) {
  std::ifstream in("/proc/cpuinfo");
  std::string line, flags;
  while (std::getline(in, line) && flags.empty())
    if (line.starts_with("flags")) flags = line + " ";
  ASSERT_FALSE(flags.empty()) << "no flags in /proc/cpuinfo";
  const std::string out = openmp_waits("-u OPENBLAS_CORETYPE -u PST_OPENBLAS_OWN_CHOICE", "openblas");
  const std::string kernels = bracketed(out, "kernels"), note = bracketed(out, "note");
  if (flags.find(" avx2 ") != std::string::npos && flags.find(" fma ") != std::string::npos) {
    const std::vector<std::string> wide{"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"};
    EXPECT_NE(std::find(wide.begin(), wide.end(), kernels), wide.end()) << out;
  }
  // Started twice exactly when it says why.
  EXPECT_EQ(count(out, "main begins"), note.empty() ? 1u : 2u) << out;
  if (!note.empty()) {
    EXPECT_NE(note.find("pst set OPENBLAS_CORETYPE=" + kernels), std::string::npos) << note;
  }
}

TEST(OpenBlasKernelsTest, KernelsTheUserNamedHold) {
  const std::string out = openmp_waits("-u PST_OPENBLAS_OWN_CHOICE OPENBLAS_CORETYPE=Prescott", "openblas");
  EXPECT_EQ(count(out, "main begins"), 1u) << out;
  EXPECT_EQ(bracketed(out, "kernels"), "Prescott") << out;
  EXPECT_EQ(bracketed(out, "note"), "") << out;
}

}  // namespace
}  // namespace pst
