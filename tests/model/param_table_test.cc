#include "model/param_table.h"

#include <algorithm>
#include <cmath>
#include <set>

#include <gtest/gtest.h>

#include "model/transformer.h"

namespace pst {
namespace {

ModelConfig small(ModelKind kind, NormPlacement norm) {
  ModelConfig c;
  c.kind = kind;
  c.norm = norm;
  c.d_model = 32;
  c.heads = 4;
  c.ffn_dim = 48;
  c.encoder_layers = 2;
  c.decoder_layers = 3;
  c.max_len = 20;
  return c;
}

TEST(ParamTableTest, CountsMatchClosedForm) {
  const int64_t C = 32, F = 48, Vs = 30, Vt = 44, L = 20;
  const int64_t attn = 3 * C * C + 3 * C + C * C + C, ffn = 2 * C * F + F + C, norm = 2 * C;
  {
    // Encoder-decoder, post-LN, tied, sinusoidal: no final norms, no position tables.
    const ParamTable t = build_param_table(small(ModelKind::kEncoderDecoder, NormPlacement::kPost), Vs, Vt);
    const int64_t expect = Vs * C + Vt * C + 2 * (attn + ffn + 2 * norm) + 3 * (2 * attn + ffn + 3 * norm) + Vt;
    EXPECT_EQ(t.total_numel(), expect);
  }
  {
    ModelConfig c = small(ModelKind::kDecoderOnly, NormPlacement::kPre);
    c.positions = Positions::kLearned;
    c.tie_embeddings = false;
    const ParamTable t = build_param_table(c, 0, 256);
    const int64_t expect = 256 * C + L * C + 3 * (attn + ffn + 2 * norm) + norm + 256 * C + 256;
    EXPECT_EQ(t.total_numel(), expect);
    const ModelCost cost = model_cost(c, t, 20, 20);
    EXPECT_EQ(cost.counts[static_cast<int>(Component::kPositions)], L * C);
    EXPECT_EQ(cost.counts[static_cast<int>(Component::kOutput)], 256 * C + 256);
    // 2 FLOPs per weight of every matrix product, plus QK^T and PV over 20 positions.
    const double fwd = 3 * (2.0 * (4 * C * C + 2 * C * F) + 4.0 * 20 * C) + 2.0 * C * 256;
    EXPECT_DOUBLE_EQ(cost.forward_flops_per_token, fwd);
    EXPECT_DOUBLE_EQ(cost.train_flops_per_token, 3 * fwd);
  }
}

TEST(ParamTableTest, ModernBlocksCountsMatchClosedForm) {
  // Decoder-only, pre-norm RMSNorm (a weight, no bias), rotary positions (no
  // table), SwiGLU (linear1 of 2F rows), 4 query heads sharing 1 key/value
  // head of 8, no biases, untied.
  ModelConfig c = small(ModelKind::kDecoderOnly, NormPlacement::kPre);
  c.norm_type = NormType::kRmsNorm;
  c.positions = Positions::kRope;
  c.activation = Activation::kSwiGLU;
  c.kv_heads = 1;
  c.bias = false;
  c.tie_embeddings = false;
  const int64_t C = 32, F = 48, KV = 8, V = 256;
  const ParamTable t = build_param_table(c, 0, V);
  const int64_t attn = (C + 2 * KV) * C + C * C, ffn = 3 * C * F;
  EXPECT_EQ(t.total_numel(), V * C + 3 * (attn + ffn + 2 * C) + C + V * C);
  EXPECT_EQ(t[t.index_of("layers.0.self_attn.in_proj_weight")].shape, (std::vector<int64_t>{C + 2 * KV, C}));
  EXPECT_EQ(t[t.index_of("layers.2.linear1.weight")].shape, (std::vector<int64_t>{2 * F, C}));
  EXPECT_EQ(t.index_of("layers.0.norm1.bias"), -1);
  EXPECT_EQ(t.index_of("pos.weight"), -1);
  const ModelCost cost = model_cost(c, t, 20, 20);
  const double fwd = 3 * (2.0 * (2 * C * C + 2 * C * KV + 3 * C * F) + 4.0 * 20 * C) + 2.0 * C * V;
  EXPECT_DOUBLE_EQ(cost.forward_flops_per_token, fwd);
  // SwiGLU's gate and value halves are each initialised as a (F, C) layer:
  // xavier_uniform's bound sqrt(6 / (C + F)), not sqrt(6 / (C + 2F)).
  std::vector<float> w(static_cast<size_t>(t.total_numel()));
  init_params(t, 1, w.data());
  const ParamSpec& l1 = t[t.index_of("layers.0.linear1.weight")];
  float mx = 0;
  for (int64_t i = 0; i < l1.numel; ++i) mx = std::max(mx, std::abs(w[static_cast<size_t>(l1.offset + i)]));
  EXPECT_LE(mx, std::sqrt(6.0 / (C + F)));
  EXPECT_GT(mx, std::sqrt(6.0 / (C + 2 * F)));
}

TEST(ParamTableTest, NamesAreUniqueAndOffsetsContiguous) {
  for (ModelKind k : {ModelKind::kEncoderDecoder, ModelKind::kDecoderOnly}) {
    const ParamTable t = build_param_table(small(k, NormPlacement::kPre), 30, 44);
    std::set<std::string> names;
    int64_t off = 0;
    for (const ParamSpec& p : t.params()) {
      EXPECT_TRUE(names.insert(p.name).second) << p.name;
      EXPECT_EQ(p.offset, off);
      off += p.numel;
    }
  }
}

TEST(ParamTableTest, InitialValuesDependOnlyOnSeedAndName) {
  ModelConfig a = small(ModelKind::kEncoderDecoder, NormPlacement::kPost), b = a;
  b.encoder_layers = 4;  // a different table around the same named tensors
  const ParamTable ta = build_param_table(a, 30, 44), tb = build_param_table(b, 30, 44);
  std::vector<float> wa(ta.total_numel()), wb(tb.total_numel()), wc(ta.total_numel());
  init_params(ta, 7, wa.data());
  init_params(tb, 7, wb.data());
  init_params(ta, 8, wc.data());
  for (const char* name :
       {"decoder.layers.1.linear1.weight", "encoder.layers.0.self_attn.in_proj_weight", "tgt_embed.weight"}) {
    const ParamSpec& pa = ta[ta.index_of(name)];
    const ParamSpec& pb = tb[tb.index_of(name)];
    for (int64_t i = 0; i < pa.numel; ++i) ASSERT_EQ(wa[pa.offset + i], wb[pb.offset + i]) << name;
    EXPECT_NE(wa[pa.offset], wc[pa.offset]) << "seed must matter";
  }
}

TEST(ParamTableTest, InitSchemesHaveTheirDistributions) {
  ModelConfig c = small(ModelKind::kDecoderOnly, NormPlacement::kPre);
  c.d_model = 256;
  c.ffn_dim = 1024;
  c.heads = 4;
  auto stats = [](const std::vector<float>& w, const ParamSpec& p) {
    double s = 0, s2 = 0, mx = 0;
    for (int64_t i = 0; i < p.numel; ++i) {
      const double x = w[p.offset + i];
      s += x;
      s2 += x * x;
      mx = std::max(mx, std::abs(x));
    }
    return std::tuple{s / p.numel, std::sqrt(s2 / p.numel), mx};
  };
  for (InitScheme scheme : {InitScheme::kXavierUniform, InitScheme::kKaimingNormal, InitScheme::kNormal}) {
    c.init = scheme;
    const ParamTable t = build_param_table(c, 0, 256);
    std::vector<float> w(t.total_numel());
    init_params(t, 1, w.data());
    const ParamSpec& fc = t[t.index_of("layers.0.linear1.weight")];  // (1024, 256)
    auto [mean, rms, mx] = stats(w, fc);
    EXPECT_NEAR(mean, 0.0, 1e-3);
    if (scheme == InitScheme::kXavierUniform) {
      const double a = std::sqrt(6.0 / (256 + 1024));
      EXPECT_LE(mx, a);
      EXPECT_GT(mx, 0.999 * a);
      EXPECT_NEAR(rms, a / std::sqrt(3.0), 0.01 * a);
    } else if (scheme == InitScheme::kKaimingNormal) {
      EXPECT_NEAR(rms, std::sqrt(2.0 / 256), 0.01 * std::sqrt(2.0 / 256));
    } else {
      EXPECT_NEAR(rms, 0.02, 2e-4);
    }
    const ParamSpec& ln = t[t.index_of("layers.0.norm1.weight")];
    const ParamSpec& bias = t[t.index_of("layers.0.linear1.bias")];
    for (int64_t i = 0; i < ln.numel; ++i) EXPECT_EQ(w[ln.offset + i], 1.0f);
    for (int64_t i = 0; i < bias.numel; ++i) EXPECT_EQ(w[bias.offset + i], 0.0f);
  }
}

TEST(ParamTableTest, DeepNetInitAndConstants) {
  ModelConfig c = small(ModelKind::kEncoderDecoder, NormPlacement::kDeepNorm);
  c.init = InitScheme::kDeepNet;
  c.d_model = 128;
  c.heads = 4;
  c.encoder_layers = 6;
  c.decoder_layers = 6;
  const DeepNormConstants k = deepnorm_constants(c);
  // Wang et al. 2022, Table 1 (encoder-decoder, N = M = 6).
  EXPECT_NEAR(k.encoder_alpha, 0.81 * std::pow(6.0 * 6 * 6 * 6 * 6, 1.0 / 16), 1e-12);
  EXPECT_NEAR(k.encoder_beta, 0.87 * std::pow(6.0 * 6 * 6 * 6 * 6, -1.0 / 16), 1e-12);
  EXPECT_NEAR(k.decoder_alpha, std::pow(18.0, 0.25), 1e-12);
  EXPECT_NEAR(k.decoder_beta, std::pow(72.0, -0.25), 1e-12);
  const ParamTable t = build_param_table(c, 30, 44);
  std::vector<float> w(t.total_numel());
  init_params(t, 3, w.data());
  const ParamSpec& qkv = t[t.index_of("decoder.layers.0.self_attn.in_proj_weight")];
  const int64_t C = 128;
  auto rms_rows = [&](int64_t r0, int64_t r1) {
    double s2 = 0;
    for (int64_t i = r0 * C; i < r1 * C; ++i) s2 += static_cast<double>(w[qkv.offset + i]) * w[qkv.offset + i];
    return std::sqrt(s2 / static_cast<double>((r1 - r0) * C));
  };
  const double xavier = std::sqrt(2.0 / (C + C));
  EXPECT_NEAR(rms_rows(0, 2 * C), xavier, 0.02 * xavier);                                        // q, k: gain 1
  EXPECT_NEAR(rms_rows(2 * C, 3 * C), k.decoder_beta * xavier, 0.03 * k.decoder_beta * xavier);  // v: gain beta
}

TEST(ParamTableTest, SinusoidalPositionsFormula) {
  const auto pe = sinusoidal_positions(50, 16);
  for (int p : {0, 1, 7, 49})
    for (int i = 0; i < 16; ++i) {
      const double angle = p / std::pow(10000.0, static_cast<double>(i - i % 2) / 16);
      EXPECT_NEAR(pe[p * 16 + i], i % 2 == 0 ? std::sin(angle) : std::cos(angle), 1e-6);
    }
}

}  // namespace
}  // namespace pst
