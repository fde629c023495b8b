#include "job/job.h"

#include "core/terminal.h"
#include "job/launch.h"

namespace pst {

Status train(const TrainArgs& args) {
  if (!args.role.empty()) return train_role(args);
  if (launched_by_mpirun()) return train_mpi(args);
  return train_local(args);
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
