// The search space: parsing with errors that name the key, and the map from
// unit coordinates to values (tune/space.h).
#include <cmath>

#include <gtest/gtest.h>

#include "tune/space.h"

namespace pst {
namespace {

Result<SearchSpace> parse(const std::string& text) {
  toml::table t = toml::parse(text);
  return parse_space(*t["space"].as_table(), "study.toml");
}

void expect_error(const std::string& text, const std::string& says) {
  auto s = parse(text);
  ASSERT_FALSE(s.ok()) << text;
  EXPECT_NE(s.status().message().find(says), std::string::npos) << s.status().message();
}

TEST(SpaceTest, ParsesEveryKind) {
  auto s = parse(R"([space]
"optim.lr" = { type = "log_uniform", low = 1e-4, high = 1e-2 }
"model.dropout" = { type = "uniform", low = 0.0, high = 0.3, points = 4 }
"data.batch_size" = { type = "int", low = 64, high = 512, step = 64 }
"schedule.kind" = { type = "choice", values = ["cosine", "linear"] }
"schedule.min_lr" = { type = "log_uniform", low = 1e-6, high = 1e-4, when = { "schedule.kind" = "cosine" } }
)");
  ASSERT_TRUE(s.ok()) << s.status().message();
  ASSERT_EQ(s->size(), 5u);
  // Sorted by key.
  EXPECT_EQ(s->params[0].key, "data.batch_size");
  EXPECT_EQ(s->params[0].step, 64);
  EXPECT_EQ(s->params[3].key, "schedule.kind");
  EXPECT_EQ(s->params[3].values, (std::vector<std::string>{"cosine", "linear"}));
  EXPECT_EQ(s->params[4].when_key, "schedule.kind");
  // The condition reads the choice.
  Point p(5);
  p[3] = 0;
  EXPECT_TRUE(s->active(p, 4));
  p[3] = 1;
  EXPECT_FALSE(s->active(p, 4));
}

TEST(SpaceTest, ErrorsNameTheKeyAndWhatIsAllowed) {
  expect_error("[space]\n\"optim.lrr\" = { type = \"uniform\", low = 0, high = 1 }", "\"optim.lrr\": not a setting");
  expect_error("[space]\n\"optim.lr\" = { type = \"normal\", low = 0, high = 1 }",
               "type 'normal' (allowed: uniform, log_uniform, int, choice)");
  expect_error("[space]\n\"optim.lr\" = { type = \"uniform\", low = 1, high = 1 }", "need finite low < high");
  expect_error("[space]\n\"optim.lr\" = { type = \"log_uniform\", low = 0, high = 1 }", "needs low > 0");
  expect_error("[space]\n\"data.batch_size\" = { type = \"uniform\", low = 16, high = 512 }",
               "the key takes integers; use type = \"int\"");
  expect_error("[space]\n\"data.batch_size\" = { type = \"int\", low = 16, high = 100, step = 16 }",
               "not a multiple of step");
  expect_error("[space]\n\"model.activation\" = { type = \"choice\", values = [\"gelu\", \"tanh\"] }", "tanh");
  expect_error("[space]\n\"model.activation\" = { type = \"choice\", values = [] }", "needs values");
  expect_error("[space]\n\"optim.lr\" = { type = \"uniform\", low = 0, high = 1, colour = 2 }",
               "unknown field 'colour'");
  expect_error(R"([space]
"optim.lr" = { type = "uniform", low = 0.001, high = 0.01 }
"schedule.min_lr" = { type = "uniform", low = 0, high = 1e-4, when = { "optim.lr" = 0.001 } }
)",
               "not an unconditional choice");
  expect_error(R"([space]
"schedule.kind" = { type = "choice", values = ["cosine", "linear"] }
"schedule.min_lr" = { type = "uniform", low = 0, high = 1e-4, when = { "schedule.kind" = "step" } }
)",
               "'step', which is not one of its values");
  expect_error("[space]\n", "no dimension");
}

TEST(SpaceTest, UnitCoordinatesMapOntoTheRange) {
  Param lin = Param::range("optim.lr", ParamKind::kUniform, 2, 6);
  EXPECT_DOUBLE_EQ(from_unit(lin, 0.25), 3);
  EXPECT_DOUBLE_EQ(to_unit(lin, 3), 0.25);
  Param lg = Param::range("optim.lr", ParamKind::kLogUniform, 1e-4, 1e-2);
  EXPECT_NEAR(from_unit(lg, 0.5), 1e-3, 1e-15);
  EXPECT_NEAR(to_unit(lg, 1e-3), 0.5, 1e-12);
  // Ints: every step value owns an equal share of [0, 1).
  Param in = Param::range("data.batch_size", ParamKind::kInt, 64, 256, 64);
  std::vector<int> counts(4, 0);
  for (int k = 0; k < 4000; ++k) {
    const double v = from_unit(in, (k + 0.5) / 4000);
    ASSERT_EQ(std::fmod(v - 64, 64), 0);
    counts[static_cast<size_t>((v - 64) / 64)]++;
  }
  EXPECT_EQ(counts, (std::vector<int>{1000, 1000, 1000, 1000}));
  for (double v : {64.0, 128.0, 192.0, 256.0}) EXPECT_EQ(from_unit(in, to_unit(in, v)), v);
  // A log int range: each integer's share is its stretch of log space.
  Param li = Param::range("train.steps", ParamKind::kInt, 1, 100, 1, true);
  for (double v : {1.0, 2.0, 10.0, 57.0, 100.0}) EXPECT_EQ(from_unit(li, to_unit(li, v)), v);
  EXPECT_EQ(from_unit(li, 0), 1);
  EXPECT_EQ(from_unit(li, 0.999999), 100);
  Param ch = Param::choice("model.activation", {});
  ch.values = {"relu", "gelu", "gelu_tanh"};
  EXPECT_EQ(from_unit(ch, 0.0), 0);
  EXPECT_EQ(from_unit(ch, 0.5), 1);
  EXPECT_EQ(from_unit(ch, 1.0), 2);  // (1 is clamped into the last cell)
  EXPECT_EQ(to_override(ch, 2), "model.activation=gelu_tanh");
}

TEST(SpaceTest, OverridesCarryTheExactFloat) {
  Param lg = Param::range("optim.lr", ParamKind::kLogUniform, 1e-4, 1e-2);
  for (double u : {0.1234567, 0.5, 0.987654321}) {
    const double v = from_unit(lg, u);
    const std::string o = to_override(lg, v);
    ASSERT_EQ(o.rfind("optim.lr=", 0), 0u);
    EXPECT_EQ(std::strtod(o.c_str() + 9, nullptr), v) << o;
  }
}

}  // namespace
}  // namespace pst
