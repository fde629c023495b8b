#include "data/dataset.h"

#include <algorithm>
#include <numeric>
#include <random>

#include "core/philox.h"
#include "core/status.h"

namespace pst {

Batch collate(const Dataset& data, const std::vector<int64_t>& ids) {
  Batch b;
  b.B = static_cast<int64_t>(ids.size());
  std::vector<Example> ex;
  ex.reserve(ids.size());
  for (int64_t i : ids) {
    ex.push_back(data.get(i));
    b.S = std::max<int64_t>(b.S, static_cast<int64_t>(ex.back().src.size()));
    b.T = std::max<int64_t>(b.T, static_cast<int64_t>(ex.back().tgt_in.size()));
  }
  b.src.assign(static_cast<size_t>(b.B * b.S), kPadId);
  b.tgt_in.assign(static_cast<size_t>(b.B * b.T), kPadId);
  b.tgt_out.assign(static_cast<size_t>(b.B * b.T), kIgnoreTarget);
  for (int64_t r = 0; r < b.B; ++r) {
    const Example& e = ex[static_cast<size_t>(r)];
    std::copy(e.src.begin(), e.src.end(), b.src.begin() + r * b.S);
    std::copy(e.tgt_in.begin(), e.tgt_in.end(), b.tgt_in.begin() + r * b.T);
    std::copy(e.tgt_out.begin(), e.tgt_out.end(), b.tgt_out.begin() + r * b.T);
    b.src_len.push_back(static_cast<int32_t>(e.src.size()));
    b.tgt_len.push_back(static_cast<int32_t>(e.tgt_in.size()));
  }
  b.example_ids = ids;
  return b;
}

BatchIterator::BatchIterator(const Dataset* data, int64_t batch_size, uint64_t seed, int64_t worker, int64_t workers,
                             bool bucket)
    : data_(data), batch_size_(batch_size), seed_(seed), worker_(worker), workers_(workers), bucket_(bucket) {
  PST_CHECK(data_->size() > 0 && batch_size_ > 0 && workers_ > 0 && worker_ >= 0 && worker_ < workers_);
  pos_.batch = worker_;
  build_epoch(0);
}

void BatchIterator::seek(DataPosition pos) {
  pos_ = pos;
  if (built_epoch_ != pos_.epoch) build_epoch(pos_.epoch);
}

void BatchIterator::seek_batch(int64_t g) {
  const int64_t n = batches_per_epoch();  // the same in every epoch
  seek({g / n, g % n});
}

void BatchIterator::build_epoch(int64_t epoch) {
  const int64_t n = data_->size();
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::mt19937_64 rng(mix_stream(seed_, static_cast<uint64_t>(epoch)));
  std::shuffle(idx.begin(), idx.end(), rng);
  order_.clear();
  const int64_t window = bucket_ ? 64 * batch_size_ : batch_size_;
  for (int64_t w0 = 0; w0 < n; w0 += window) {
    const auto first = idx.begin() + w0, last = idx.begin() + std::min(n, w0 + window);
    if (bucket_) {
      std::stable_sort(first, last, [&](int64_t a, int64_t b) { return data_->length_key(a) < data_->length_key(b); });
    }
    for (auto it = first; it < last; it += std::min<int64_t>(batch_size_, last - it))
      order_.emplace_back(it, std::min(last, it + batch_size_));
  }
  std::shuffle(order_.begin(), order_.end(), rng);
  built_epoch_ = epoch;
}

const std::vector<int64_t>& BatchIterator::take() {
  if (built_epoch_ != pos_.epoch) build_epoch(pos_.epoch);
  while (pos_.batch >= static_cast<int64_t>(order_.size())) {
    pos_.batch -= static_cast<int64_t>(order_.size());
    ++pos_.epoch;
    build_epoch(pos_.epoch);
  }
  const std::vector<int64_t>& rows = order_[static_cast<size_t>(pos_.batch)];
  pos_.batch += workers_;
  if (pos_.batch >= static_cast<int64_t>(order_.size())) {
    pos_.batch -= static_cast<int64_t>(order_.size());
    ++pos_.epoch;
  }
  return rows;
}

Batch BatchIterator::next() { return collate(*data_, take()); }

std::vector<std::vector<int64_t>> sequential_batches(int64_t n, int64_t batch_size) {
  std::vector<std::vector<int64_t>> out;
  for (int64_t i = 0; i < n; i += batch_size) {
    std::vector<int64_t> ids;
    for (int64_t j = i; j < std::min(n, i + batch_size); ++j) ids.push_back(j);
    out.push_back(std::move(ids));
  }
  return out;
}

std::vector<std::vector<int64_t>> length_sorted_batches(const Dataset& data, int64_t n, int64_t batch_size) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return data.length_key(a) > data.length_key(b); });
  std::vector<std::vector<int64_t>> out = sequential_batches(n, batch_size);
  for (auto& ids : out)
    for (int64_t& i : ids) i = order[static_cast<size_t>(i)];
  return out;
}

}  // namespace pst
