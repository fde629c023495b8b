// The shard plan: chunks tile the flat buffer exactly, every chunk has one
// owner, the load is balanced (greedy placement: the most and least loaded
// servers differ by at most one chunk; against a brute-force optimum, within
// Graham's 4/3 bound), the plan is a pure function of its inputs, and bad
// arguments are errors that say what is allowed.
#include "comm/shard_plan.h"

#include <algorithm>
#include <functional>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "core/config.h"
#include "model/param_table.h"

namespace pst {
namespace {

ParamTable g2p_small_table() {
  ModelConfig m;  // the defaults are g2p-small's shape
  return build_param_table(m, 32, 44);
}

TEST(ShardPlanTest, ChunksTileTheBufferAndEachHasOneOwner) {
  const ParamTable table = g2p_small_table();
  for (int servers : {1, 2, 3, 5}) {
    for (int64_t chunk_bytes : {int64_t{4096}, int64_t{65536}, int64_t{4} << 20}) {
      auto plan = ShardPlan::make(table.numels(), servers, chunk_bytes);
      ASSERT_TRUE(plan.ok()) << plan.status().to_string();
      int64_t next = 0, total_bytes = 0;
      int32_t tensor = -1, index = 0;
      for (const Chunk& c : plan->chunks()) {
        EXPECT_EQ(c.begin, next) << "chunks must be contiguous in flat order";
        EXPECT_GT(c.length, 0);
        EXPECT_LE(c.length * 4, chunk_bytes);
        const ParamSpec& p = table[c.key.tensor];
        EXPECT_GE(c.begin, p.offset);
        EXPECT_LE(c.begin + c.length, p.offset + p.numel) << "a chunk never spans two tensors";
        if (c.key.tensor != tensor) {
          EXPECT_EQ(c.key.tensor, tensor + 1);
          tensor = c.key.tensor;
          index = 0;
        }
        EXPECT_EQ(c.key.chunk, index++);
        EXPECT_GE(c.server, 0);
        EXPECT_LT(c.server, servers);
        EXPECT_EQ(plan->find(c.key), &c);
        next = c.begin + c.length;
      }
      EXPECT_EQ(next, table.total_numel());
      EXPECT_EQ(tensor + 1, table.size());
      // owned() partitions the chunks.
      int64_t covered = 0;
      for (int s = 0; s < servers; ++s) {
        int64_t bytes = 0;
        for (const ChunkRange& r : plan->owned(s)) bytes += r.length * 4;
        EXPECT_EQ(bytes, plan->bytes(s));
        covered += bytes;
        total_bytes += plan->bytes(s);
      }
      EXPECT_EQ(covered, table.total_numel() * 4);
      EXPECT_EQ(total_bytes, table.total_numel() * 4);
    }
  }
}

TEST(ShardPlanTest, LoadIsBalancedWithinOneChunk) {
  const ParamTable table = g2p_small_table();
  for (int servers : {2, 3, 4, 7}) {
    for (int64_t chunk_bytes : {int64_t{16384}, int64_t{262144}}) {
      auto plan = ShardPlan::make(table.numels(), servers, chunk_bytes);
      ASSERT_TRUE(plan.ok());
      int64_t lo = plan->bytes(0), hi = plan->bytes(0), largest = 0;
      for (int s = 0; s < servers; ++s) {
        lo = std::min(lo, plan->bytes(s));
        hi = std::max(hi, plan->bytes(s));
      }
      for (const Chunk& c : plan->chunks()) largest = std::max(largest, c.length * 4);
      EXPECT_LE(hi - lo, largest) << servers << " servers, chunks of " << chunk_bytes;
    }
  }
}

// A table small enough to try every assignment: the greedy plan's largest
// load is within Graham's bound (4/3 - 1/(3S)) of the best possible one.
TEST(ShardPlanTest, WithinGrahamsBoundOfTheBruteForceOptimum) {
  ParamTable table;
  for (int64_t n : {700, 300, 300, 250, 90, 64, 64, 33, 20, 7}) {
    ParamSpec p;
    p.name = fmt::format("t{}", table.size());
    p.shape = {n};
    table.add(p);
  }
  for (int servers : {2, 3}) {
    auto plan = ShardPlan::make(table.numels(), servers, 1 << 20);  // one chunk per tensor
    ASSERT_TRUE(plan.ok());
    int64_t greedy = 0;
    for (int s = 0; s < servers; ++s) greedy = std::max(greedy, plan->bytes(s));
    const auto& chunks = plan->chunks();
    int64_t best = INT64_MAX;
    std::vector<int64_t> load(static_cast<size_t>(servers), 0);
    std::function<void(size_t)> search = [&](size_t i) {
      if (i == chunks.size()) {
        best = std::min(best, *std::max_element(load.begin(), load.end()));
        return;
      }
      for (int s = 0; s < servers; ++s) {
        load[static_cast<size_t>(s)] += chunks[i].length * 4;
        search(i + 1);
        load[static_cast<size_t>(s)] -= chunks[i].length * 4;
      }
    };
    search(0);
    EXPECT_LE(static_cast<double>(greedy), (4.0 / 3.0 - 1.0 / (3.0 * servers)) * static_cast<double>(best));
    EXPECT_GE(greedy, best);
  }
}

TEST(ShardPlanTest, PureFunctionOfItsInputs) {
  const ParamTable table = g2p_small_table();
  auto a = ShardPlan::make(table.numels(), 3, 32768), b = ShardPlan::make(table.numels(), 3, 32768);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->chunks().size(), b->chunks().size());
  for (size_t i = 0; i < a->chunks().size(); ++i) {
    EXPECT_EQ(a->chunks()[i].key, b->chunks()[i].key);
    EXPECT_EQ(a->chunks()[i].server, b->chunks()[i].server);
  }
}

TEST(ShardPlanTest, KeysNamesAndErrors) {
  const ParamTable table = g2p_small_table();
  auto plan = ShardPlan::make(table.numels(), 2, 4096);
  ASSERT_TRUE(plan.ok());
  const int64_t t = table.index_of("decoder.layers.0.linear1.weight");
  ASSERT_GE(t, 0);
  EXPECT_EQ(plan->describe({static_cast<int32_t>(t), 2}, table[t].name), "decoder.layers.0.linear1.weight@2048");
  EXPECT_EQ(plan->describe({0, 100000}, "x"), "(0, 100000)");
  EXPECT_EQ(plan->find({static_cast<int32_t>(table.size()), 0}), nullptr);
  EXPECT_EQ(plan->find({0, 100000}), nullptr);
  EXPECT_EQ(plan->find({-1, 0}), nullptr);
  auto no_servers = ShardPlan::make(table.numels(), 0, 4096);
  ASSERT_FALSE(no_servers.ok());
  EXPECT_NE(no_servers.status().message().find("at least 1"), std::string::npos);
  EXPECT_FALSE(ShardPlan::make({5, -1}, 2, 4096).ok());
  auto odd = ShardPlan::make(table.numels(), 2, 6);
  ASSERT_FALSE(odd.ok());
  EXPECT_NE(odd.status().message().find("multiple of 4"), std::string::npos);
}

}  // namespace
}  // namespace pst
