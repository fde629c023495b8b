#include "data/dataset.h"

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "data/data_cursor.h"

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

// Evaluation's batches: the first n examples once each, longest first by
// length_key, equal keys in index order, in batches of batch_size but the last.
TEST(DatasetTest, LengthSortedBatchesTakeEachExampleOnceLongestFirst) {
  ToyDataset d(100);
  const auto batches = length_sorted_batches(d, 60, 16);
  ASSERT_EQ(batches.size(), 4u);
  std::vector<int64_t> order;
  for (const auto& b : batches) {
    EXPECT_EQ(b.size(), &b == &batches.back() ? 12u : 16u);
    order.insert(order.end(), b.begin(), b.end());
  }
  // Brute force: the stable descending sort of 0..59 by i % 7.
  std::vector<int64_t> want;
  for (int64_t key = 6; key >= 0; --key)
    for (int64_t i = 0; i < 60; ++i)
      if (i % 7 == key) want.push_back(i);
  EXPECT_EQ(order, want);
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

// Batch g counted over epochs is what worker g mod W of W reaches on its
// own walk at step g div W, across epoch boundaries (the cursor numbers
// batches this way).
TEST(DatasetTest, SeekBatchMatchesTheWorkersWalk) {
  ToyDataset d(100);  // 13 batches of 8 per epoch
  const int64_t workers = 3;
  for (int64_t w = 0; w < workers; ++w) {
    BatchIterator walk(&d, 8, 4, w, workers);
    BatchIterator seek(&d, 8, 4);
    for (int64_t step = 0; step < 30; ++step) {
      seek.seek_batch(step * workers + w);
      EXPECT_EQ(seek.next().example_ids, walk.next().example_ids) << "worker " << w << " step " << step;
    }
  }
}

// With every worker in every step, worker w trains on batch v*W + w at step v.
TEST(DataCursorTest, AFixedMembershipWalksLikeTheWorkers) {
  DataCursor c(3, DataPool{});
  c.assign_all();
  for (int64_t v = 0; v < 20; ++v) {
    for (int w = 0; w < 3; ++w) EXPECT_EQ(c.batch(w), v * 3 + w);
    EXPECT_EQ(c.pool().next, v * 3);
    EXPECT_TRUE(c.pool().holes.empty());
    c.applied({1, 1, 1});
    c.assign({1, 1, 1});
  }
}

// Random membership sequences, checked against brute force: workers leave
// for good at random steps, a worker leaving mid-step does not count in that
// step, and the next step goes to those that counted. At every step the
// batches trained on so far and the pool's holes are exactly 0..next-1,
// none twice, and every member has a batch; a cursor rebuilt from the pool
// (a resumed job) hands out the same batches.
TEST(DataCursorTest, NoBatchIsSkippedOrTrainedTwiceWhateverTheMembership) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int workers = 1 + static_cast<int>(rng() % 6);
    DataCursor c(workers, DataPool{});
    std::vector<uint8_t> members(static_cast<size_t>(workers), 1);
    c.assign(members);
    std::vector<int64_t> trained;
    for (int step = 0; step < 60; ++step) {
      // The pool before this step's assignment, and the trained batches,
      // partition 0..next-1.
      std::vector<int64_t> seen = trained;
      seen.insert(seen.end(), c.pool().holes.begin(), c.pool().holes.end());
      std::sort(seen.begin(), seen.end());
      ASSERT_EQ(static_cast<int64_t>(seen.size()), c.pool().next) << "trial " << trial << " step " << step;
      for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], static_cast<int64_t>(i));
      // A resumed job assigns the same from the pool.
      DataCursor resumed(workers, c.pool());
      resumed.assign(members);
      EXPECT_EQ(resumed.batches(), c.batches());
      for (int w = 0; w < workers; ++w) EXPECT_EQ(c.batch(w) >= 0, members[static_cast<size_t>(w)] != 0);
      // Who counts: every member, but now and then one leaves (for good)
      // before its push counts.
      std::vector<uint8_t> counted = members;
      int left = 0;
      for (uint8_t m : members) left += m;
      if (left > 1 && rng() % 4 == 0) {
        int victim = static_cast<int>(rng() % static_cast<unsigned>(workers));
        while (!members[static_cast<size_t>(victim)]) victim = (victim + 1) % workers;
        counted[static_cast<size_t>(victim)] = 0;
      }
      for (int w = 0; w < workers; ++w)
        if (counted[static_cast<size_t>(w)]) trained.push_back(c.batch(w));
      c.applied(counted);
      members = counted;
      c.assign(members);
    }
  }
}

}  // namespace
}  // namespace pst
