// Step 4 of a BSP round (docs/design.md, One BSP step): the servers add their partial
// gradient statistics (fp64 sum of squares, non-finite flag) so that every
// server clips with the same global norm and skips the same steps.
#pragma once

#include <mpi.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

#include "comm/socket.h"
#include "core/deadline.h"
#include "core/status.h"
#include "ps/clipping.h"

namespace pst {

class GradStatsReducer {
 public:
  virtual ~GradStatsReducer() = default;
  // Called by every server (index 0..S-1) once per round; returns the sum
  // of all servers' statistics of that round, or an error at the deadline.
  virtual Result<GradStats> all_reduce(int server, int64_t step, const GradStats& local, Deadline deadline) = 0;
};

// One server: its statistics are the global ones.
class SingleServerReducer final : public GradStatsReducer {
 public:
  Result<GradStats> all_reduce(int, int64_t, const GradStats& local, Deadline) override { return local; }
};

// S servers running as threads of one process. The sum is taken in server
// order, so it does not depend on which thread arrives first.
class ThreadStatsReducer final : public GradStatsReducer {
 public:
  explicit ThreadStatsReducer(int servers) : partial_(static_cast<size_t>(servers)) {}
  Result<GradStats> all_reduce(int server, int64_t step, const GradStats& local, Deadline deadline) override;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_.
  std::vector<GradStats> partial_;
  int arrived_ = 0;
  int64_t generation_ = 0;
  GradStats result_;
};

// S server processes started without MPI: each reports its statistics to
// the scheduler, which answers with the sum (added in server order). The
// Dealer is used only by the calling (update) thread.
class SchedulerStatsReducer final : public GradStatsReducer {
 public:
  SchedulerStatsReducer(std::unique_ptr<Dealer> scheduler, uint64_t job_id, int32_t rank)
      : scheduler_(std::move(scheduler)), job_id_(job_id), rank_(rank) {}
  Result<GradStats> all_reduce(int server, int64_t step, const GradStats& local, Deadline deadline) override;

 private:
  std::unique_ptr<Dealer> scheduler_;
  uint64_t job_id_;
  int32_t rank_;
  uint64_t request_ = 1;
};

// S server processes under mpirun: MPI_Allreduce on the servers'
// communicator. MPI has no deadline; a server that dies makes mpirun end
// the whole job, naming it.
class MpiStatsReducer final : public GradStatsReducer {
 public:
  explicit MpiStatsReducer(MPI_Comm servers) : comm_(servers) {}
  Result<GradStats> all_reduce(int server, int64_t step, const GradStats& local, Deadline deadline) override;

 private:
  MPI_Comm comm_;
};

}  // namespace pst
