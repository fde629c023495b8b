// Incremental decoding (Transformer::begin_decoding, decode_step,
// reorder_decoding) against the full forward: the decoder is causal, so the
// logits of one forward over whole sequences are, position by position, what
// each step must give for that prefix. Rows gathered by reorder_decoding
// (dropped, repeated, more rows than before) must go on as the sequences
// they continue.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <random>

#include "model/transformer.h"
#include "tests/model/fixtures.h"
#include "tests/test_backend.h"

namespace pst {
namespace {

struct DecodeCase {
  ModelKind kind;
  NormPlacement norm;
  Positions positions;
  bool modern = false;  // testing::modern_blocks: rotary positions, grouped-query attention
};

class DecodingTest : public ::testing::TestWithParam<DecodeCase> {};

constexpr int64_t kSrcVocab = 9, kTgtVocab = 13, kLen = 10;

// The case's model, 16 wide, with `layers` layers in each stack.
ModelConfig case_model(const DecodeCase& c, int64_t layers) {
  ModelConfig cfg = testing::tiny_model(c.kind, c.norm);
  cfg.d_model = 16;
  cfg.ffn_dim = 32;
  cfg.encoder_layers = cfg.decoder_layers = layers;
  cfg.max_len = kLen + 2;
  cfg.positions = c.positions;
  if (c.modern) {
    cfg.heads = 4;
    cfg = testing::modern_blocks(cfg);
  }
  return cfg;
}

// Sources (ids ending in </s>, padded) and decoder sequences of kLen ids.
struct Rows {
  std::vector<std::vector<int32_t>> src;
  std::vector<std::vector<int32_t>> tgt;
};

// n ids drawn uniformly from [lo, hi).
std::vector<int32_t> random_ids(std::mt19937& rng, int64_t n, int32_t lo, int32_t hi) {
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(std::uniform_int_distribution<int32_t>(lo, hi - 1)(rng));
  return ids;
}

// A row per source length: random ids ending in </s>, and kLen random
// decoder ids starting with <s>.
Rows random_rows(std::mt19937& rng, std::initializer_list<int64_t> source_lengths) {
  Rows rows;
  for (int64_t len : source_lengths) {
    rows.src.push_back(random_ids(rng, len - 1, 4, kSrcVocab));
    rows.src.back().push_back(2);  // </s>
    rows.tgt.push_back(random_ids(rng, kLen, 4, kTgtVocab));
    rows.tgt.back()[0] = 1;  // <s>
  }
  return rows;
}

Batch make_batch(const Rows& rows, bool enc_dec, int64_t T) {
  Batch b;
  b.B = static_cast<int64_t>(rows.tgt.size());
  b.T = T;
  if (enc_dec) {
    for (const auto& s : rows.src) b.S = std::max<int64_t>(b.S, static_cast<int64_t>(s.size()));
    for (const auto& s : rows.src) {
      b.src.insert(b.src.end(), s.begin(), s.end());
      b.src.insert(b.src.end(), static_cast<size_t>(b.S) - s.size(), kPadId);
      b.src_len.push_back(static_cast<int32_t>(s.size()));
    }
  }
  for (const auto& t : rows.tgt) b.tgt_in.insert(b.tgt_in.end(), t.begin(), t.begin() + T);
  b.tgt_out.assign(static_cast<size_t>(b.B * T), kIgnoreTarget);
  b.tgt_len.assign(static_cast<size_t>(b.B), static_cast<int32_t>(T));
  return b;
}

// The logits (B, kLen, V) of one forward over the whole sequences.
std::vector<float> full_logits(Transformer& model, const Rows& rows, bool enc_dec) {
  model.forward(make_batch(rows, enc_dec, kLen), ForwardOptions{});
  return model.logits();
}

// Row r of the step's logits (rows, V) against position t of row r of a full forward.
void expect_step(const std::vector<float>& step, const std::vector<float>& full, int64_t rows, int64_t t,
                 const std::string& what) {
  ASSERT_EQ(step.size(), static_cast<size_t>(rows * kTgtVocab)) << what;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t v = 0; v < kTgtVocab; ++v)
      ASSERT_NEAR(step[static_cast<size_t>(r * kTgtVocab + v)],
                  full[static_cast<size_t>((r * kLen + t) * kTgtVocab + v)], 2e-5)
          << what << ": row " << r << " position " << t << " id " << v;
}

// The logits (rows, prefix, V) of begin_decoding against the first `prefix`
// positions of a full forward's rows.
void expect_prefix(const std::vector<float>& first, const std::vector<float>& full, int64_t rows, int64_t prefix,
                   const std::string& what) {
  ASSERT_EQ(first.size(), static_cast<size_t>(rows * prefix * kTgtVocab)) << what;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < prefix; ++t)
      for (int64_t v = 0; v < kTgtVocab; ++v)
        ASSERT_NEAR(first[static_cast<size_t>((r * prefix + t) * kTgtVocab + v)],
                    full[static_cast<size_t>((r * kLen + t) * kTgtVocab + v)], 2e-5)
            << what << ": row " << r << " position " << t;
}

