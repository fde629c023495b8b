#include "core/fma_peak.h"

#include <cmath>

#include <gtest/gtest.h>

namespace pst {
namespace {

// Every kernel the CPU runs computes the recurrence it claims, lane by lane
// and iteration by iteration, so the operations the peak counts were done.
// Oracles: x_n = n for x <- x + 1 from 0, and x_n = 2 - 2^(1 - n) for
// x <- x / 2 + 1 from 0; both exact in float32 for these n (each fused
// multiply-add rounds once, to a representable value).
TEST(FmaPeakTest, EveryKernelRunsTheRecurrenceItCounts) {
  for (FmaIsa isa : fma_isas()) {
    SCOPED_TRACE(to_string(isa));
    const double vectors = static_cast<double>(kFmaChains) * fma_lanes(isa);
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{1} << 20}) {
      EXPECT_EQ(fma_kernel(isa, n, 1.0f, 1.0f, 0.0f), vectors * static_cast<double>(n)) << "n = " << n;
    }
    for (int64_t n : {int64_t{1}, int64_t{2}, int64_t{10}, int64_t{24}}) {
      const double x = 2.0 - std::ldexp(1.0, static_cast<int>(1 - n));
      EXPECT_EQ(fma_kernel(isa, n, 0.5f, 1.0f, 0.0f), vectors * x) << "n = " << n;
    }
    // One rounding, not two: (1 + 2^-12)^2 - 1 - 2^-11 = 2^-24, which a
    // separate product would round away (1 + 2^-11 + 2^-24 is not a float).
    const float e = std::ldexp(1.0f, -12);
    const float expect = std::ldexp(1.0f, -24);
    EXPECT_EQ(fma_kernel(isa, 1, 1.0f + e, -(1.0f + 2 * e), 1.0f + e), vectors * expect);
  }
}

TEST(FmaPeakTest, ThePortableKernelAndTheCpusOwnAreListed) {
  const std::vector<FmaIsa> isas = fma_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), FmaIsa::kPortable);
  EXPECT_EQ(fma_lanes(FmaIsa::kAvx512), 16);
  EXPECT_EQ(fma_lanes(FmaIsa::kAvx2), 8);
#if defined(__x86_64__)
  EXPECT_EQ(has_fma_isa(FmaIsa::kAvx512), static_cast<bool>(__builtin_cpu_supports("avx512f")));
#endif
}

// The measurement's own bookkeeping (not its speed: tests do not time): it
// returns a positive figure from one of the listed kernels, for one thread
// and for several.
TEST(FmaPeakTest, MeasurementNamesAKernelTheCpuRuns) {
  for (int threads : {1, 3}) {
    const FmaPeak p = measure_fma_peak(threads, 0.01, 1);
    EXPECT_GT(p.gflops, 0.0);
    EXPECT_TRUE(has_fma_isa(p.isa));
  }
}

// The bf16 dot kernel adds two products of a (rounded to bf16) a round to
// every lane of kFmaChains vectors of 16. Oracles: counting (a = 0.5 adds 1
// a round, exact below 2^24), a value bf16 cannot hold (1 + 2^-10 rounds to
// 1, so 2 a round), and a tie (1 + 3 * 2^-8 lies halfway between 1 + 2^-7
// and 1 + 2^-6, the two nearest bf16 values: ties to even give 1 + 2^-6,
// where cutting the bits off would give 1 + 2^-7).
TEST(FmaPeakTest, TheBf16DotKernelRunsTheRecurrenceItCounts) {
  const double vectors = static_cast<double>(kFmaChains) * 16;
  for (bool vector : {true, false}) {  // (the AVX512_BF16 kernel where the CPU has it, and the plain C++)
    SCOPED_TRACE(vector ? "vector" : "plain");
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{1} << 20})
      EXPECT_EQ(bf16_dot_kernel(n, 0.5f, 0.0f, vector), vectors * static_cast<double>(n)) << "n = " << n;
    EXPECT_EQ(bf16_dot_kernel(100, 1.0f + std::ldexp(1.0f, -10), 3.0f, vector), vectors * (3.0 + 2.0 * 100));
    EXPECT_EQ(bf16_dot_kernel(1, 1.0f + 3 * std::ldexp(1.0f, -8), 0.0f, vector),
              vectors * 2.0 * (1.0 + std::ldexp(1.0, -6)));
  }
#if defined(__x86_64__)
  EXPECT_EQ(has_bf16_dot(),
            __builtin_cpu_supports("avx512f") && static_cast<bool>(__builtin_cpu_supports("avx512bf16")));
#endif
}

TEST(FmaPeakTest, Bf16DotMeasurementIsZeroOnlyWithoutTheInstruction) {
  const double gflops = measure_bf16_dot_peak(2, 0.01, 1);
  if (has_bf16_dot())
    EXPECT_GT(gflops, 0.0);
  else
    EXPECT_EQ(gflops, 0.0);
}

// The note's verdict against the ratio of the two peaks.
TEST(FmaPeakTest, TheBf16NoteSaysWhenTheProductsCannotWin) {
  bool slower = false;
  std::string note = bf16_products_note(86, 175, &slower);
  EXPECT_TRUE(slower);
  EXPECT_NE(note.find("measured 86 GFLOP/s a core, its float32 multiply-adds 175"), std::string::npos) << note;
  EXPECT_NE(note.find("train.matmul = \"fp32\" is likely faster"), std::string::npos) << note;
  note = bf16_products_note(232, 116, &slower);
  EXPECT_FALSE(slower);
  EXPECT_NE(note.find("(2.00x)"), std::string::npos) << note;
  bf16_products_note(0, 116, &slower);  // no AVX512_BF16: nothing to gain
  EXPECT_TRUE(slower);
}

}  // namespace
}  // namespace pst
