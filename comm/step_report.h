// What one step did, as the servers report it: the optimizer's result
// (ps/shard_optimizer.h), a pull's answer to a worker
// (comm/parameter_client.h), and on the wire StepInfo (comm/protocol.capnp).
#pragma once

#include <cstdint>

#include "comm/protocol.capnp.h"

namespace pst {

struct StepReport {
  int64_t version = 0;        // rounds completed, including this one (a pull: the weights' version)
  int64_t applied_steps = 0;  // optimizer steps applied so far
  bool applied = false;       // false when skipped (non-finite gradient)
  double grad_norm = 0.0;     // global norm before clipping
  double clip_coef = 1.0;
  double lr = 0.0;        // learning rate of this step (of the next one if skipped)
  int64_t tokens = 0;     // tokens in this step's pushes (servers only)
  double loss_sum = 0.0;  // summed loss in this step's pushes (servers only)
  // The reduced control flags (comm/grad_stats.h, StepControl).
  bool checkpoint = false;  // a checkpoint of this version is written (servers only)
  bool stop = false;        // the job stops at this version (graceful stop, docs/design.md, Checkpoints)
  // A pull in BSP: the batch the pulling worker trains on next
  // (data/data_cursor.h); -1: its own walk of the data (ASP, SSP, one process).
  int64_t batch = -1;
  // A pull in BSP: the pulling worker is the lowest of the next step's
  // workers, so at the end it validates, tests and writes the model (worker 0,
  // unless it was removed from the job).
  bool lead = false;
};

// The one conversion between StepReport and the wire (StepInfo: applied,
// applied steps, norm, clip coefficient, learning rate, stop, batch, lead). The
// version travels in the header.
void to_wire(const StepReport& report, wire::StepInfo::Builder out);
StepReport from_wire(wire::StepInfo::Reader in);

}  // namespace pst
