// WarnThrottle against a count worked out by hand: at most `burst` lines a
// period, the rest counted and reported by the first line of a later one.
#include "core/logging.h"

#include <gtest/gtest.h>

namespace pst {
namespace {

TEST(WarnThrottleTest, AFloodCostsAFewLines) {
  WarnThrottle t(3, 10.0);
  int logged = 0;
  for (int i = 0; i < 100000; ++i) logged += t.admit("bad message", 1.0 + i * 1e-5).empty() ? 0 : 1;
  EXPECT_EQ(logged, 3);
  EXPECT_EQ(t.left_out(), 99997);
  EXPECT_EQ(t.admit("bad message", 11.5), "bad message (99997 more like it in the last 10 s were not logged)");
  EXPECT_EQ(t.admit("bad message", 11.6), "bad message");
  EXPECT_EQ(t.admit("bad message", 11.7), "bad message");
  EXPECT_EQ(t.admit("bad message", 11.8), "");
  EXPECT_EQ(t.admit("quiet again", 30.0), "quiet again (1 more like it in the last 10 s were not logged)");
  EXPECT_EQ(t.admit("quiet again", 45.0), "quiet again");
}

}  // namespace
}  // namespace pst
