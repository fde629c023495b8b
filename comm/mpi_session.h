// The MPI side of a job that mpirun launched (docs/design.md, Roles and launch): MPI is the
// bootstrap (who is who, where everyone listens) and carries the servers'
// reduction of gradient statistics; tensors travel over ZeroMQ, or over MPI
// with cluster.transport = mpi (comm/mpi_transport.h).
//
// MPI is initialised with MPI_THREAD_MULTIPLE where the library has it: with
// cluster.transport = mpi a server's gateway thread (comm/mpi_transport.h)
// calls MPI while its update thread reduces. Otherwise MPI_THREAD_SERIALIZED
// is enough: a server calls MPI from its update thread, never from two
// threads at once.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/terminal.h"  // launched_by_mpirun()

namespace pst {

class MpiSession {
 public:
  static Result<std::unique_ptr<MpiSession>> init();
  ~MpiSession();  // MPI_Finalize
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // Ranks of this job on this host (for sharing the cores).
  int local_size() const { return local_size_; }
  // MPI_Init_thread's answer (MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE).
  int thread_level() const { return thread_level_; }
  // Every rank's string, in rank order (MPI_Allgather of fixed-size records).
  Result<std::vector<std::string>> allgather(const std::string& mine);
  // The communicator of the ranks that pass the same color (MPI_Comm_split);
  // freed with the session.
  MPI_Comm split(int color);
  void barrier();

 private:
  MpiSession() = default;
  int rank_ = 0, size_ = 1, local_size_ = 1, thread_level_ = 0;
  std::vector<MPI_Comm> comms_;
};

}  // namespace pst
