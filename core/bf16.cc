#include "core/bf16.h"

#include <algorithm>
#include <bit>
#include <vector>

#include "core/parallel.h"

namespace pst {

void to_bf16(const float* in, uint16_t* out, int64_t n) {
  elementwise(n, int64_t{1} << 18, [&](int64_t i) { out[i] = to_bf16(in[i]); });
}

void to_bf16_stochastic(const float* in, uint16_t* out, int64_t n, const Philox& bits, uint64_t first) {
  // Pieces of 8,192 elements: the blocks of each are drawn at once (the
  // vectorised draws), then added in a loop that vectorises too. On a
  // little-endian CPU the 16-bit halves of the words, low half first, are
  // the 16-bit values of the same bytes in order: element first + i takes
  // value first + i - 8 * first_block of them.
  static_assert(std::endian::native == std::endian::little);
  using Halves = uint16_t __attribute__((may_alias));
  constexpr int64_t kPiece = 8192;
  const int64_t pieces = (n + kPiece - 1) / kPiece;
  auto piece = [&](int64_t p) {
    thread_local std::vector<uint32_t> words;
    const int64_t a = p * kPiece, b = std::min(n, a + kPiece);
    const uint64_t first_block = (first + static_cast<uint64_t>(a)) / 8;
    const uint64_t end_block = (first + static_cast<uint64_t>(b) + 7) / 8;
    words.resize(4 * (end_block - first_block));
    bits.blocks(first_block, static_cast<int64_t>(end_block - first_block), words.data());
    const Halves* r =
        reinterpret_cast<const Halves*>(words.data()) + (first + static_cast<uint64_t>(a) - 8 * first_block);
    const float* x = in + a;
    uint16_t* y = out + a;
#pragma omp simd
    for (int64_t i = 0; i < b - a; ++i) y[i] = to_bf16_stochastic(x[i], r[i]);
  };
  if (n > (int64_t{1} << 18)) {
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < pieces; ++p) piece(p);
  } else {
    for (int64_t p = 0; p < pieces; ++p) piece(p);
  }
}

void from_bf16(const uint16_t* in, float* out, int64_t n) {
  elementwise(n, int64_t{1} << 18, [&](int64_t i) { out[i] = from_bf16(in[i]); });
}

void to_fp32(WireValues in, float* out, int64_t n) {
  if (in.bf16) {
    from_bf16(static_cast<const uint16_t*>(in.data), out, n);
  } else {
    std::copy_n(static_cast<const float*>(in.data), n, out);
  }
}

}  // namespace pst
