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
#include <optional>
#include <string>
#include <vector>

#include "comm/message.h"
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

// A worker that joins a running job (docs/design.md, Membership): its rank,
// and the process that speaks for it (Header.process).
struct Joiner {
  int32_t rank = 0;
  uint64_t process = 0;
  bool operator==(const Joiner&) const = default;
};

struct GradStats {
  double sum_squares = 0.0;
  bool nonfinite = false;  // some element is inf or NaN
  StepControl control;
  // Per worker, 1 when its push of the round is in the sum (docs/design.md,
  // Membership): a worker removed mid-round may have reached one server and
  // not another. The sum over servers keeps the workers every server has;
  // empty: not given (a job whose membership cannot change).
  std::vector<uint8_t> contributors;
  // In a sum: some server summed other workers than `contributors`, so every
  // server reduces again over them and the round's statistics are taken again.
  bool redo = false;
  // In the scheduler's sum (without redo): workers that join the job at the
  // next round; every server admits them at the same step.
  std::vector<Joiner> joined;
};

// The statistics of a round over the servers, added in server order (so the
// result does not depend on which arrived first); the contributors are the
// workers in every part, and redo says whether some part had more. Every
// reducer takes its sum here.
GradStats sum_over_servers(const std::vector<GradStats>& parts);

// The one conversion between GradStats and the wire (GradStatsInfo).
void to_wire(const GradStats& stats, wire::GradStatsInfo::Builder out);
GradStats from_wire(wire::GradStatsInfo::Reader in);

// A server's answer to another that asks for a sum of statistics.
struct SumAnswer {
  std::optional<GradStats> sum;  // the sum, when this server has it
  // Without a sum: none will come (this server takes no more sums from
  // the scheduler); otherwise the question may be asked again.
  bool lasting = false;
};

// Thread safety: all_reduce is called by S server threads at once (one per
// server index); implementations synchronise them.
class GradStatsReducer {
 public:
  virtual ~GradStatsReducer() = default;
  // Called by every server (index 0..S-1) once per round (twice when the
  // first sum says redo); returns sum_over_servers of every server's
  // statistics of that round, or an error at the deadline.
  virtual Result<GradStats> all_reduce(int server, int64_t step, const GradStats& local, Deadline deadline) = 0;
  // The reduction cannot complete any more (the scheduler it goes through
  // is gone): a waiting all_reduce, and every later one, fails with `why`,
  // unless another server has the sum (asks_servers()). Any thread; a
  // reducer without such a peer ignores it.
  virtual void abandon(const std::string& why) { (void)why; }
  // Another server's question once the scheduler is gone (docs/design.md,
  // The scheduler's death): the sum of `step`'s round `round` (1, or 2 after
  // a redo), when this server has it. Any thread.
  virtual SumAnswer sum_of(int64_t step, int round) const {
    (void)step;
    (void)round;
    return {std::nullopt, true};
  }
  // Once the scheduler is gone, all_reduce asks the other servers for the
  // sum (and they ask this one).
  virtual bool asks_servers() const { return false; }
  // all_reduce returns at once, without waiting for anyone (one server).
  virtual bool local() const { return false; }
};

// The round another server's question names (a Report whose stats carry
// it; 0 when they do not).
int question_round(const InMessage& question);
// The reply of server `server` (rank `rank` of job `job_id`) to another
// server's question, given what its reducer says (sum_of): the sum, or an
// Error that says it has none, for good (BAD_STEP) or for now (LATER).
Frames answer_sum_question(const SumAnswer& answer, const InMessage& question, uint64_t job_id, int32_t rank,
                           int server);

// One server: its statistics are the global ones.
class SingleServerReducer final : public GradStatsReducer {
 public:
  Result<GradStats> all_reduce(int, int64_t, const GradStats& local, Deadline) override { return local; }
  bool local() const override { return true; }
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

// Checks a part from another process: its contributors are one flag per
// worker of the job (or none); an error names the server and what is wrong.
bool contributors_fit(const GradStats& part, int workers, std::string* why);

}  // namespace pst
