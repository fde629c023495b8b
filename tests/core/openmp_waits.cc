// The helper of cpus_test's restart tests: says "main begins" (each time:
// a restart says it twice), does what argv[1] names, then prints its other
// arguments, its process name, the OpenBLAS kernels it runs with what
// openblas_kernels_note says, and the settings libgomp runs with
// (omp_display_env).
//   openmp_waits restart|setenv|openblas|none ARG...
#include <cblas.h>
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/cpus.h"

int main(int argc, char** argv) {
  std::fprintf(stderr, "main begins\n");
  if (argc < 2) return 2;
  if (!std::strcmp(argv[1], "restart")) pst::restart_with_passive_openmp();
  if (!std::strcmp(argv[1], "setenv")) setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  if (!std::strcmp(argv[1], "openblas")) pst::restart_with_fitting_openblas_kernels();
  for (int i = 2; i < argc; ++i) std::fprintf(stderr, "arg [%s]\n", argv[i]);
  char name[64] = {};
  if (FILE* comm = std::fopen("/proc/self/comm", "r")) {
    if (std::fgets(name, sizeof name, comm)) name[std::strcspn(name, "\n")] = 0;
    std::fclose(comm);
  }
  std::fprintf(stderr, "name [%s]\n", name);
  std::fprintf(stderr, "kernels [%s]\n", openblas_get_corename());
  std::fprintf(stderr, "note [%s]\n", pst::openblas_kernels_note().c_str());
  omp_display_env(1);
  return 0;
}
