// The bootstraps of `pst train`, one per launch mode (job/job.h's train
// picks one). Internal to job/.
#pragma once

#include "job/job.h"

namespace pst {

// Every server and worker of the job in this process: as threads over
// inproc sockets (train_threads), or one thread playing every worker in
// turn against an in-process optimizer.
Status train_local(const TrainArgs& args);
// One rank of an mpirun job.
Status train_mpi(const TrainArgs& args);
// One process with --role, meeting the others at the scheduler.
Status train_role(const TrainArgs& args);
// --role auto: the role of Slurm task SLURM_PROCID of SLURM_NTASKS (task 0
// the scheduler, 1..S the servers, the rest the workers, as the ranks of an
// mpirun job); sets cluster.workers to the tasks that are workers.
Result<std::string> role_from_slurm(JobConfig& job);

// A job of a fixed size (threads, mpirun) refuses cluster.max_workers >
// cluster.workers: only --role jobs take workers that join; `mode` names it.
Status check_fixed_size(const JobConfig& job, const char* mode);
// An error unless cluster.transport is zmq: jobs that mpirun did not launch
// (`mode` names them, e.g. "a one-process") have no MPI to carry tensors.
Status check_zmq_transport(const JobConfig& job, const char* mode);

}  // namespace pst
