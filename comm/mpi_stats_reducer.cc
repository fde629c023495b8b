#include "comm/mpi_stats_reducer.h"

#include <cmath>
#include <vector>

namespace pst {

Result<GradStats> MpiStatsReducer::all_reduce(int server, int64_t step, const GradStats& local, Deadline) {
  // Gathered, then added in server order like the other reducers: the order
  // of MPI_Allreduce's additions is the library's choice.
  // Every server has the same workers, so the parts have one size: four
  // values and a flag per worker.
  auto flag = [](bool b) { return b ? 1.0 : 0.0; };
  std::vector<double> in = {local.sum_squares, flag(local.nonfinite), flag(local.control.checkpoint),
                            flag(local.control.stop)};
  for (uint8_t c : local.contributors) in.push_back(flag(c != 0));
  const int count = static_cast<int>(in.size());
  int servers = 0;
  MPI_Comm_size(comm_, &servers);
  std::vector<double> all(static_cast<size_t>(servers) * in.size());
  if (MPI_Allgather(in.data(), count, MPI_DOUBLE, all.data(), count, MPI_DOUBLE, comm_) != MPI_SUCCESS)
    return failed_precondition("server {}: MPI_Allgather of the gradient statistics of step {} failed", server, step);
  std::vector<GradStats> parts(static_cast<size_t>(servers));
  for (int s = 0; s < servers; ++s) {
    const double* p = all.data() + static_cast<size_t>(s) * in.size();
    GradStats& part = parts[static_cast<size_t>(s)];
    part.sum_squares = p[0];
    part.nonfinite = p[1] > 0.0;
    part.control.checkpoint = p[2] > 0.0;
    part.control.stop = p[3] > 0.0;
    for (size_t w = 4; w < in.size(); ++w) part.contributors.push_back(p[w] > 0.0 ? 1 : 0);
  }
  GradStats g = sum_over_servers(parts);
  g.nonfinite = g.nonfinite || !std::isfinite(g.sum_squares);
  return g;
}

}  // namespace pst
