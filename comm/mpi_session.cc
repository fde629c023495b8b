#include "comm/mpi_session.h"

#include <cstdlib>
#include <cstring>

namespace pst {

Result<std::unique_ptr<MpiSession>> MpiSession::init() {
  int provided = 0;
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
    return failed_precondition("MPI_Init_thread failed");
  std::unique_ptr<MpiSession> s(new MpiSession());
  s->thread_level_ = provided;
  if (provided < MPI_THREAD_SERIALIZED)
    return failed_precondition("this MPI library provides thread level {}; pst needs MPI_THREAD_SERIALIZED ({})",
                               provided, MPI_THREAD_SERIALIZED);
  MPI_Comm_rank(MPI_COMM_WORLD, &s->rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &s->size_);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, s->rank_, MPI_INFO_NULL, &local);
  MPI_Comm_size(local, &s->local_size_);
  MPI_Comm_free(&local);
  return s;
}

MpiSession::~MpiSession() {
  for (MPI_Comm& c : comms_) MPI_Comm_free(&c);
  MPI_Finalize();
}

Result<std::vector<std::string>> MpiSession::allgather(const std::string& mine) {
  constexpr size_t kRecord = 512;
  if (mine.size() >= kRecord) return invalid_argument("MPI allgather: '{}' is longer than {} bytes", mine, kRecord - 1);
  std::vector<char> send(kRecord, '\0'), recv(kRecord * static_cast<size_t>(size_), '\0');
  std::memcpy(send.data(), mine.data(), mine.size());
  if (MPI_Allgather(send.data(), kRecord, MPI_CHAR, recv.data(), kRecord, MPI_CHAR, MPI_COMM_WORLD) != MPI_SUCCESS)
    return failed_precondition("MPI_Allgather of endpoints failed");
  std::vector<std::string> out;
  for (int r = 0; r < size_; ++r) out.emplace_back(recv.data() + static_cast<size_t>(r) * kRecord);
  return out;
}

MPI_Comm MpiSession::split(int color) {
  MPI_Comm c;
  MPI_Comm_split(MPI_COMM_WORLD, color, rank_, &c);
  comms_.push_back(c);
  return c;
}

void MpiSession::barrier() { MPI_Barrier(MPI_COMM_WORLD); }

}  // namespace pst
