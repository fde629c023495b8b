// pst's model and optimizer against PyTorch (tests/reference/): the loss,
// logits (of a train and of an inference forward) and every gradient of one
// step, and the weights after 3 steps of clipping + AdamW/Adam under a
// warmup schedule, for tiny models that cover both model kinds, padding,
// post-LN, pre-LN and DeepNorm, and the blocks of current LMs (RMSNorm,
// rotary positions, SwiGLU, grouped-query attention).
//
// Tolerances (fp32, different summation orders): loss 1e-5 relative;
// logits and each gradient tensor max |pst - torch| <= 1e-4 * max |torch|.
// Weights after the steps: 1e-4 of the tensor's scale + 1e-3 * sum(lr),
// except elements whose gradient is rounding noise (|g| <= 1e-6 max|g|, e.g.
// attention key biases, whose true gradient is 0): Adam turns any noise into
// a step of about lr, so they may differ by 2 * sum(lr).
#include <algorithm>
#include <cmath>

#include <gtest/gtest.h>

#include "core/safetensors.h"
#include "model/transformer.h"
#include "ps/reference_step.h"
#include "tests/test_backend.h"
#include "tests/test_util.h"

namespace pst {
namespace {

class ReferenceTest : public ::testing::TestWithParam<std::string> {};

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::abs(static_cast<double>(x)));
  return m;
}

TEST_P(ReferenceTest, MatchesTorch) {
  const std::string dir = testing::source_path("tests/reference/fixtures/" + GetParam());
  auto job = load_config(dir + "/config.toml", {});
  ASSERT_TRUE(job.ok()) << job.status().to_string();
  auto weights = SafetensorsFile::read(dir + "/weights.safetensors");
  auto batch_file = SafetensorsFile::read(dir + "/batch.safetensors");
  auto torch = SafetensorsFile::read(dir + "/torch.safetensors");
  ASSERT_TRUE(weights.ok() && batch_file.ok() && torch.ok());
  auto batch = batch_from(*batch_file);
  ASSERT_TRUE(batch.ok()) << batch.status().to_string();

  const bool enc_dec = job->model.kind == ModelKind::kEncoderDecoder;
  const int64_t src_vocab = enc_dec ? weights->find("src_embed.weight")->shape[0] : 0;
  const int64_t tgt_vocab = weights->find(enc_dec ? "tgt_embed.weight" : "embed.weight")->shape[0];
  PST_TEST_BACKEND_OR_SKIP(backend);
  Transformer model(job->model, src_vocab, tgt_vocab, backend.get());
  std::vector<float> init(static_cast<size_t>(model.num_params()));
  for (const ParamSpec& p : model.table().params()) {
    const StoredTensor* t = weights->find(p.name);
    ASSERT_NE(t, nullptr) << p.name;
    ASSERT_EQ(t->shape, p.shape) << p.name;
    const auto v = t->to_f32();
    std::copy(v.begin(), v.end(), init.begin() + p.offset);
  }
  model.set_weights(init.data());
  // An inference forward, whose buffers are laid out otherwise
  // (Transformer::activation_bytes), gives torch's logits too; the train
  // forwards after it lay the arena out again.
  model.forward(*batch, ForwardOptions{});
  const std::vector<float> inference_logits = model.logits();
  const size_t inference_bytes = model.activation_bytes();
  const ReferenceStep r = run_reference_step(*job, model, *batch, 3);
  EXPECT_LT(inference_bytes, model.activation_bytes());

  const float torch_loss = torch->find("loss")->to_f32()[0];
  EXPECT_NEAR(r.loss, torch_loss, 1e-5 * std::abs(torch_loss));
  const auto logits = torch->find("logits")->to_f32();
  ASSERT_EQ(logits.size(), r.logits.size());
  EXPECT_TRUE(testing::all_close(r.logits.data(), logits.data(), logits.size(), 1e-4 * max_abs(logits), 0, "logits"));
  ASSERT_EQ(inference_logits.size(), logits.size());
  EXPECT_TRUE(testing::all_close(inference_logits.data(), logits.data(), logits.size(), 1e-4 * max_abs(logits), 0,
                                 "inference logits"));

  const auto lrs = torch->find("lr")->to_f32();
  double lr_sum = 0;
  for (size_t k = 0; k < lrs.size(); ++k) {
    EXPECT_NEAR(r.lr[k], lrs[k], 1e-6 * lrs[k]) << "lr of step " << k;
    lr_sum += lrs[k];
  }
  const auto norms = torch->find("grad_norm")->to_f32();
  for (size_t k = 0; k < norms.size(); ++k)
    EXPECT_NEAR(r.grad_norm[k], norms[k], 1e-5 * norms[k]) << "grad norm of step " << k;

  std::vector<float> torch_grads(init.size()), torch_after(init.size());
  for (const ParamSpec& p : model.table().params()) {
    const auto g = torch->find("grad/" + p.name)->to_f32();
    EXPECT_TRUE(
        testing::all_close(r.grads.data() + p.offset, g.data(), g.size(), 1e-4 * max_abs(g), 0, "grad/" + p.name));
    const auto after = torch->find("after/" + p.name)->to_f32();
    std::copy(g.begin(), g.end(), torch_grads.begin() + p.offset);
    std::copy(after.begin(), after.end(), torch_after.begin() + p.offset);
  }
  EXPECT_TRUE(testing::adam_weights_close(model.table(), r.after.data(), torch_after.data(), torch_grads.data(),
                                          init.data(), lr_sum));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ReferenceTest,
                         ::testing::Values("g2p_post", "g2p_pre", "g2p_deepnorm", "lm_pre", "lm_post", "g2p_modern",
                                           "lm_modern"));

}  // namespace
}  // namespace pst
