// Sampling for generation (worker/evaluate.h): the distribution that
// temperature, top-k and top-p leave, computed here from the formula
// (softmax of logits / T over the k most probable, then the smallest
// nucleus reaching p, renormalised), and draws whose frequencies match it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/philox.h"
#include "worker/evaluate.h"

namespace pst {
namespace {

const std::vector<float> kLogits = {1.0f, 3.0f, -1.0f, 2.5f, 0.5f, 2.5f, -4.0f, 0.0f};

// The formula, written out on its own.
std::vector<double> expected(double T, int64_t k, double p) {
  const size_t V = kLogits.size();
  std::vector<size_t> ids(V);
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [](size_t a, size_t b) { return kLogits[a] > kLogits[b]; });
  if (k > 0) ids.resize(static_cast<size_t>(k));
  std::vector<double> e(ids.size());
  double z = 0;
  for (size_t i = 0; i < ids.size(); ++i) z += e[i] = std::exp(kLogits[ids[i]] / T);
  size_t n = 0;
  double mass = 0;
  while (n < ids.size() && (n == 0 || mass / z < p)) mass += e[n++];
  std::vector<double> out(V, 0.0);
  for (size_t i = 0; i < n; ++i) out[ids[i]] = e[i] / mass;
  return out;
}

TEST(SamplingTest, DistributionFollowsTheFormula) {
  for (double T : {0.5, 1.0, 2.0})
    for (int64_t k : {0, 1, 3, 5})
      for (double p : {1.0, 0.9, 0.5, 0.01}) {
        const auto got = sampling_distribution(kLogits.data(), 8, Sampling{T, k, p});
        const auto want = expected(T, k, p);
        for (size_t i = 0; i < 8; ++i)
          EXPECT_NEAR(got[i], want[i], 1e-12) << "T " << T << " k " << k << " p " << p << " token " << i;
      }
  // Greedy: all on the first of the largest; top-k 1 and a tiny top-p agree.
  EXPECT_EQ(sampling_distribution(kLogits.data(), 8, Sampling{})[1], 1.0);
  for (float u : {0.0f, 0.5f, 0.999f}) {
    EXPECT_EQ(sample_token(kLogits.data(), 8, Sampling{1.0, 1, 1.0}, u), 1);
    EXPECT_EQ(sample_token(kLogits.data(), 8, Sampling{1.0, 0, 1e-6}, u), 1);
    EXPECT_EQ(sample_token(kLogits.data(), 8, Sampling{}, u), 1);
  }
  // Equal logits (tokens 3 and 5) rank by id: top-k 2 keeps 1 and 3.
  const auto tie = sampling_distribution(kLogits.data(), 8, Sampling{1.0, 2, 1.0});
  EXPECT_GT(tie[3], 0);
  EXPECT_EQ(tie[5], 0);
}

// 200,000 draws from the Philox stream land on each token as often as the
// distribution says (within 5 standard deviations), and never outside it.
TEST(SamplingTest, DrawsMatchTheDistribution) {
  const Sampling s{0.8, 4, 0.95, 7, 3};
  const auto want = expected(0.8, 4, 0.95);
  const Philox draws(s.seed, s.stream);
  constexpr int kN = 200000;
  std::vector<int> count(8, 0);
  for (int i = 0; i < kN; ++i) ++count[static_cast<size_t>(sample_token(kLogits.data(), 8, s, draws.uniform(i)))];
  for (size_t t = 0; t < 8; ++t) {
    if (want[t] == 0) {
      EXPECT_EQ(count[t], 0) << t;
      continue;
    }
    const double sd = std::sqrt(kN * want[t] * (1 - want[t]));
    EXPECT_NEAR(count[t], kN * want[t], 5 * sd + 1) << "token " << t;
  }
}

}  // namespace
}  // namespace pst
