#include "comm/shard_plan.h"

#include <algorithm>
#include <numeric>

#include <fmt/format.h>

namespace pst {

Result<ShardPlan> ShardPlan::make(const std::vector<int64_t>& numels, int servers, int64_t chunk_bytes) {
  if (servers < 1) return invalid_argument("shard plan: {} servers; need at least 1", servers);
  if (chunk_bytes < 4 || chunk_bytes % 4 != 0)
    return invalid_argument("shard plan: chunk_bytes = {}; must be a positive multiple of 4 (one float)", chunk_bytes);
  ShardPlan plan;
  plan.servers_ = servers;
  plan.chunk_bytes_ = chunk_bytes;
  const int64_t chunk_floats = chunk_bytes / 4;
  int64_t offset = 0;
  for (size_t t = 0; t < numels.size(); ++t) {
    if (numels[t] < 0) return invalid_argument("shard plan: tensor {} has {} elements", t, numels[t]);
    plan.first_chunk_.push_back(static_cast<int64_t>(plan.chunks_.size()));
    plan.offsets_.push_back(offset);
    int32_t index = 0;
    for (int64_t off = 0; off < numels[t]; off += chunk_floats, ++index) {
      Chunk c;
      c.key = {static_cast<int32_t>(t), index};
      c.begin = offset + off;
      c.length = std::min(chunk_floats, numels[t] - off);
      plan.chunks_.push_back(c);
    }
    offset += numels[t];
  }
  // Largest first (ties in key order), each onto the least loaded server.
  std::vector<size_t> order(plan.chunks_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return plan.chunks_[a].length > plan.chunks_[b].length; });
  plan.bytes_.assign(static_cast<size_t>(servers), 0);
  for (size_t i : order) {
    const auto least = std::min_element(plan.bytes_.begin(), plan.bytes_.end());
    plan.chunks_[i].server = static_cast<int32_t>(least - plan.bytes_.begin());
    *least += plan.chunks_[i].length * 4;
  }
  return plan;
}

const Chunk* ShardPlan::find(ChunkKey key) const {
  if (key.tensor < 0 || static_cast<size_t>(key.tensor) >= first_chunk_.size() || key.chunk < 0) return nullptr;
  const size_t t = static_cast<size_t>(key.tensor);
  const int64_t begin = first_chunk_[t];
  const int64_t end = t + 1 < first_chunk_.size() ? first_chunk_[t + 1] : static_cast<int64_t>(chunks_.size());
  if (key.chunk >= end - begin) return nullptr;
  return &chunks_[static_cast<size_t>(begin + key.chunk)];
}

std::vector<ChunkRange> ShardPlan::owned(int server) const {
  std::vector<ChunkRange> out;
  for (const Chunk& c : chunks_)
    if (c.server == server) out.push_back({c.key.tensor, c.begin, c.length});
  return out;
}

std::string ShardPlan::describe(ChunkKey key, std::string_view tensor_name) const {
  const Chunk* c = find(key);
  if (!c) return fmt::format("({}, {})", key.tensor, key.chunk);
  return fmt::format("{}@{}", tensor_name, c->begin - offsets_[static_cast<size_t>(key.tensor)]);
}

}  // namespace pst
