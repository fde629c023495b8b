// A tiny model and batch shared by the whole-model suites.
#pragma once

#include "core/batch.h"
#include "core/config.h"

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

}  // namespace pst::testing
