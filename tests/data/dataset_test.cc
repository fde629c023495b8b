#include "data/dataset.h"

#include <algorithm>
#include <set>

#include <gtest/gtest.h>

namespace pst {
namespace {

// Example i: source of length 1 + i % 7, target of length 1 + i % 5.
class ToyDataset final : public Dataset {
 public:
  explicit ToyDataset(int64_t n) : n_(n) {}
  int64_t size() const override { return n_; }
  Example get(int64_t i) const override {
    Example e;
    e.src.assign(static_cast<size_t>(1 + i % 7), static_cast<int32_t>(10 + i % 50));
    e.tgt_in.assign(static_cast<size_t>(1 + i % 5), 5);
    e.tgt_out.assign(static_cast<size_t>(1 + i % 5), static_cast<int32_t>(i % 100));
    return e;
  }
  int64_t length_key(int64_t i) const override { return i % 7; }

 private:
  int64_t n_;
};

TEST(DatasetTest, CollatePadsAndMasks) {
  ToyDataset d(10);
  const Batch b = collate(d, {3, 6});
  EXPECT_EQ(b.B, 2);
  EXPECT_EQ(b.S, 7);  // 1 + 6 % 7
  EXPECT_EQ(b.T, 4);  // 1 + 3 % 5
  EXPECT_EQ(b.src_len, (std::vector<int32_t>{4, 7}));
  EXPECT_EQ(b.tgt_len, (std::vector<int32_t>{4, 2}));
  EXPECT_EQ(b.src[4], kPadId);
  EXPECT_EQ(b.tgt_out[b.T + 2], kIgnoreTarget);
  EXPECT_EQ(b.tokens(), 4 + 2);
}

TEST(DatasetTest, EveryExampleOncePerEpochDeterministically) {
  ToyDataset d(1000);
  BatchIterator a(&d, 32, 9), b(&d, 32, 9), c(&d, 32, 10);
  std::multiset<int64_t> seen;
  const int64_t per_epoch = a.batches_per_epoch();
  EXPECT_EQ(per_epoch, 1000 / 32 + 1);
  bool differs = false;
  for (int64_t i = 0; i < per_epoch; ++i) {
    const Batch x = a.next(), y = b.next(), z = c.next();
    EXPECT_EQ(x.example_ids, y.example_ids);
    differs |= x.example_ids != z.example_ids;
    seen.insert(x.example_ids.begin(), x.example_ids.end());
  }
  EXPECT_TRUE(differs) << "the seed must change the order";
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 1000u);
  EXPECT_EQ(a.position().epoch, 1);
  EXPECT_EQ(a.position().batch, 0);
  // The next epoch has another order.
  BatchIterator fresh(&d, 32, 9);
  EXPECT_NE(a.next().example_ids, fresh.next().example_ids);
}

TEST(DatasetTest, WorkersPartitionTheEpoch) {
  ToyDataset d(500);
  const int64_t W = 3;
  std::vector<int64_t> all;
  BatchIterator single(&d, 16, 4);
  std::vector<std::vector<int64_t>> order;
  for (int64_t i = 0; i < single.batches_per_epoch(); ++i) order.push_back(single.next().example_ids);
  for (int64_t w = 0; w < W; ++w) {
    BatchIterator it(&d, 16, 4, w, W);
    for (int64_t i = w; i < static_cast<int64_t>(order.size()); i += W) EXPECT_EQ(it.next().example_ids, order[i]);
  }
}

TEST(DatasetTest, BucketingReducesPadding) {
  ToyDataset d(4096);
  auto padding = [&](bool bucket) {
    BatchIterator it(&d, 64, 1, 0, 1, bucket);
    int64_t pad = 0;
    for (int64_t i = 0; i < it.batches_per_epoch(); ++i) {
      const Batch b = it.next();
      for (int32_t l : b.src_len) pad += b.S - l;
    }
    return pad;
  };
  EXPECT_LT(padding(true) * 5, padding(false));
}

TEST(DatasetTest, SeekResumesTheSameStream) {
  ToyDataset d(300);
  BatchIterator a(&d, 8, 2);
  for (int i = 0; i < 50; ++i) a.next();
  const DataPosition pos = a.position();
  const Batch expect = a.next();
  BatchIterator b(&d, 8, 2);
  b.seek(pos);
  EXPECT_EQ(b.next().example_ids, expect.example_ids);
}

}  // namespace
}  // namespace pst
