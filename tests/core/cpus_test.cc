// The CPU budget of a process with train.threads = 0, for each source that
// can limit it, against the count worked out by hand.
#include "core/cpus.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace pst
