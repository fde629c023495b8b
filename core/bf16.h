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
// Stochastic rounding (cluster.wire_rounding = stochastic) rounds up or down
// to the two bfloat16 values around x, up with probability (x - down) /
// (up - down), so that the expectation of the result is x: 16 random bits
// are added to the 16 bits that bfloat16 drops, and the sum is cut. Values
// that bfloat16 holds exactly are kept; NaN stays a quiet NaN; infinity
// stays infinity; a finite value beyond bfloat16's largest may round to
// infinity.
//
// Thread safety: pure functions.
#pragma once

#include <bit>
#include <cstdint>

#include "core/philox.h"

namespace pst {

inline uint16_t to_bf16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // NaN: keep it quiet
  // Adding 0x7fff carries into bit 16 exactly when the dropped half is more
  // than half an ulp; the kept lowest bit adds the one more a tie needs to
  // carry when that bit is odd (ties to even).
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// x rounded up or down by the random bits r16 (in [0, 65535]).
inline uint16_t to_bf16_stochastic(float f, uint32_t r16) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // NaN: keep it quiet
  // The sum carries into bit 16 (rounds up) for as many of the 65,536
  // values of r16 as the dropped 16 bits count.
  return static_cast<uint16_t>((u + r16) >> 16);
}

// The random bits of element i of a stochastically rounded array: the low
// (i even) or high (i odd) half of word (i / 2) % 4 of `bits`' block i / 8.
inline uint32_t stochastic_rounding_bits(const Philox& bits, uint64_t i) {
  return (bits.block(i / 8).v[(i / 2) % 4] >> (16 * (i % 2))) & 0xffffu;
}

// The stream of the bits with which worker `worker` rounds its gradient of
// step `step` (the key is the job's seed, train.seed); the elements are
// numbered by their flat offset in the model, so the rounding of a value
// does not depend on the servers, the chunks or the parts it travels in.
inline uint64_t stochastic_rounding_stream(int64_t step, int worker) {
  constexpr uint64_t kWire = 0x7769726520726e64ull;  // "wire rnd" (dropout's streams mix the step first)
  return mix_stream(mix_stream(kWire, static_cast<uint64_t>(step)), static_cast<uint64_t>(worker));
}

inline float from_bf16(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

// n values at once (threads and SIMD for large n).
void to_bf16(const float* in, uint16_t* out, int64_t n);
// Elements first .. first + n - 1 of an array, rounded stochastically with
// `bits` (stochastic_rounding_bits(bits, first + i) for in[i]).
void to_bf16_stochastic(const float* in, uint16_t* out, int64_t n, const Philox& bits, uint64_t first);
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
