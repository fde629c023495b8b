// bfloat16 rounding against a brute-force oracle: of the two bfloat16
// values around a float32 (its upper half, and the next one away from
// zero), the nearer in exact arithmetic, the even one on a tie; infinity
// past the largest finite value; NaN stays NaN with its sign. Widening is
// exact, and the array versions (threads and SIMD) equal the scalar ones.
// Stochastic rounding: always one of the two bfloat16 values around x (x
// itself where bfloat16 holds it), up for exactly the share of the 2^16
// random values that the dropped bits say (counted over all of them), up
// in a share of many draws within a binomial bound of that, so the mean of
// the rounded values is x; the array version, threaded or not, takes
// element i's bits from the Philox block the scalar rule names, from any
// first element.
#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "core/bf16.h"
#include "core/philox.h"

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

namespace pst {
namespace {

// The two bfloat16 patterns around f (the truncated magnitude, and the
// next one away from zero), with f's sign.
std::pair<uint16_t, uint16_t> neighbours(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const auto down = static_cast<uint16_t>(u >> 16);
  return {down, static_cast<uint16_t>(down + 1)};
}

TEST(Bf16StochasticTest, EveryRandomValueGivesANeighbourAndTheShareUpIsTheDroppedBits) {
  std::mt19937 rng(3);
  std::vector<uint32_t> samples;
  for (int i = 0; i < 300; ++i) samples.push_back(rng() & 0x7f7fffffu);  // finite, positive
  for (uint32_t lo : {0x0000u, 0x0001u, 0x8000u, 0xffffu})
    for (uint32_t hi : {0x0000u, 0x0001u, 0x3f80u, 0x7f7eu}) samples.push_back(hi << 16 | lo);
  for (uint32_t bits : samples)
    for (uint32_t sign : {0u, 0x80000000u}) {
      const float f = std::bit_cast<float>(bits | sign);
      const auto [down, up] = neighbours(f);
      uint32_t ups = 0;
      for (uint32_t r = 0; r <= 0xffffu; ++r) {
        const uint16_t got = to_bf16_stochastic(f, r);
        ASSERT_TRUE(got == down || got == up) << std::hex << bits << " r " << r;
        ups += got == up;
      }
      // Exactly the dropped half's share of the 2^16 values rounds up (away
      // from zero), so the expectation of the rounded value is f.
      ASSERT_EQ(ups, bits & 0xffffu) << std::hex << bits;
      if ((bits & 0xffffu) == 0) {
        ASSERT_EQ(to_bf16_stochastic(f, 0xffffu), to_bf16(f)) << "a bfloat16 value is kept";
      }
    }
}

TEST(Bf16StochasticTest, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  for (uint32_t r : {0u, 1u, 0x8000u, 0xffffu}) {
    EXPECT_EQ(from_bf16(to_bf16_stochastic(inf, r)), inf);
    EXPECT_EQ(from_bf16(to_bf16_stochastic(-inf, r)), -inf);
    EXPECT_TRUE(std::isnan(from_bf16(to_bf16_stochastic(std::numeric_limits<float>::quiet_NaN(), r))));
    // A NaN whose payload is only in the dropped half stays a NaN.
    EXPECT_TRUE(std::isnan(from_bf16(to_bf16_stochastic(std::bit_cast<float>(0x7f800001u), r))));
    EXPECT_EQ(std::bit_cast<uint32_t>(from_bf16(to_bf16_stochastic(-0.0f, r))), 0x80000000u);
  }
  // The largest float lies between bfloat16's largest and infinity.
  EXPECT_TRUE(std::isinf(from_bf16(to_bf16_stochastic(std::numeric_limits<float>::max(), 0xffffu))));
  EXPECT_EQ(to_bf16_stochastic(std::numeric_limits<float>::max(), 0), 0x7f7fu);
}

TEST(Bf16StochasticTest, TheArrayTakesEachElementsBitsFromItsBlockOnAnyThreads) {
  const Philox bits(17, stochastic_rounding_stream(5, 1));
  std::mt19937 rng(13);
  std::normal_distribution<float> normal(0.0f, 0.01f);
  // Large enough for the threaded path; firsts that start mid-word and mid-block.
  for (const auto& [n, first] : {std::pair<int64_t, uint64_t>{(int64_t{1} << 19) + 5, 3}, {9000, 0}, {1, 7}, {17, 8}}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = normal(rng);
    std::vector<uint16_t> got(x.size());
    to_bf16_stochastic(x.data(), got.data(), n, bits, first);
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t e = first + static_cast<uint64_t>(i);
      // The scalar rule, from the block itself.
      const uint32_t r = (bits.block(e / 8).v[(e / 2) % 4] >> (16 * (e % 2))) & 0xffffu;
      ASSERT_EQ(r, stochastic_rounding_bits(bits, e));
      ASSERT_EQ(got[static_cast<size_t>(i)], to_bf16_stochastic(x[static_cast<size_t>(i)], r)) << n << " " << i;
    }
  }
}

TEST(Bf16StochasticTest, TheMeanOfManyRoundingsIsTheValue) {
  // 2^20 copies of each value, rounded with the bits of one stream: the
  // count rounded up is binomial(N, p) with p the dropped bits' share;
  // allow 6 standard deviations. Rounding to nearest instead is off by
  // the whole rounding error, many standard deviations of the mean.
  const int64_t n = int64_t{1} << 20;
  const Philox bits(99, stochastic_rounding_stream(1, 0));
  for (float f : {1.0f + std::ldexp(1.0f, -10), -3.1f, 1e-3f, 0.1f, 7e-39f}) {
    const std::vector<float> x(static_cast<size_t>(n), f);
    std::vector<uint16_t> h(x.size());
    to_bf16_stochastic(x.data(), h.data(), n, bits, 1000);
    const auto [down, up] = neighbours(f);
    const double p = static_cast<double>(std::bit_cast<uint32_t>(f) & 0xffffu) / 65536.0;
    int64_t ups = 0;
    double sum = 0;
    for (uint16_t v : h) {
      ASSERT_TRUE(v == down || v == up);
      ups += v == up;
      sum += static_cast<double>(from_bf16(v));
    }
    const double sd = std::sqrt(static_cast<double>(n) * p * (1 - p));
    EXPECT_LE(std::fabs(static_cast<double>(ups) - static_cast<double>(n) * p), 6 * sd + 1) << f;
    const double ulp = std::fabs(static_cast<double>(from_bf16(up)) - static_cast<double>(from_bf16(down)));
    EXPECT_LE(std::fabs(sum / static_cast<double>(n) - static_cast<double>(f)),
              6 * ulp * sd / static_cast<double>(n) + 1e-300)
        << f;
    if (p > 0.01 && p < 0.99) {
      EXPECT_GT(std::fabs(static_cast<double>(from_bf16(to_bf16(f))) - static_cast<double>(f)),
                6 * ulp * sd / static_cast<double>(n))
          << f << ": the test could not tell rounding to nearest from stochastic rounding";
    }
  }
}

}  // namespace
}  // namespace pst
