// `pst train`, whichever way the job was launched. job/ is pst's
// composition root: the only module that knows launch modes and wires the
// servers, workers, scheduler, metrics, security and resume together;
// cli/ parses flags, calls it, prints the Status and maps it to an exit
// code (exit_code).
#pragma once

#include <string>
#include <vector>

#include "core/config.h"
#include "core/status.h"
#include "worker/task_data.h"

namespace pst {

struct TrainArgs {
  std::string config;             // the job file
  std::vector<std::string> sets;  // section.key=value overrides, in order
  std::string role, scheduler;    // --role and --scheduler; empty: not a role
};

// With a role: one process started on its own (job/role.cc). Under
// mpirun: this process is one rank of the job (job/mpi.cc; a rank that
// fails logs why and ends the whole job with MPI_Abort, so an error never
// returns). Else the whole job in this process (job/local.cc).
Status train(const TrainArgs& args);

// The whole job as threads of this process: S servers and W workers over
// inproc sockets, each worker with a backend of its own, as the processes of
// an mpirun job would be. The distributed tests' fixture.
Status train_threads(JobConfig& job, const TaskData& data);

// The exit code of a pst command that ended with `s`: 0 when ok; 2 when
// what it was given cannot work and a rerun unchanged fails again (a bad
// value or flag, a missing file, a corrupt file or message, a state that
// forbids it such as an output folder of another run: kInvalidArgument,
// kNotFound, kDataLoss, kFailedPrecondition); 1 when a rerun may succeed
// (a peer lost, a deadline passed, the OS refused a read or write:
// kDeadlineExceeded, kIo, kInternal).
int exit_code(const Status& s);

}  // namespace pst