TEST_P(DecodingTest, StepsGiveTheLogitsOfTheWholePrefix) {
  PST_TEST_BACKEND_OR_SKIP(be);
  const ModelConfig cfg = case_model(GetParam(), 2);
  const bool enc_dec = cfg.kind == ModelKind::kEncoderDecoder;
  Transformer model(cfg, kSrcVocab, kTgtVocab, be.get());
  model.init_weights(11);
  std::mt19937 rng(5);
  const Rows rows = random_rows(rng, {5, 3, 4});
  const std::vector<float> full = full_logits(model, rows, enc_dec);
  // The encoder's output of that forward, for a decoding given it below.
  std::vector<std::vector<float>> encoded;
  for (size_t r = 0; enc_dec && r < 3; ++r)
    encoded.push_back(model.encoder_output(static_cast<int64_t>(r), static_cast<int64_t>(rows.src[r].size())));

  // A prefix of two positions, then one step at a time.
  const int64_t prefix = 2, fork = 5, shrink = 7;
  model.begin_decoding(make_batch(rows, enc_dec, prefix), kLen);
  EXPECT_EQ(model.decoding_rows(), 3);
  EXPECT_EQ(model.decoded_positions(), prefix);
  expect_prefix(model.logits(), full, 3, prefix, "the prefix");
  auto step = [&](const Rows& now, int64_t t) {
    std::vector<int32_t> ids;
    for (const auto& tgt : now.tgt) ids.push_back(tgt[static_cast<size_t>(t)]);
    model.decode_step(ids);
    EXPECT_EQ(model.decoded_positions(), t + 1);
  };
  for (int64_t t = prefix; t < fork; ++t) {
    step(rows, t);
    expect_step(model.logits(), full, 3, t, "before the fork");
  }

  // Five rows from three: repeats, another order, and new ids after the
  // fork for the repeated ones, so each goes on as its own sequence.
  const std::vector<int32_t> from = {2, 0, 0, 1, 2};
  Rows forked;
  for (size_t r = 0; r < from.size(); ++r) {
    forked.src.push_back(rows.src[static_cast<size_t>(from[r])]);
    std::vector<int32_t> tgt = rows.tgt[static_cast<size_t>(from[r])];
    if (r >= 2) {
      const auto fresh = random_ids(rng, kLen - fork, 4, kTgtVocab);
      std::copy(fresh.begin(), fresh.end(), tgt.begin() + fork);
    }
    forked.tgt.push_back(tgt);
  }
  const std::vector<float> forked_full = full_logits(model, forked, enc_dec);
  // The forward ended the decoding; begin again and go to the fork.
  EXPECT_EQ(model.decoded_positions(), 0);
  model.begin_decoding(make_batch(rows, enc_dec, 1), kLen);
  for (int64_t t = 1; t < fork; ++t) step(rows, t);
  model.reorder_decoding(from);
  EXPECT_EQ(model.decoding_rows(), 5);
  for (int64_t t = fork; t < shrink; ++t) {
    step(forked, t);
    expect_step(model.logits(), forked_full, 5, t, "after the fork");
  }

  // Two rows from five.
  const std::vector<int32_t> keep = {4, 1};
  Rows kept;
  for (int32_t r : keep) {
    kept.src.push_back(forked.src[static_cast<size_t>(r)]);
    kept.tgt.push_back(forked.tgt[static_cast<size_t>(r)]);
  }
  const std::vector<float> kept_full = full_logits(model, kept, enc_dec);
  model.begin_decoding(make_batch(rows, enc_dec, 1), kLen);
  for (int64_t t = 1; t < fork; ++t) step(rows, t);
  model.reorder_decoding(from);
  for (int64_t t = fork; t < shrink; ++t) step(forked, t);
  model.reorder_decoding(keep);
  for (int64_t t = shrink; t < kLen; ++t) {
    step(kept, t);
    expect_step(model.logits(), kept_full, 2, t, "after the shrink");
  }
  if (!enc_dec) return;

  // Rows 2 and 1 decoded from the encoder's output of the first forward
  // (there padded to 5 positions, here to 4): the same logits. The same
  // outputs in the wrong rows must give others, or the given output was not
  // read.
  const std::vector<size_t> pick = {2, 1};
  Rows given;
  for (size_t r : pick) {
    given.src.push_back(rows.src[r]);
    given.tgt.push_back(rows.tgt[r]);
  }
  const std::vector<float> given_full = full_logits(model, given, true);
  auto memory_of = [&](const std::vector<size_t>& order) {
    const size_t S = 4, C = static_cast<size_t>(cfg.d_model);
    std::vector<float> m(2 * S * C, 0.0f);
    for (size_t i = 0; i < 2; ++i) {
      const std::vector<float>& e = encoded[order[i]];
      std::copy(e.begin(), e.begin() + static_cast<int64_t>(std::min(e.size(), S * C)),
                m.begin() + static_cast<int64_t>(i * S * C));
    }
    return m;
  };
  model.begin_decoding(make_batch(given, true, prefix), kLen, memory_of(pick));
  const std::vector<float> given_first = model.logits();
  expect_prefix(given_first, given_full, 2, prefix, "the prefix, given the encoder's output");
  for (int64_t t = prefix; t < kLen; ++t) {
    step(given, t);
    expect_step(model.logits(), given_full, 2, t, "given the encoder's output");
  }
  model.begin_decoding(make_batch(given, true, prefix), kLen, memory_of({1, 2}));
  const std::vector<float> swapped = model.logits();
  double most = 0.0;
  for (size_t i = 0; i < swapped.size(); ++i)
    most = std::max(most, std::abs(static_cast<double>(swapped[i]) - given_first[i]));
  EXPECT_GT(most, 1e-3) << "the encoder output given in the wrong rows changed nothing";
}

