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

}  // namespace
}  // namespace pst
