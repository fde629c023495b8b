// Which batch each worker of a BSP job trains on at a step (docs/design.md,
// Membership). Batches are numbered over epochs: batch g is batch g mod N
// of epoch g div N of BatchIterator's order (N batches per epoch).
//
// The cursor keeps the pool of batches no step has trained on: holes (batches
// handed to a worker whose push was not applied, because it was removed from
// the job), then next, next + 1, ... A step hands the pool to its members,
// the lowest worker index first: holes in ascending order, then new batches.
// With every worker in every step, worker w of W trains on batch v*W + w at
// step v, as BatchIterator's own walk does; when a worker is removed, its
// unapplied batch goes to a surviving worker at the next step, so within the
// epoch order no batch is skipped and none is trained on twice.
//
// Thread safety: none; the owner serialises calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace pst {

// The batches no step has trained on: holes, then next, next + 1, ...
struct DataPool {
  int64_t next = 0;
  std::vector<int64_t> holes;
};

class DataCursor {
 public:
  // A cursor over `pool` for a job of `workers`; nothing assigned yet.
  DataCursor(int workers, DataPool pool);

  // Hands this step's batches to the workers flagged in `members`.
  void assign(const std::vector<uint8_t>& members);
  // The same for every worker.
  void assign_all();
  // The batch worker w trains on at this step; -1 when it has none.
  int64_t batch(int worker) const { return assigned_[static_cast<std::size_t>(worker)]; }
  const std::vector<int64_t>& batches() const { return assigned_; }
  // The step was applied with the pushes of the workers flagged in
  // `contributors`: the batches of the others go back to the pool.
  void applied(const std::vector<uint8_t>& contributors);

  // The pool as it was before this step's assignment: what a checkpoint of
  // this step keeps, so that a resumed job (of any number of workers)
  // assigns from it again.
  const DataPool& pool() const { return before_; }

 private:
  DataPool pool_;  // holes ascending
  std::vector<int64_t> assigned_;
  DataPool before_;
};

}  // namespace pst
