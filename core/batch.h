// A batch of token sequences, padded to rectangles. Produced by data/,
// consumed by the model. Host memory.
#pragma once

#include <cstdint>
#include <vector>

namespace pst {

// Target value of positions that do not count in the loss.
constexpr int32_t kIgnoreTarget = -1;
// Input id used for padding in every vocabulary.
constexpr int32_t kPadId = 0;

struct Batch {
  int64_t B = 0;                     // examples
  int64_t S = 0;                     // source length (encoder input); 0 for a decoder-only model
  int64_t T = 0;                     // decoder length
  std::vector<int32_t> src;          // (B, S), kPadId after src_len[b]
  std::vector<int32_t> src_len;      // (B)
  std::vector<int32_t> tgt_in;       // (B, T) decoder input, kPadId after tgt_len[b]
  std::vector<int32_t> tgt_out;      // (B, T) next-token targets, kIgnoreTarget where padded
  std::vector<int32_t> tgt_len;      // (B)
  std::vector<int64_t> example_ids;  // index of each row's example in its dataset split

  int64_t tokens() const {
    int64_t n = 0;
    for (int32_t t : tgt_out) n += t >= 0 ? 1 : 0;
    return n;
  }
};

}  // namespace pst
