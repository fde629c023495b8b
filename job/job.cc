#include "job/job.h"

#include "core/terminal.h"
#include "job/launch.h"

namespace pst {

Status train(const TrainArgs& args) {
  if (!args.role.empty()) return train_role(args);
  if (launched_by_mpirun()) return train_mpi(args);
  return train_local(args);
}

Status check_zmq_transport(const JobConfig& job, const char* mode) {
  if (job.cluster.transport != Transport::kMpi) return Status();
  return invalid_argument(
      "cluster.transport = mpi: MPI carries the tensors only between the ranks of a job launched by mpirun or "
      "srun --mpi=pmix; {} job uses zmq (the default)",
      mode);
}

Status check_fixed_size(const JobConfig& job, const char* mode) {
  if (job.cluster.max_workers <= job.cluster.workers) return Status();
  return invalid_argument(
      "cluster.max_workers = {} > cluster.workers = {}: workers join a running job only when its processes start "
      "with --role; {} job has a fixed number of workers (set cluster.max_workers = 0)",
      job.cluster.max_workers, job.cluster.workers, mode);
}

int exit_code(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk: return 0;
    case StatusCode::kInvalidArgument:
    case StatusCode::kNotFound:
    case StatusCode::kDataLoss:
    case StatusCode::kFailedPrecondition: return 2;
    default: return 1;
  }
}

}  // namespace pst
