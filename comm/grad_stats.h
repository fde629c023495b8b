// A BSP round's gradient statistics and their reduction over the servers
// (docs/design.md, One BSP step, step 4): each server's partial fp64 sum of
// squares and non-finite flag, added so that every server clips with the
// same global norm and skips the same steps. The step's control flags ride
// on the same reduction.
//
// GradStatsReducer is the only thing a parameter server knows of how the
// job was launched: threads of one process (ThreadStatsReducer, below),
// processes under mpirun (comm/mpi_stats_reducer.h), or processes that meet
// at the scheduler (scheduler/client.h).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

#include "comm/protocol.capnp.h"
#include "core/deadline.h"
#include "core/status.h"

namespace pst {

// What the servers decide together at a step, whichever of them asked:
// some server wants a checkpoint of this step (checkpoint.every_minutes),
// some node asked the job to stop after it (a signal). Riding on the
// reduction, every server acts on them at the same step (docs/design.md,
// Checkpoints).
struct StepControl {
  bool checkpoint = false;
  bool stop = false;

  StepControl& operator|=(const StepControl& o) {
    checkpoint = checkpoint || o.checkpoint;
    stop = stop || o.stop;
    return *this;
  }
};

struct GradStats {
  double sum_squares = 0.0;
  bool nonfinite = false;  // some element is inf or NaN
  StepControl control;

  GradStats& operator+=(const GradStats& o) {
    sum_squares += o.sum_squares;
    nonfinite = nonfinite || o.nonfinite;
    control |= o.control;
    return *this;
  }
};

// The one conversion between GradStats and the wire (GradStatsInfo).
void to_wire(const GradStats& stats, wire::GradStatsInfo::Builder out);
GradStats from_wire(wire::GradStatsInfo::Reader in);

// Thread safety: all_reduce is called by S server threads at once (one per
// server index); implementations synchronise them.
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

}  // namespace pst
