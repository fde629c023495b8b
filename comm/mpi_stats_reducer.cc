#include "comm/mpi_stats_reducer.h"

#include <cmath>
#include <vector>

namespace pst {

Result<GradStats> MpiStatsReducer::all_reduce(int server, int64_t step, const GradStats& local, Deadline) {
  // Gathered, then added in server order like the other reducers: the order
  // of MPI_Allreduce's additions is the library's choice.
  auto flag = [](bool b) { return b ? 1.0 : 0.0; };
  const double in[4] = {local.sum_squares, flag(local.nonfinite), flag(local.control.checkpoint),
                        flag(local.control.stop)};
  int servers = 0;
  MPI_Comm_size(comm_, &servers);
  std::vector<double> all(static_cast<size_t>(servers) * 4);
  if (MPI_Allgather(in, 4, MPI_DOUBLE, all.data(), 4, MPI_DOUBLE, comm_) != MPI_SUCCESS)
    return failed_precondition("server {}: MPI_Allgather of the gradient statistics of step {} failed", server, step);
  GradStats g;
  for (int s = 0; s < servers; ++s) {
    const double* p = all.data() + static_cast<size_t>(s) * 4;
    GradStats part;
    part.sum_squares = p[0];
    part.nonfinite = p[1] > 0.0;
    part.control.checkpoint = p[2] > 0.0;
    part.control.stop = p[3] > 0.0;
    g += part;
  }
  g.nonfinite = g.nonfinite || !std::isfinite(g.sum_squares);
  return g;
}

}  // namespace pst