// An inference forward lays its buffers out otherwise than a train forward
// (two sets of buffers that the sublayers take in turn, no backward scratch;
// Transformer::activation_bytes). With no dropout the two give the same
// logits, bit for bit, whichever ran before, a train forward after an
// inference one of the same shape still has what backward needs, and a
// model of 3 + 3 layers takes less than half the memory for inference.
TEST_P(DecodingTest, InferenceLayoutGivesTheTrainForwardsLogits) {
  PST_TEST_BACKEND_OR_SKIP(be);
  ModelConfig cfg = case_model(GetParam(), 3);
  cfg.dropout = cfg.attention_dropout = cfg.embedding_dropout = 0;
  const bool enc_dec = cfg.kind == ModelKind::kEncoderDecoder;
  Transformer model(cfg, kSrcVocab, kTgtVocab, be.get());
  model.init_weights(3);
  std::mt19937 rng(8);
  const Rows rows = random_rows(rng, {4, 6, 5});
  Batch batch = make_batch(rows, enc_dec, kLen);
  for (size_t r = 0; r < rows.tgt.size(); ++r)  // next-id targets: a loss to take the gradient of
    for (int64_t t = 0; t + 1 < kLen; ++t)
      batch.tgt_out[r * kLen + static_cast<size_t>(t)] = rows.tgt[r][static_cast<size_t>(t + 1)];
  ForwardOptions train;
  train.train = true;
  train.grad_scale = 0.1f;

  const LossStats first = model.forward(batch, train);
  const std::vector<float> train_logits = model.logits();
  const size_t train_bytes = model.activation_bytes();
  const LossStats inference = model.forward(batch, ForwardOptions{});
  EXPECT_EQ(model.logits(), train_logits) << "an inference forward after a train one";
  EXPECT_EQ(inference.loss_sum, first.loss_sum);
  const size_t inference_bytes = model.activation_bytes();
  EXPECT_LT(2 * inference_bytes, train_bytes)
      << inference_bytes << " bytes for inference, " << train_bytes << " for training";

  // The gradient of a train forward that follows an inference forward, against
  // one from a model that only ever ran train forwards.
  model.zero_grads();
  model.forward(batch, train);
  EXPECT_EQ(model.logits(), train_logits) << "a train forward after an inference one";
  model.backward();
  std::vector<float> grads(static_cast<size_t>(model.num_params()));
  model.get_grads(grads.data());
  Transformer fresh(cfg, kSrcVocab, kTgtVocab, be.get());
  fresh.init_weights(3);
  fresh.zero_grads();
  fresh.forward(batch, train);
  fresh.backward();
  std::vector<float> fresh_grads(grads.size());
  fresh.get_grads(fresh_grads.data());
  EXPECT_EQ(grads, fresh_grads);
}

INSTANTIATE_TEST_SUITE_P(
    Models, DecodingTest,
    ::testing::Values(DecodeCase{ModelKind::kEncoderDecoder, NormPlacement::kPost, Positions::kSinusoidal},
                      DecodeCase{ModelKind::kEncoderDecoder, NormPlacement::kPre, Positions::kLearned},
                      DecodeCase{ModelKind::kDecoderOnly, NormPlacement::kPre, Positions::kLearned},
                      DecodeCase{ModelKind::kDecoderOnly, NormPlacement::kDeepNorm, Positions::kSinusoidal},
                      DecodeCase{ModelKind::kEncoderDecoder, NormPlacement::kPre, Positions::kRope, true},
                      DecodeCase{ModelKind::kDecoderOnly, NormPlacement::kPost, Positions::kRope, true}),
    [](const ::testing::TestParamInfo<DecodeCase>& info) {
      std::string name = info.param.kind == ModelKind::kEncoderDecoder ? "EncDec" : "DecOnly";
      name += info.param.norm == NormPlacement::kPre    ? "Pre"
              : info.param.norm == NormPlacement::kPost ? "Post"
                                                        : "Deep";
      name += info.param.modern ? "Modern" : info.param.positions == Positions::kLearned ? "Learned" : "Sinusoidal";
      return name;
    });

}  // namespace
}  // namespace pst
