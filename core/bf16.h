// bfloat16: the upper 16 bits of an IEEE 754 float32 (its sign, its 8-bit
// exponent, 7 of its 23 mantissa bits). It keeps float32's range, so values
// never overflow or flush where float32 would not; it halves the bytes of
// gradients and weights on the wire (cluster.wire = bf16, docs/design.md,
// Wire precision).
//
// Rounding is to nearest, ties to even, as IEEE 754 rounds and as PyTorch's
// tensor.to(torch.bfloat16) does: a finite float32 that rounds above
// bfloat16's largest value becomes infinity; NaN stays a (quiet) NaN of
// the same sign. Widening back to float32 is exact.
//
// Thread safety: pure functions.
#pragma once

#include <bit>
#include <cstdint>

namespace pst {

inline uint16_t to_bf16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // NaN: keep it quiet
  // Adding 0x7fff carries into bit 16 exactly when the dropped half is more
  // than half an ulp; the kept lowest bit adds the one more a tie needs to
  // carry when that bit is odd (ties to even).
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline float from_bf16(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

// n values at once (threads and SIMD for large n).
void to_bf16(const float* in, uint16_t* out, int64_t n);
void from_bf16(const uint16_t* in, float* out, int64_t n);

// Values that are float32 or bfloat16, in memory someone else owns (a
// received frame).
struct WireValues {
  const void* data = nullptr;
  bool bf16 = false;
};

// Copies n values into out as float32 (bfloat16 ones widened exactly).
void to_fp32(WireValues in, float* out, int64_t n);

}  // namespace pst
