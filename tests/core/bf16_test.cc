// bfloat16 rounding against a brute-force oracle: of the two bfloat16
// values around a float32 (its upper half, and the next one away from
// zero), the nearer in exact arithmetic, the even one on a tie; infinity
// past the largest finite value; NaN stays NaN with its sign. Widening is
// exact, and the array versions (threads and SIMD) equal the scalar ones.
#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "core/bf16.h"

namespace pst {
namespace {

// The value of a bfloat16 bit pattern of magnitude `bits` (no sign), with
// the pattern past the largest finite one standing for 2^128, the point
// rounding measures overflow against.
double magnitude(uint32_t bits) {
  if (bits >= 0x7f80u) return std::ldexp(1.0, 128);
  return static_cast<double>(std::bit_cast<float>(bits << 16));
}

uint16_t oracle(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t sign = u & 0x80000000u;
  if (std::isnan(f)) return 0;  // checked apart
  if (std::isinf(f)) return static_cast<uint16_t>(u >> 16);
  const uint32_t below = (u & 0x7fffffffu) >> 16;  // truncated magnitude
  const uint32_t above = below + 1;
  const double x = std::fabs(static_cast<double>(f));                   // exact
  const double down = x - magnitude(below), up = magnitude(above) - x;  // exact in double
  uint32_t pick;
  if (down < up) {
    pick = below;
  } else if (up < down) {
    pick = above;
  } else {
    pick = (below & 1u) == 0 ? below : above;
  }
  if (pick > 0x7f80u) pick = 0x7f80u;  // (only reached through 2^128: infinity)
  return static_cast<uint16_t>((sign >> 16) | pick);
}

void expect_rounds_like_oracle(uint32_t bits) {
  const float f = std::bit_cast<float>(bits);
  const uint16_t got = to_bf16(f);
  if (std::isnan(f)) {
    EXPECT_TRUE(std::isnan(from_bf16(got))) << std::hex << bits;
    EXPECT_EQ(got & 0x8000u, (bits >> 16) & 0x8000u) << std::hex << bits;
    return;
  }
  ASSERT_EQ(got, oracle(f)) << std::hex << "float bits 0x" << bits;
}

TEST(Bf16Test, EveryUpperHalfWithTheLowerHalvesThatDecideRounding) {
  // Exhaustive over sign, exponent and kept mantissa; the dropped half
  // below, at, just above and just below the midpoint, and its extremes.
  for (uint32_t hi = 0; hi <= 0xffffu; ++hi)
    for (uint32_t lo : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) expect_rounds_like_oracle(hi << 16 | lo);
}

TEST(Bf16Test, RandomFloats) {
  std::mt19937 rng(7);
  for (int i = 0; i < 2000000; ++i) expect_rounds_like_oracle(static_cast<uint32_t>(rng()));
}

TEST(Bf16Test, KnownValues) {
  EXPECT_EQ(from_bf16(to_bf16(1.0f)), 1.0f);
  EXPECT_EQ(from_bf16(to_bf16(-2.5f)), -2.5f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: the even one, 1.
  EXPECT_EQ(from_bf16(to_bf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: the even one.
  EXPECT_EQ(from_bf16(to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_EQ(from_bf16(to_bf16(1.0f + 3 * std::ldexp(1.0f, -9))), 1.0f + std::ldexp(1.0f, -7));  // above half
  // The largest float rounds past bfloat16's largest finite value.
  EXPECT_TRUE(std::isinf(from_bf16(to_bf16(std::numeric_limits<float>::max()))));
  EXPECT_EQ(from_bf16(to_bf16(std::numeric_limits<float>::denorm_min())), 0.0f);
  EXPECT_TRUE(std::isnan(from_bf16(to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  // A signalling NaN whose payload sits in the dropped half stays a NaN.
  EXPECT_TRUE(std::isnan(from_bf16(to_bf16(std::bit_cast<float>(0x7f800001u)))));
}

TEST(Bf16Test, WideningIsExactAndRoundTrips) {
  for (uint32_t h = 0; h <= 0xffffu; ++h) {
    const float f = from_bf16(static_cast<uint16_t>(h));
    EXPECT_EQ(std::bit_cast<uint32_t>(f), h << 16);
    if (!std::isnan(f)) {
      EXPECT_EQ(to_bf16(f), h);
    }
  }
}

TEST(Bf16Test, ArraysEqualTheScalarFunctions) {
  // Large enough for the threaded path.
  const int64_t n = (int64_t{1} << 19) + 3;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = normal(rng);
  std::vector<uint16_t> h(x.size());
  to_bf16(x.data(), h.data(), n);
  std::vector<float> back(x.size()), copied(x.size());
  from_bf16(h.data(), back.data(), n);
  to_fp32(WireValues{h.data(), true}, copied.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    const size_t k = static_cast<size_t>(i);
    ASSERT_EQ(h[k], to_bf16(x[k])) << i;
    ASSERT_EQ(back[k], from_bf16(h[k])) << i;
    // Rounding to nearest: within half a bfloat16 ulp (2^-8 relative).
    ASSERT_LE(std::fabs(back[k] - x[k]), std::ldexp(std::fabs(x[k]), -8)) << i;
  }
  EXPECT_EQ(copied, back);
  to_fp32(WireValues{x.data(), false}, copied.data(), n);
  EXPECT_EQ(copied, x);
}

}  // namespace
}  // namespace pst
