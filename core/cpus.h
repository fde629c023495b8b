// How many CPUs this process may use, and why: the number a process that
// leaves `train.threads = 0` runs its compute threads on.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace pst {

struct CpuBudget {
  int cpus = 1;  // at least 1
  // The source that set it, for the log: "OMP_NUM_THREADS=3",
  // "affinity mask of 2 CPUs", "cgroup CPU quota of 1.5 CPUs" ...
  std::string why;
  // The process was limited to fewer CPUs than the machine has (by its
  // affinity mask or cgroup quota): the budget is its own, not a host's to
  // share with the job's other processes.
  bool own = false;
};

// What the budget is computed from; each field empty where the source is
// absent. Kept apart from the reading so that tests can give any input.
struct CpuSources {
  std::optional<std::string> omp_num_threads;   // the environment variable
  int online = 1;                               // CPUs of the machine
  int affinity = 0;                             // CPUs in the affinity mask (0: unknown)
  std::optional<std::string> cgroup_v2_max;     // cpu.max: "QUOTA PERIOD" or "max PERIOD"
  std::optional<std::string> cgroup_v1_quota;   // cpu.cfs_quota_us (-1: none)
  std::optional<std::string> cgroup_v1_period;  // cpu.cfs_period_us
};

// OMP_NUM_THREADS when it is set to a positive number (its first entry, as
// OpenMP reads a list); otherwise the smallest of the machine's CPUs, the
// affinity mask and the cgroup quota rounded up.
CpuBudget cpu_budget(const CpuSources& sources);

// The sources of this process: its environment, sched_getaffinity and the
// cgroup files under /sys/fs/cgroup (v2, then v1).
CpuSources read_cpu_sources();

// cpu_budget(read_cpu_sources()).
CpuBudget cpu_budget();

// The OpenMP threads of several processes on one host must sleep while they
// wait for work, not spin: spinning threads of one process take the cores
// the others' threads need (two servers on 2 cores updated 3-4x slower).
// libgomp reads OMP_WAIT_POLICY (and GOMP_SPINCOUNT) once, when it loads,
// before main: a setenv afterwards changes nothing. So when the environment
// names no policy, this sets OMP_WAIT_POLICY=PASSIVE and starts this program
// again in this process (execv of the file /proc/self/exe links to, with the
// arguments of /proc/self/cmdline), which logs that it did. It returns when
// a policy was named already (the user's choice holds), or with a warning
// when the restart failed (the process goes on, spinning). Call it before
// any thread or MPI starts.
void restart_with_passive_openmp();

// OpenBLAS picks its kernels for the CPU when it loads, before main, unless
// OPENBLAS_CORETYPE names them. Debian 12's OpenBLAS (0.3.21) does not know
// Intel's Xeons after Sapphire Rapids (an Emerald Rapids Xeon, CPUID family 6
// model 207, got its Prescott kernels: SSE3, a quarter of the products' speed
// with AVX-512 there), and falls back to kernels older than the CPU's
// vectors. The widths of OpenBLAS's kernels by name:
enum class VectorWidth { kOlder, kAvx2, kAvx512 };
VectorWidth openblas_kernels_width(std::string_view kernels);

// The vectors of the CPU that OpenBLAS has kernels for.
struct CpuVectors {
  bool avx2_fma = false;
  bool avx512 = false;  // F, BW, DQ and VL
  bool avx512_bf16 = false;
};
CpuVectors cpu_vectors();  // this CPU's

// The kernels OpenBLAS should run on a CPU with `cpu` where its own choice
// was `chosen`: empty when that choice stands, which it does unless it uses
// neither AVX2 nor AVX-512 and the CPU has one of them (then the kernels
// OpenBLAS gives the CPUs it knows with those vectors: Cooperlake with
// AVX512_BF16, SkylakeX, Haswell). OpenBLAS's choices among AVX2 and
// AVX-512 kernels stand (on a Zen 4 its AVX2 kernels ran as fast).
std::string fitting_openblas_kernels(std::string_view chosen, const CpuVectors& cpu);

// When the environment names no kernels and OpenBLAS's own choice does not
// fit this CPU (fitting_openblas_kernels), sets OPENBLAS_CORETYPE and starts
// this program again, as restart_with_passive_openmp does; returns when it
// had nothing to do, or with a warning when the restart failed. Call it
// first in main.
void restart_with_fitting_openblas_kernels();

// What that did, for the log: empty when this process runs OpenBLAS's own
// choice or the environment's.
std::string openblas_kernels_note();

}  // namespace pst
