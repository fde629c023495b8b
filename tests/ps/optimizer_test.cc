// Adam/AdamW against torch.optim bit for bit, and global-norm clipping against
// torch.nn.utils.clip_grad_norm_ (fixtures written by
// tests/reference/gen_optimizer_fixtures.py).
#include <cmath>
#include <cstring>

#include <gtest/gtest.h>

#include "core/safetensors.h"
#include "ps/adam.h"
#include "ps/clipping.h"
#include "tests/test_util.h"

namespace pst {
namespace {

SafetensorsFile fixture(const std::string& name) {
  auto f = SafetensorsFile::read(testing::source_path("tests/reference/fixtures/optim/" + name));
  PST_CHECK_MSG(f.ok(), "{}", f.status().to_string());
  return std::move(f).value();
}

class AdamBitExactTest : public ::testing::TestWithParam<std::string> {};

TEST_P(AdamBitExactTest, MatchesTorchOptimBitForBit) {
  const SafetensorsFile f = fixture("optimizer.safetensors");
  const std::string name = GetParam();
  const auto hyper = f.find(name + "/hyper")->to_f32();
  // The fixture stores the hyper-parameters as float32; torch used the Python
  // doubles they were written from, so read them back at that precision.
  const double lr = std::stod(fmt::format("{:.6g}", hyper[0]));
  const double b1 = std::stod(fmt::format("{:.6g}", hyper[1]));
  const double b2 = std::stod(fmt::format("{:.6g}", hyper[2]));
  const double eps = std::stod(fmt::format("{:.6g}", hyper[3]));
  const double wd = std::stod(fmt::format("{:.6g}", hyper[4]));
  const bool decoupled = name != "adam";
  for (int p = 0; p < 2; ++p) {
    const std::string key = name + "/p" + std::to_string(p);
    std::vector<float> w = f.find(key + "/initial")->to_f32();
    std::vector<float> m(w.size(), 0.0f), v(w.size(), 0.0f);
    for (int step = 0; step < 5; ++step) {
      const auto g = f.find(key + "/grad" + std::to_string(step))->to_f32();
      adam_update(w.data(), m.data(), v.data(), g.data(), static_cast<int64_t>(w.size()),
                  adam_constants(lr, b1, b2, eps, wd, decoupled, step + 1));
      const auto expect = f.find(key + "/after" + std::to_string(step))->to_f32();
      int bad = 0;
      for (size_t i = 0; i < w.size(); ++i) {
        uint32_t a, b;
        std::memcpy(&a, &w[i], 4);
        std::memcpy(&b, &expect[i], 4);
        if (a != b && bad++ < 5)
          ADD_FAILURE() << key << " step " << step << " [" << i << "]: pst " << w[i] << " torch " << expect[i];
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Torch, AdamBitExactTest, ::testing::Values("adamw", "adamw_nodecay", "adam"));

// Clipping applied by the update (AdamConstants::grad_scale) is the update
// of the gradient scaled first, as torch's clip_grad_norm_ then step() do,
// bit for bit, with decoupled decay and with L2.
TEST(AdamBitExactTest, ClippingInsideTheUpdateIsTheUpdateOfTheScaledGradient) {
  const int64_t n = 70001;  // over the threaded size
  const std::vector<float> g = testing::random_vec(n, 81, 3.0f);
  const float coef = 0.2718f;
  std::vector<float> scaled = g;
  for (float& x : scaled) x *= coef;
  for (const bool decoupled : {true, false}) {
    std::vector<float> w1 = testing::random_vec(n, 82), m1 = testing::random_vec(n, 83, 0.01f), v1(n, 0.02f);
    std::vector<float> w2 = w1, m2 = m1, v2 = v1;
    for (int64_t step = 1; step <= 3; ++step) {
      AdamConstants k = adam_constants(1e-3, 0.9, 0.999, 1e-8, 0.1, decoupled, step);
      adam_update(w2.data(), m2.data(), v2.data(), scaled.data(), n, k);
      k.grad_scale = coef;
      adam_update(w1.data(), m1.data(), v1.data(), g.data(), n, k);
    }
    EXPECT_EQ(w1, w2);
    EXPECT_EQ(m1, m2);
    EXPECT_EQ(v1, v2);
    EXPECT_NE(w1, testing::random_vec(n, 82));
  }
}

TEST(ClippingTest, MatchesClipGradNorm) {
  const SafetensorsFile f = fixture("clip.safetensors");
  for (int c = 0; c < 3; ++c) {
    const std::string k = fmt::format("c{}", c);
    std::vector<GradStats> parts;
    std::vector<std::vector<float>> grads;
    for (int i = 0; i < 3; ++i) {
      grads.push_back(f.find(fmt::format("{}/g{}", k, i))->to_f32());
      parts.push_back(grad_stats(grads.back().data(), static_cast<int64_t>(grads.back().size())));
    }
    const GradStats total = sum_over_servers(parts);
    const double norm = std::sqrt(total.sum_squares);
    const float torch_norm = f.find(k + "/norm")->to_f32()[0];
    // torch reduces in fp32, pst in fp64.
    EXPECT_NEAR(norm, torch_norm, 2e-6 * torch_norm);
    const double coef = clip_coefficient(norm, f.find(k + "/max_norm")->to_f32()[0]);
    for (int i = 0; i < 3; ++i) {
      const auto expect = f.find(fmt::format("{}/clipped{}", k, i))->to_f32();
      std::vector<float> mine = grads[i];
      for (float& x : mine) x *= static_cast<float>(coef);
      EXPECT_TRUE(testing::all_close(mine.data(), expect.data(), expect.size(), 0, 2e-6, k));
    }
  }
}

TEST(ClippingTest, NonFiniteIsFlagged) {
  std::vector<float> g{1.0f, 2.0f, 2.0f};
  EXPECT_FALSE(grad_stats(g.data(), 3).nonfinite);
  EXPECT_DOUBLE_EQ(grad_stats(g.data(), 3).sum_squares, 9.0);
  g[1] = std::nanf("");
  EXPECT_TRUE(grad_stats(g.data(), 3).nonfinite);
  g[1] = INFINITY;
  EXPECT_TRUE(grad_stats(g.data(), 3).nonfinite);
  EXPECT_EQ(clip_coefficient(3.0, 0.0), 1.0);  // clipping off
  EXPECT_EQ(clip_coefficient(0.5, 1.0), 1.0);
  EXPECT_NEAR(clip_coefficient(4.0, 1.0), 1.0 / (4.0 + 1e-6), 1e-15);
}

}  // namespace
}  // namespace pst
