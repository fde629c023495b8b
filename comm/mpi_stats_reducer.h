// The servers' reduction of gradient statistics (comm/grad_stats.h) for S
// server processes under mpirun: an MPI_Allgather on the servers'
// communicator, added in server order.
#pragma once

#include <mpi.h>

#include "comm/grad_stats.h"

namespace pst {

// MPI has no deadline; a server that dies makes mpirun end the whole job,
// naming it. Thread safety: one server thread calls all_reduce.
class MpiStatsReducer final : public GradStatsReducer {
 public:
  explicit MpiStatsReducer(MPI_Comm servers) : comm_(servers) {}
  Result<GradStats> all_reduce(int server, int64_t step, const GradStats& local, Deadline deadline) override;

 private:
  MPI_Comm comm_;
};

}  // namespace pst
