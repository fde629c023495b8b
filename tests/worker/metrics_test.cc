#include <functional>
#include <random>

#include <gtest/gtest.h>

#include "worker/evaluate.h"

namespace pst {
namespace {

using Seq = std::vector<std::string>;

// The Levenshtein recursion, evaluated without memoisation on short inputs.
int64_t brute_distance(const Seq& a, size_t i, const Seq& b, size_t j) {
  if (i == a.size()) return static_cast<int64_t>(b.size() - j);
  if (j == b.size()) return static_cast<int64_t>(a.size() - i);
  return std::min({brute_distance(a, i + 1, b, j) + 1, brute_distance(a, i, b, j + 1) + 1,
                   brute_distance(a, i + 1, b, j + 1) + (a[i] == b[j] ? 0 : 1)});
}

TEST(MetricsTest, EditDistanceMatchesBruteForce) {
  std::mt19937 g(3);
  const Seq alphabet{"aa", "b", "k", "ax"};
  for (int trial = 0; trial < 300; ++trial) {
    Seq a(g() % 7), b(g() % 7);
    for (auto& x : a) x = alphabet[g() % 4];
    for (auto& x : b) x = alphabet[g() % 4];
    ASSERT_EQ(edit_distance(a, b), brute_distance(a, 0, b, 0));
  }
}

TEST(MetricsTest, WordScoreUsesClosestReference) {
  const std::vector<Seq> refs{{"t", "ah", "m", "ey", "t", "ow"}, {"t", "ah", "m", "aa", "t", "ow"}};
  WordScore s = score_word({"t", "ah", "m", "aa", "t", "ow"}, refs);
  EXPECT_TRUE(s.correct);
  EXPECT_EQ(s.distance, 0);
  s = score_word({"t", "ah", "m", "aa", "t"}, refs);
  EXPECT_FALSE(s.correct);
  EXPECT_EQ(s.distance, 1);
  EXPECT_EQ(s.ref_length, 6);
  s = score_word({}, refs);
  EXPECT_EQ(s.distance, 6);
}

}  // namespace
}  // namespace pst
