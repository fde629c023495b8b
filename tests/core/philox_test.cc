#include "core/philox.h"

#include <cmath>
#include <cstdio>
#include <vector>

#include <gtest/gtest.h>

namespace pst {
namespace {

// Known-answer vectors of Philox4x32-10 published with Random123
// (Salmon et al. 2011, kat_vectors).
TEST(PhiloxTest, KnownAnswerVectors) {
  struct Kat {
    uint32_t ctr[4], key[2], out[4];
  };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& k : kats) {
    const PhiloxOut o = philox4x32_10(k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3], k.key[0], k.key[1]);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(o.v[i], k.out[i]) << "word " << i;
  }
}

TEST(PhiloxTest, UniformAndNormalMoments) {
  const Philox rng(123, fnv1a64("layer.weight"));
  constexpr int kN = 200000;
  double su = 0, su2 = 0, sn = 0, sn2 = 0;
  for (int i = 0; i < kN; ++i) {
    const double u = rng.uniform(static_cast<uint64_t>(i));
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    su += u;
    su2 += u * u;
    const double n = rng.normal(static_cast<uint64_t>(i));
    sn += n;
    sn2 += n * n;
  }
  // Standard errors: 0.29/sqrt(N) ~ 6.5e-4 for the uniform mean, 1/sqrt(N) ~ 2.2e-3 for the normal.
  EXPECT_NEAR(su / kN, 0.5, 4e-3);
  EXPECT_NEAR(su2 / kN - (su / kN) * (su / kN), 1.0 / 12, 2e-3);
  EXPECT_NEAR(sn / kN, 0.0, 1.2e-2);
  EXPECT_NEAR(sn2 / kN, 1.0, 1.5e-2);
}

// blocks() draws 64 blocks at a time in AVX-512 registers where the CPU
// has them (the machines CI runs on do), 32 in AVX2 registers where it has
// only those, then groups of 16 (8) lanes for the rest, or loops over
// block(). Every way this CPU has (AVX2 too on an AVX-512 CPU) must give
// the scalar block() of the same index, whatever the count (whole groups,
// a part of one, or several), at indices whose low word carries into the
// high one and past 2^64, and write nothing past the last block.
TEST(PhiloxTest, BlocksAreTheScalarBlocks) {
  const uint64_t firsts[] = {0, 1, 13, 0xFFFFFFF0ull, 0xFFFFFFFFull, 0x123456789ABCull, ~uint64_t{0} - 40};
  const int64_t counts[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 127, 257};
  const uint64_t keys[] = {0, 7, 0xDEADBEEFCAFEF00Dull}, streams[] = {0, mix_stream(3, 4)};
  int ways = 0;
  Philox::Lanes widest = Philox::Lanes::kPortable;
  for (Philox::Lanes lanes : Philox::kLanes) {
    if (!Philox::has(lanes)) continue;
    ++ways;
    widest = lanes;
    for (uint64_t key : keys)
      for (uint64_t stream : streams) {
        const Philox rng(key, stream);
        for (uint64_t first : firsts)
          for (int64_t count : counts) {
            std::vector<uint32_t> out(static_cast<size_t>(4 * count) + 4, 0xA5A5A5A5u);
            rng.blocks(lanes, first, count, out.data());
            for (int64_t j = 0; j < count; ++j) {
              const PhiloxOut b = rng.block(first + static_cast<uint64_t>(j));
              for (int w = 0; w < 4; ++w)
                ASSERT_EQ(out[static_cast<size_t>(4 * j + w)], b.v[w])
                    << Philox::name(lanes) << ": key " << key << " stream " << stream << " block " << first << " + "
                    << j << " word " << w;
            }
            // Nothing past the last block is written.
            for (size_t i = static_cast<size_t>(4 * count); i < out.size(); ++i)
              EXPECT_EQ(out[i], 0xA5A5A5A5u) << Philox::name(lanes) << " count " << count;
          }
      }
  }
  // blocks() takes the widest way this CPU has.
  EXPECT_EQ(Philox::best_lanes(), widest);
  std::printf("Philox ways held to block() on this CPU: %d (blocks() takes %s)\n", ways, Philox::name(widest));
}

TEST(PhiloxTest, StreamsAreIndependentOfOrder) {
  const Philox a(5, 9), b(5, 10);
  EXPECT_EQ(a.uniform(77), Philox(5, 9).uniform(77));
  EXPECT_NE(a.uniform(77), b.uniform(77));
  EXPECT_NE(fnv1a64("a.weight"), fnv1a64("b.weight"));
}

}  // namespace
}  // namespace pst
