// Ranks of a job's nodes: 0 is the scheduler, 1..S the servers, S+1..S+W the
// workers, as mpirun numbers the processes of `mpirun -np 1+S+W pst train`.
#pragma once

#include <cstdint>

namespace pst {

struct JobLayout {
  int servers = 1;
  int workers = 1;

  int32_t nodes() const { return 1 + servers + workers; }
  int32_t server_rank(int k) const { return 1 + k; }
  int32_t worker_rank(int w) const { return 1 + servers + w; }
  bool is_server(int32_t rank) const { return rank >= 1 && rank <= servers; }
  bool is_worker(int32_t rank) const { return rank > servers && rank < nodes(); }
  int server_index(int32_t rank) const { return rank - 1; }
  int worker_index(int32_t rank) const { return rank - 1 - servers; }
};

}  // namespace pst
