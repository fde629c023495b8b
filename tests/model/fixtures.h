// A tiny model and batch shared by the whole-model suites.
#pragma once

#include "core/batch.h"
#include "core/config.h"
#include "core/philox.h"
#include "model/transformer.h"

namespace pst::testing {

// d_model 8, 2 heads, 2 + 2 layers, GELU, learned positions, dropout 0.2.
inline ModelConfig tiny_model(ModelKind kind, NormPlacement norm) {
  ModelConfig cfg;
  cfg.kind = kind;
  cfg.norm = norm;
  cfg.init = norm == NormPlacement::kDeepNorm ? InitScheme::kDeepNet : InitScheme::kXavierUniform;
  cfg.d_model = 8;
  cfg.heads = 2;
  cfg.ffn_dim = 16;
  cfg.encoder_layers = 2;
  cfg.decoder_layers = 2;
  cfg.max_len = 8;
  cfg.activation = Activation::kGelu;
  cfg.positions = Positions::kLearned;
  cfg.dropout = cfg.attention_dropout = cfg.embedding_dropout = 0.2;
  return cfg;
}

// The blocks of current LMs on a model: RMSNorm, rotary positions, SwiGLU,
// and grouped-query attention (one key/value head per two query heads).
inline ModelConfig modern_blocks(ModelConfig cfg) {
  cfg.norm_type = NormType::kRmsNorm;
  cfg.positions = Positions::kRope;
  cfg.activation = Activation::kSwiGLU;
  cfg.kv_heads = cfg.heads / 2;
  return cfg;
}

// Two rows with padding: sources of 5 and 3 tokens (encoder-decoder only),
// targets of 4 and 2 (ids below 9).
inline Batch tiny_batch(bool enc_dec) {
  Batch b;
  b.B = 2;
  b.S = enc_dec ? 5 : 0;
  b.T = 4;
  if (enc_dec) {
    b.src = {4, 5, 6, 7, 2, 8, 4, 2, 0, 0};
    b.src_len = {5, 3};
  }
  b.tgt_in = {1, 4, 5, 6, 1, 7, 0, 0};
  b.tgt_out = {4, 5, 6, 2, 7, 2, kIgnoreTarget, kIgnoreTarget};
  b.tgt_len = {4, 2};
  return b;
}

// B encoder-decoder rows of random ids (4..vocab-1) drawn from Philox with
// `seed`: sources of 2..S tokens, targets of 2..T, padded to S and T.
inline Batch random_batch(int64_t B, int64_t S, int64_t T, int32_t vocab, uint64_t seed) {
  const Philox rng(seed, 0);
  uint64_t k = 0;
  auto draw = [&](int32_t lo, int32_t hi) {
    return lo + static_cast<int32_t>(rng.block(k++).v[0] % uint32_t(hi - lo));
  };
  Batch b;
  b.B = B;
  b.S = S;
  b.T = T;
  for (int64_t i = 0; i < B; ++i) {
    const int32_t slen = draw(2, static_cast<int32_t>(S) + 1), tlen = draw(2, static_cast<int32_t>(T) + 1);
    b.src_len.push_back(slen);
    b.tgt_len.push_back(tlen);
    for (int64_t s = 0; s < S; ++s) b.src.push_back(s < slen ? draw(4, vocab) : 0);
    for (int64_t t = 0; t < T; ++t) {
      b.tgt_in.push_back(t < tlen ? (t == 0 ? 1 : draw(4, vocab)) : 0);
      b.tgt_out.push_back(t < tlen ? draw(4, vocab) : kIgnoreTarget);
    }
  }
  return b;
}

// A training pass of g2p-modern's blocks at a small size (d_model 64, 4
// heads, 2 key/value heads, no dropout) on a fixed batch, on `be`: its loss
// sum, and its gradients in *grads. For comparing backends' products.
inline double modern_blocks_pass(Backend* be, std::vector<float>* grads) {
  ModelConfig cfg = modern_blocks(tiny_model(ModelKind::kEncoderDecoder, NormPlacement::kPre));
  cfg.d_model = 64;
  cfg.heads = 4;
  cfg.kv_heads = 2;
  cfg.ffn_dim = 171;
  cfg.max_len = 32;
  cfg.dropout = cfg.attention_dropout = cfg.embedding_dropout = 0;
  const int32_t vocab = 30;
  const Batch batch = random_batch(16, 12, 10, vocab, 4);
  Transformer model(cfg, vocab, vocab, be);
  model.init_weights(7);
  ForwardOptions opt;
  opt.train = true;
  opt.grad_scale = 1.0f / static_cast<float>(batch.tokens());
  model.zero_grads();
  const double loss = model.forward(batch, opt).loss_sum;
  model.backward();
  grads->resize(static_cast<size_t>(model.num_params()));
  model.get_grads(grads->data());
  return loss;
}

}  // namespace pst::testing
