// Which server owns which part of the model (docs/design.md, Parameters and shards): every tensor is
// cut into chunks of at most chunk_bytes, and chunks go to servers by a pure
// function of (parameter table, S, chunk_bytes) that balances bytes. A chunk's
// key is (tensor index, chunk index); every process computes the same plan
// from the same config, so no plan travels over the network. It lives in
// comm/ because workers (where to push) and servers (what they own) share it;
// it sees the table as its tensors' sizes (ParamTable::numels()).
//
// Balance: chunks are placed largest first, each on the server with the
// fewest bytes so far (ties: the lowest rank). The most and least loaded
// servers then differ by at most one chunk (at most chunk_bytes).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace pst {

// A contiguous range of one tensor, in floats of the model's flat layout.
struct ChunkRange {
  int64_t tensor = 0;  // index in the parameter table
  int64_t begin = 0;   // offset into the flat buffer
  int64_t length = 0;
};

struct ChunkKey {
  int32_t tensor = 0;
  int32_t chunk = 0;
  friend bool operator==(const ChunkKey&, const ChunkKey&) = default;
};

struct Chunk {
  ChunkKey key;
  int64_t begin = 0;   // offset in the flat parameter buffer, in floats
  int64_t length = 0;  // floats
  int32_t server = 0;  // owner
};

class ShardPlan {
 public:
  // numels: the tensors' sizes in floats, in table order (the flat buffer
  // holds them back to back). Errors: servers < 1, or chunk_bytes not a
  // positive multiple of 4.
  static Result<ShardPlan> make(const std::vector<int64_t>& numels, int servers, int64_t chunk_bytes);

  int servers() const { return servers_; }
  int64_t chunk_bytes() const { return chunk_bytes_; }
  // Every chunk, in (tensor, chunk) order, which is flat-buffer order.
  const std::vector<Chunk>& chunks() const { return chunks_; }
  // The chunk of a key, or null when the key does not exist.
  const Chunk* find(ChunkKey key) const;
  // The ranges server s owns, in flat-buffer order (ShardOptimizer's input).
  std::vector<ChunkRange> owned(int server) const;
  // Bytes of weights server s owns.
  int64_t bytes(int server) const { return bytes_[static_cast<size_t>(server)]; }
  // "name@offset" (offset in floats within the tensor), how messages and
  // logs name a chunk; "(tensor, chunk)" for a key that does not exist.
  std::string describe(ChunkKey key, std::string_view tensor_name) const;

 private:
  int servers_ = 1;
  int64_t chunk_bytes_ = 0;
  std::vector<Chunk> chunks_;
  std::vector<int64_t> first_chunk_;  // per tensor: index of its first chunk in chunks_
  std::vector<int64_t> offsets_;      // per tensor: its offset in the flat buffer
  std::vector<int64_t> bytes_;        // per server
};

}  // namespace pst
