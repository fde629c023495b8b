// The streaming hooks a worker uses to overlap communication with compute
// (docs/design.md, Streaming). Forward: weights beyond the announced end are NaN until
// need_weights asks for them, so a read ahead of the announcement would turn
// the loss into NaN; the loss must equal a plain forward's bit for bit.
// Backward: the gradients of [begin, n) are copied the moment they are
// announced final; the copy must equal the gradient backward ends with, so
// nothing is written after its announcement. Both for every model shape.
#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "model/transformer.h"
#include "tests/model/fixtures.h"
#include "tests/test_backend.h"

namespace pst {
namespace {

struct HookCase {
  ModelKind kind;
  NormPlacement norm;
  bool tie;
};

class HooksTest : public ::testing::TestWithParam<HookCase> {};

TEST_P(HooksTest, AnnouncementsCoverEveryReadAndWrite) {
  PST_TEST_BACKEND_OR_SKIP(be);
  ModelConfig cfg = testing::tiny_model(GetParam().kind, GetParam().norm);
  cfg.tie_embeddings = GetParam().tie;
  cfg.decoder_layers = 3;
  const bool enc_dec = cfg.kind == ModelKind::kEncoderDecoder;
  Transformer model(cfg, enc_dec ? 9 : 11, 11, be.get());
  model.init_weights(8);
  const Batch b = testing::tiny_batch(enc_dec);
  ForwardOptions opt;
  opt.train = true;
  opt.grad_scale = 1.0f / static_cast<float>(b.tokens());
  opt.seed = 4;
  const int64_t n = model.num_params();
  std::vector<float> w(n), want_grad(n), got_grad(n, 0.0f);
  model.get_weights(w.data());

  model.zero_grads();
  const double want_loss = model.forward(b, opt).loss_sum;
  model.backward();
  model.get_grads(want_grad.data());

  // Weights beyond what was asked for are NaN.
  std::vector<float> poison(n, std::numeric_limits<float>::quiet_NaN());
  model.set_weights(poison.data());
  int64_t have = 0;
  std::vector<int64_t> asked;
  opt.need_weights = [&](int64_t end) {
    asked.push_back(end);
    ASSERT_GE(end, have) << "need_weights went back";
    ASSERT_LE(end, n);
    model.set_weights(w.data(), have, end);
    have = end;
  };
  model.zero_grads();
  const double got_loss = model.forward(b, opt).loss_sum;
  EXPECT_EQ(got_loss, want_loss);
  EXPECT_EQ(have, n);
  // One announcement per layer and per embedding block at least: the
  // forward does not ask for everything up front.
  const int64_t layers = (enc_dec ? cfg.encoder_layers : 0) + cfg.decoder_layers;
  EXPECT_GE(static_cast<int64_t>(asked.size()), layers + (enc_dec ? 2 : 1)) << "too few announcements";
  EXPECT_LT(asked.front(), n / 2);

  int64_t final_from = n;
  int calls = 0;
  model.backward([&](int64_t begin) {
    ++calls;
    ASSERT_LE(begin, final_from) << "gradients_final went back";
    ASSERT_GE(begin, 0);
    model.get_grads(got_grad.data(), begin, final_from);
    final_from = begin;
  });
  EXPECT_EQ(final_from, 0);
  EXPECT_GE(calls, layers + (enc_dec ? 2 : 1));
  std::vector<float> end_grad(n);
  model.get_grads(end_grad.data());
  EXPECT_EQ(end_grad, want_grad) << "hooks changed the gradient";
  for (const ParamSpec& p : model.table().params())
    for (int64_t i = p.offset; i < p.offset + p.numel; ++i)
      ASSERT_EQ(got_grad[i], end_grad[i]) << p.name << "[" << i - p.offset << "] changed after it was announced final";
}

INSTANTIATE_TEST_SUITE_P(Models, HooksTest,
                         ::testing::Values(HookCase{ModelKind::kEncoderDecoder, NormPlacement::kPost, false},
                                           HookCase{ModelKind::kEncoderDecoder, NormPlacement::kPre, true},
                                           HookCase{ModelKind::kDecoderOnly, NormPlacement::kPre, false},
                                           HookCase{ModelKind::kDecoderOnly, NormPlacement::kPost, true}));

}  // namespace
}  // namespace pst
