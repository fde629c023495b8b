// core/json_fields.h: which JSON numbers an integer field takes, against the
// ranges written out by hand.
#include "core/json_fields.h"

#include <gtest/gtest.h>

namespace pst {
namespace {

nlohmann::json parsed(const char* text) { return nlohmann::json::parse(text); }

TEST(JsonFieldsTest, IntegersInRangeOnly) {
  // int: [-2147483648, 2147483647]
  EXPECT_EQ(json_integer<int>(parsed("-2147483648"), "x"), -2147483648);
  EXPECT_EQ(json_integer<int>(parsed("2147483647"), "x"), 2147483647);
  EXPECT_FALSE(json_integer_fits<int>(parsed("2147483648")));
  EXPECT_FALSE(json_integer_fits<int>(parsed("-2147483649")));
  // int64_t: the whole signed range, nothing of the unsigned one past it
  EXPECT_EQ(json_integer<int64_t>(parsed("-9223372036854775808"), "x"), INT64_MIN);
  EXPECT_EQ(json_integer<int64_t>(parsed("9223372036854775807"), "x"), INT64_MAX);
  EXPECT_FALSE(json_integer_fits<int64_t>(parsed("9223372036854775808")));
  // uint64_t: [0, 2^64 - 1]
  EXPECT_EQ(json_integer<uint64_t>(parsed("18446744073709551615"), "x"), UINT64_MAX);
  EXPECT_EQ(json_integer<uint64_t>(parsed("0"), "x"), 0u);
  EXPECT_FALSE(json_integer_fits<uint64_t>(parsed("-1")));
  // Not integers, whatever their value.
  for (const char* text : {"1.0", "1e3", "0.5", "1e30", "-1e300", "\"7\"", "true", "null", "[1]"}) {
    EXPECT_FALSE(json_integer_fits<int64_t>(parsed(text))) << text;
    EXPECT_FALSE(json_integer_fits<uint64_t>(parsed(text))) << text;
  }
  try {
    json_integer<int>(parsed("1e30"), "rung");
    ADD_FAILURE() << "1e30 taken as an int";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "rung is 1e+30, not an integer in [-2147483648, 2147483647]");
  }
}

}  // namespace
}  // namespace pst
