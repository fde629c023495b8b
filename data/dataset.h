// Datasets as the training loop sees them: a split is a list of examples,
// each a source sequence (empty for language models), a decoder input and
// its targets. BatchIterator walks a split in a seeded per-epoch order.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/batch.h"

namespace pst {

struct Example {
  std::vector<int32_t> src;
  std::vector<int32_t> tgt_in;
  std::vector<int32_t> tgt_out;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual Example get(int64_t i) const = 0;
  // Key for length bucketing (examples with close keys are batched together).
  virtual int64_t length_key(int64_t i) const = 0;
  // Language models: the bytes of text example i's targets stand for (bits
  // per byte divide by them); 0 for other data.
  virtual int64_t target_bytes(int64_t) const { return 0; }
};

// Pads examples into a rectangular batch (kPadId inputs, kIgnoreTarget targets).
Batch collate(const Dataset& data, const std::vector<int64_t>& ids);

// Where an iterator stands: epoch and the index of the next batch in that
// epoch's order (counted over all workers' batches).
struct DataPosition {
  int64_t epoch = 0;
  int64_t batch = 0;
};

// Yields batches of a split, forever, epoch after epoch. Each epoch's order is
// a pure function of (seed, epoch): examples are shuffled, grouped in windows
// of 64 batches, sorted by length inside a window (bucketing, so little
// padding), cut into batches, and the batches shuffled. Worker w of W takes
// batches w, w+W, w+2W, ... of that order; a final partial batch is kept.
class BatchIterator {
 public:
  BatchIterator(const Dataset* data, int64_t batch_size, uint64_t seed, int64_t worker = 0, int64_t workers = 1,
                bool bucket = true);
  Batch next();
  DataPosition position() const { return pos_; }
  void seek(DataPosition pos);
  // Moves to batch g counted over epochs (batch g mod N of epoch g div N;
  // data/data_cursor.h), so that next() yields it.
  void seek_batch(int64_t g);
  int64_t batches_per_epoch() const { return static_cast<int64_t>(order_.size()); }

 private:
  void build_epoch(int64_t epoch);
  // The rows of the next batch; advances the position.
  const std::vector<int64_t>& take();

  const Dataset* data_;
  int64_t batch_size_;
  uint64_t seed_;
  int64_t worker_, workers_;
  bool bucket_;
  DataPosition pos_;
  int64_t built_epoch_ = -1;
  std::vector<std::vector<int64_t>> order_;
};

// Splits a dataset into consecutive batches without shuffling (evaluation).
std::vector<std::vector<int64_t>> sequential_batches(int64_t n, int64_t batch_size);
// The first n examples in batches of close length (by length_key, longest
// first, equal keys in index order): a batch carries little padding, and
// the first sizes the model's buffers. For evaluation, whose sums do not
// depend on the order.
std::vector<std::vector<int64_t>> length_sorted_batches(const Dataset& data, int64_t n, int64_t batch_size);

}  // namespace pst
