// ASHA's decisions on curves for which the trials to stop are known (tune/asha.h).
#include <random>

#include <gtest/gtest.h>

#include "tune/asha.h"

namespace pst {
namespace {

TEST(AshaTest, RungsAreGeometricBelowTheLastStep) {
  EXPECT_EQ(Asha(100, 3, 2000).rungs(), (std::vector<int64_t>{100, 300, 900}));
  EXPECT_EQ(Asha(100, 2, 800).rungs(), (std::vector<int64_t>{100, 200, 400}));
  EXPECT_TRUE(Asha(1000, 3, 1000).rungs().empty());
  const Asha a(100, 3, 2000);
  EXPECT_EQ(a.passed(-1, 99), std::vector<int>{});
  EXPECT_EQ(a.passed(-1, 100), std::vector<int>{0});
  EXPECT_EQ(a.passed(100, 1000), (std::vector<int>{1, 2}));  // a sparse validation passes two rungs
  EXPECT_EQ(a.passed(300, 500), std::vector<int>{});
}

TEST(AshaTest, TrialsArrivingWorseAndWorseStopOnceTheRungCanJudge) {
  // Trial i's figure is i at every rung: each newcomer is the worst so far.
  // With n figures at a rung, the best floor(n / eta) go on, so trial i
  // (rank i of i + 1) goes on iff i < eta - 1 (too few to judge) or i < floor((i + 1) / eta): never for i >= eta - 1.
  for (int64_t eta : {2, 3, 4}) {
    Asha a(10, eta, 1000);
    for (int64_t i = 0; i < 20; ++i) EXPECT_EQ(a.report(0, i, static_cast<double>(i)), i < eta - 1) << eta << " " << i;
  }
}

TEST(AshaTest, TrialsArrivingBetterAndBetterAllGoOn) {
  Asha a(10, 3, 1000);
  for (int64_t i = 0; i < 30; ++i)
    for (int rung = 0; rung < 3; ++rung) EXPECT_TRUE(a.report(rung, i, -static_cast<double>(i) - 0.1 * rung));
}

TEST(AshaTest, AboutOneInEtaPassesEachRungOnRandomCurves) {
  // Trial quality q ~ U(0, 1), figure at rung k: q + 1 / (k + 1). For a
  // newcomer among n figures i.i.d., P(rank < n / eta) -> 1 / eta.
  std::mt19937 g(17);
  std::uniform_real_distribution<double> u;
  Asha a(10, 3, 100000);
  int at[4] = {0, 0, 0, 0};
  const int trials = 900;
  for (int64_t t = 0; t < trials; ++t) {
    const double q = u(g);
    for (int rung = 0; rung < 3; ++rung) {
      ++at[rung];
      if (!a.report(rung, t, q + 1.0 / (rung + 1))) break;
      if (rung == 2) ++at[3];
    }
  }
  const double pass0 = static_cast<double>(at[1]) / at[0];
  EXPECT_NEAR(pass0, 1.0 / 3, 0.06);
  EXPECT_LT(at[2], at[1]);
  EXPECT_LT(at[3], at[2]);
  // The best trial of all is never stopped: replay it last.
  EXPECT_TRUE(a.report(0, trials, -1.0));
  EXPECT_TRUE(a.report(1, trials, -1.0));
  EXPECT_TRUE(a.report(2, trials, -1.0));
}

TEST(AshaTest, AReplayedReportReplacesTheFirst) {
  Asha a(10, 2, 1000);
  EXPECT_TRUE(a.report(0, 0, 1.0));
  EXPECT_TRUE(a.report(0, 1, 0.5));
  EXPECT_EQ(a.seen(0), 2u);
  EXPECT_TRUE(a.report(0, 0, 0.1));  // trial 0 again: now the best of 2
  EXPECT_EQ(a.seen(0), 2u);
}

}  // namespace
}  // namespace pst
