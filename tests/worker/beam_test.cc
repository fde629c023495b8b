// Beam search (worker/evaluate.h) against two oracles: with beam 1 it is
// greedy decoding, and with a beam wider than every output of up to two ids
// it is exhaustive, so its answer is the brute-force best over all of them,
// scored independently by teacher-forced forward passes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "model/backend.h"
#include "tests/model/fixtures.h"
#include "tests/test_backend.h"
#include "tests/test_util.h"
#include "worker/evaluate.h"

namespace pst {
namespace {

struct Fixture {
  JobConfig job;
  TaskData data;
  std::vector<std::vector<int32_t>> sources;
};

Fixture make_fixture(int words) {
  auto job = load_config(testing::source_path("configs/g2p-tiny.toml"), {});
  PST_CHECK_MSG(job.ok(), "{}", job.status().to_string());
  auto data = load_task_data(*job);
  PST_CHECK_MSG(data.ok(), "{}", data.status().to_string());
  Fixture f{*job, std::move(*data), {}};
  const auto& g = static_cast<const G2PDataset&>(*f.data.valid);
  for (int i = 0; i < words; ++i) f.sources.push_back(g.encode_word(f.data.g2p->valid[static_cast<size_t>(i)].word));
  return f;
}

// log P(ids [, </s>] | source) of each of `outputs`, by teacher-forced
// forward passes (one per source; rows padded, which the causal decoder
// does not see): the </s> term only for outputs shorter than max_out
// (decoding stops there).
std::vector<double> log_probs(Transformer& model, const std::vector<int32_t>& source,
                              const std::vector<std::vector<int32_t>>& outputs, int64_t max_out) {
  const int64_t V = model.tgt_vocab();
  const int64_t B = static_cast<int64_t>(outputs.size());
  Batch b;
  b.B = B;
  b.S = static_cast<int64_t>(source.size());
  b.T = 1;
  for (const auto& ids : outputs) b.T = std::max<int64_t>(b.T, static_cast<int64_t>(ids.size()) + 1);
  b.tgt_in.assign(static_cast<size_t>(B * b.T), kPadId);
  b.tgt_out.assign(static_cast<size_t>(B * b.T), kIgnoreTarget);
  for (int64_t r = 0; r < B; ++r) {
    b.src.insert(b.src.end(), source.begin(), source.end());
    b.src_len.push_back(static_cast<int32_t>(source.size()));
    b.tgt_in[static_cast<size_t>(r * b.T)] = 1;
    std::copy(outputs[r].begin(), outputs[r].end(), b.tgt_in.begin() + r * b.T + 1);
    b.tgt_len.push_back(static_cast<int32_t>(outputs[r].size()) + 1);
  }
  model.forward(b, ForwardOptions{});
  const std::vector<float> logits = model.logits();
  std::vector<double> out;
  for (int64_t r = 0; r < B; ++r) {
    const auto& ids = outputs[r];
    const int64_t n = static_cast<int64_t>(ids.size());
    double total = 0.0;
    for (int64_t t = 0; t < (n < max_out ? n + 1 : n); ++t) {
      const float* row = logits.data() + (r * b.T + t) * V;
      double sum = 0.0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v]));
      total += static_cast<double>(row[t < n ? ids[static_cast<size_t>(t)] : 2]) - std::log(sum);
    }
    out.push_back(total);
  }
  return out;
}

TEST(BeamSearchTest, BeamOfOneIsGreedyDecoding) {
  Fixture f = make_fixture(24);
  PST_TEST_BACKEND_OR_SKIP(be);
  Transformer model(f.job.model, f.data.src_vocab, f.data.tgt_vocab, be.get());
  for (uint64_t seed : {3, 4}) {
    model.init_weights(seed);
    const auto greedy = greedy_decode(model, f.sources, 12);
    for (double alpha : {0.0, 0.6, 1.0}) {
      const auto beam = beam_decode(model, f.sources, 12, DecodeOptions{1, alpha});
      ASSERT_EQ(beam.size(), greedy.size());
      for (size_t i = 0; i < beam.size(); ++i) EXPECT_EQ(beam[i].ids, greedy[i]) << "word " << i << " alpha " << alpha;
    }
  }
}

TEST(BeamSearchTest, AWideBeamFindsTheBestOutputOfAll) {
  Fixture f = make_fixture(4);
  PST_TEST_BACKEND_OR_SKIP(be);
  Transformer model(f.job.model, f.data.src_vocab, f.data.tgt_vocab, be.get());
  // Random weights, doubled, so outputs differ clearly in probability; then
  // the same with </s> just ahead of every other id after the first step of
  // source 0, so that the search must look past a finished output that
  // leads (a longer one may rank first once divided by its length penalty).
  std::vector<float> w(static_cast<size_t>(model.num_params()));
  init_params(model.table(), 5, w.data());
  for (float& x : w) x *= 2.0f;
  const size_t eos_bias = static_cast<size_t>(model.table().offset_of("output.bias") + 2);
  for (bool eos_leads : {false, true}) {
    if (eos_leads) {
      model.set_weights(w.data());
      greedy_decode(model, {f.sources[0]}, 1);  // one step: the logits after <s>, (1, V)
      const std::vector<float> first = model.logits();
      ASSERT_EQ(first.size(), static_cast<size_t>(model.tgt_vocab()));
      const float top = *std::max_element(first.begin() + 4, first.end());
      w[eos_bias] += top - first[2] + 0.05f;
    }
    model.set_weights(w.data());
    const int64_t max_out = 2;
    const int32_t V = static_cast<int32_t>(model.tgt_vocab());
    // Every output of at most max_out non-special ids.
    std::vector<std::vector<int32_t>> all = {{}};
    for (int32_t a = 4; a < V; ++a) {
      all.push_back({a});
      for (int32_t c = 4; c < V; ++c) all.push_back({a, c});
    }
    std::vector<std::vector<double>> lps;
    for (const auto& src : f.sources) lps.push_back(log_probs(model, src, all, max_out));
    // Wider than the 30 * 29 extensions of the second step: nothing is pruned
    // but by the bound.
    const int64_t wide = 900;
    for (double alpha : {0.0, 0.5, 1.0, 2.0}) {
      const auto beam = beam_decode(model, f.sources, max_out, DecodeOptions{wide, alpha});
      for (size_t s = 0; s < f.sources.size(); ++s) {
        size_t best = 0;
        std::vector<double> scores;
        for (size_t i = 0; i < all.size(); ++i) {
          const int64_t n = static_cast<int64_t>(all[i].size());
          scores.push_back(lps[s][i] / std::pow(static_cast<double>(n < max_out ? n + 1 : n), alpha));
          if (scores[i] > scores[best]) best = i;
        }
        const size_t mine = static_cast<size_t>(std::find(all.begin(), all.end(), beam[s].ids) - all.begin());
        ASSERT_LT(mine, all.size());
        EXPECT_NEAR(beam[s].log_prob, lps[s][mine], 1e-4) << "source " << s;
        // The brute-force best, or one within float noise of it.
        EXPECT_NEAR(scores[mine], scores[best], 1e-5)
            << "source " << s << " alpha " << alpha << (eos_leads ? " (</s> leads)" : "");
      }
    }
  }
}

// evaluate() with beam 1 writes greedy decoding's predictions and metrics;
// with beam 4 it decodes and writes every word; the teacher-forced loss does
// not depend on decoding.
TEST(BeamSearchTest, EvaluateDecodesEveryWordWithABeam) {
  auto job = load_config(testing::source_path("configs/g2p-tiny.toml"), {});
  ASSERT_TRUE(job.ok());
  auto data = load_task_data(*job);
  ASSERT_TRUE(data.ok());
  PST_TEST_BACKEND_OR_SKIP(be);
  Transformer model(job->model, data->src_vocab, data->tgt_vocab, be.get());
  model.init_weights(6);
  std::vector<std::string> greedy_lines, beam1_lines, beam4_lines;
  const EvalResult g = evaluate(model, *data, Split::kValid, 16, 30, &greedy_lines);
  const EvalResult b1 = evaluate(model, *data, Split::kValid, 16, 30, &beam1_lines, DecodeOptions{1, 1.0});
  const EvalResult b4 = evaluate(model, *data, Split::kValid, 16, 30, &beam4_lines, DecodeOptions{4, 1.0});
  EXPECT_EQ(greedy_lines, beam1_lines);
  EXPECT_EQ(g.wer, b1.wer);
  EXPECT_EQ(b4.words, 30);
  EXPECT_EQ(beam4_lines.size(), 30u);
  EXPECT_EQ(b4.loss, g.loss);  // teacher-forced, not decoded
}

}  // namespace
}  // namespace pst

namespace pst {
namespace {

// A model that can never emit </s> (its output bias for it is -1e4) decodes
// each word to exactly its own limit, 2 x letters + 5, greedy and beam
// alike; before, every word of a batch ran to the batch's longest.
TEST(DecodeLimitTest, EveryWordStopsAtItsOwnLimit) {
  Fixture f = make_fixture(16);
  PST_TEST_BACKEND_OR_SKIP(be);
  Transformer model(f.job.model, f.data.src_vocab, f.data.tgt_vocab, be.get());
  model.init_weights(5);
  std::vector<float> w(static_cast<size_t>(model.num_params()));
  model.get_weights(w.data());
  w[static_cast<size_t>(model.table().offset_of("output.bias") + 2)] = -1e4f;
  model.set_weights(w.data());
  const std::vector<int64_t> limits = g2p_output_limits(f.sources);
  for (size_t i = 0; i < f.sources.size(); ++i)
    EXPECT_EQ(limits[i], 2 * (static_cast<int64_t>(f.sources[i].size()) - 1) + 5);
  const auto greedy = greedy_decode(model, f.sources, limits);
  const auto beam = beam_decode(model, f.sources, limits, DecodeOptions{3, 1.0});
  for (size_t i = 0; i < f.sources.size(); ++i) {
    const int64_t want = std::min<int64_t>(limits[i], f.job.model.max_len - 1);
    EXPECT_EQ(static_cast<int64_t>(greedy[i].size()), want) << "greedy, word " << i;
    EXPECT_EQ(static_cast<int64_t>(beam[i].ids.size()), want) << "beam, word " << i;
  }
}

// Evaluation decodes words in order of length; the predictions keep the
// split's order. (Each equals decoding its word alone here; on another CPU a
// near tie may round another way in a batch of another shape, so that is
// shown, not promised: a second evaluation must give the same lines.)
TEST(DecodeLimitTest, PredictionsKeepTheSplitsOrder) {
  Fixture f = make_fixture(40);
  PST_TEST_BACKEND_OR_SKIP(be);
  Transformer model(f.job.model, f.data.src_vocab, f.data.tgt_vocab, be.get());
  model.init_weights(6);
  std::vector<std::string> lines;
  const EvalResult r = evaluate(model, f.data, Split::kValid, 16, 40, &lines);
  ASSERT_EQ(r.words, 40);
  ASSERT_EQ(lines.size(), 40u);
  const auto& words = f.data.g2p->valid;
  int alone_equal = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    ASSERT_EQ(lines[i].substr(0, lines[i].find('\t')), words[i].word) << "line " << i;
    const auto alone = greedy_decode(model, {f.sources[i]}, g2p_output_limits({f.sources[i]}));
    std::string phones;
    for (int32_t id : alone[0]) phones += (phones.empty() ? "" : " ") + f.data.g2p->phones.token(id);
    alone_equal += lines[i] == words[i].word + "\t" + phones ? 1 : 0;
  }
  EXPECT_GE(alone_equal, 36) << "predictions are not those of their own words";
  std::vector<std::string> again;
  evaluate(model, f.data, Split::kValid, 16, 40, &again);
  EXPECT_EQ(again, lines);
}

// The limit never cuts off a right answer: every pronunciation in CMUdict
// fits its word's limit.
TEST(DecodeLimitTest, EveryCmudictPronunciationFits) {
  auto job = load_config(testing::source_path("configs/g2p-small.toml"), {});
  ASSERT_TRUE(job.ok());
  auto data = load_task_data(*job);
  ASSERT_TRUE(data.ok()) << data.status().to_string();
  int64_t prons = 0;
  for (const auto* split : {&data->g2p->train, &data->g2p->valid, &data->g2p->test})
    for (const G2PWord& w : *split)
      for (const auto& p : w.prons) {
        ++prons;
        EXPECT_LE(static_cast<int64_t>(p.size()), g2p_output_limit(static_cast<int64_t>(w.word.size()))) << w.word;
      }
  EXPECT_GT(prons, 100000);
}

}  // namespace
}  // namespace pst

namespace pst {
namespace {

// Random weights, doubled, so that outputs vary and logits are far apart.
void set_doubled_weights(Transformer& model, uint64_t seed) {
  std::vector<float> w(static_cast<size_t>(model.num_params()));
  init_params(model.table(), seed, w.data());
  for (float& x : w) x *= 2.0f;
  model.set_weights(w.data());
}

// The logits after `prefix` (<s> first) of a teacher-forced forward over it.
std::vector<float> next_logits(Transformer& model, const std::vector<int32_t>& source,
                               const std::vector<int32_t>& prefix) {
  Batch b;
  b.B = 1;
  b.S = static_cast<int64_t>(source.size());
  b.T = static_cast<int64_t>(prefix.size());
  b.src = source;
  b.src_len = {static_cast<int32_t>(source.size())};
  b.tgt_in = prefix;
  b.tgt_out.assign(prefix.size(), kIgnoreTarget);
  b.tgt_len = {static_cast<int32_t>(prefix.size())};
  model.forward(b, ForwardOptions{});
  const std::vector<float> all = model.logits();
  return std::vector<float>(all.end() - model.tgt_vocab(), all.end());
}

// The decoder that keeps its keys and values (DecodeOptions::cache) gives
// the outputs of the one that re-runs every prefix, on 180 words, greedy and
// with a beam. The two sum in other orders, so a near tie could round
// either way on another CPU: where outputs part, the test asks the uncached
// logits to show such a tie there (greedy) or the scores to agree (beam).
TEST(DecodeCacheTest, CachedDecodingGivesTheUncachedOutputs) {
  Fixture f = make_fixture(180);
  PST_TEST_BACKEND_OR_SKIP(be);
  Transformer model(f.job.model, f.data.src_vocab, f.data.tgt_vocab, be.get());
  set_doubled_weights(model, 9);
  int ties = 0, same = 0, lengths = 0;
  for (size_t first = 0; first < f.sources.size(); first += 60) {
    const std::vector<std::vector<int32_t>> srcs(f.sources.begin() + static_cast<int64_t>(first),
                                                 f.sources.begin() + static_cast<int64_t>(first + 60));
    const std::vector<int64_t> limits = g2p_output_limits(srcs);
    const auto cached = greedy_decode(model, srcs, limits, true);
    const auto uncached = greedy_decode(model, srcs, limits, false);
    for (size_t i = 0; i < srcs.size(); ++i) {
      lengths += static_cast<int>(uncached[i].size());
      if (cached[i] == uncached[i]) {
        ++same;
        continue;
      }
      size_t j = 0;
      while (j < cached[i].size() && j < uncached[i].size() && cached[i][j] == uncached[i][j]) ++j;
      std::vector<int32_t> prefix = {1};
      prefix.insert(prefix.end(), uncached[i].begin(), uncached[i].begin() + static_cast<int64_t>(j));
      const std::vector<float> row = next_logits(model, srcs[i], prefix);
      const int32_t a = j < cached[i].size() ? cached[i][j] : 2, b = j < uncached[i].size() ? uncached[i][j] : 2;
      EXPECT_NEAR(row[static_cast<size_t>(a)], row[static_cast<size_t>(b)], 1e-4)
          << "word " << first + i << " parts at output " << j << " without a tie";
      ++ties;
    }
    for (double alpha : {0.0, 1.0}) {
      const auto beam_cached = beam_decode(model, srcs, limits, DecodeOptions{4, alpha, true});
      const auto beam_uncached = beam_decode(model, srcs, limits, DecodeOptions{4, alpha, false});
      for (size_t i = 0; i < srcs.size(); ++i) {
        EXPECT_NEAR(beam_cached[i].log_prob, beam_uncached[i].log_prob, 1e-4) << "word " << first + i;
        if (beam_cached[i].ids == beam_uncached[i].ids) {
          ++same;
        } else {
          EXPECT_NEAR(beam_cached[i].score, beam_uncached[i].score, 1e-4) << "word " << first + i;
          ++ties;
        }
      }
    }
  }
  EXPECT_GT(lengths, 300) << "outputs too short to test the cache";
  EXPECT_LE(ties, 3) << same << " outputs equal";
}

// Greedy evaluation takes a word's output from the teacher-forced pass when
// the pass shows it (DecodeOptions::from_scoring). The oracle is greedy
// decoding itself: two thirds of 90 words get a reference set to their
// greedy output (in first or last place), the rest one set to that output
// without its last phone, and exactly the words whose greedy output ends
// with </s> before the limit and equals a reference must be shown. Every
// prediction and rate must be those of decoding every word, and so must
// those of the words left, decoded from the encoder output the pass kept
// (all of it, or only a few words': the rest from their letters). (A near
// tie may round another way on another CPU: one word may differ.)
TEST(DecodeCacheTest, ScoringShowsGreedysOutputOfWordsItPredicts) {
  Fixture f = make_fixture(90);
  PST_TEST_BACKEND_OR_SKIP(be);
  Transformer model(f.job.model, f.data.src_vocab, f.data.tgt_vocab, be.get());
  set_doubled_weights(model, 9);
  // Most outputs of these weights run to their limit; a </s> bias 3 higher
  // ends 53 of the 90 before it here.
  std::vector<float> w(static_cast<size_t>(model.num_params()));
  model.get_weights(w.data());
  w[static_cast<size_t>(model.table().offset_of("output.bias") + 2)] += 3.0f;
  model.set_weights(w.data());
  const std::vector<int64_t> limits = g2p_output_limits(f.sources);
  const auto greedy = greedy_decode(model, f.sources, limits);
  auto& words = f.data.g2p->valid;
  int64_t want_shown = 0, stopped = 0;
  for (size_t i = 0; i < f.sources.size(); ++i) {
    std::vector<std::string> phones;
    for (int32_t id : greedy[i]) phones.push_back(f.data.g2p->phones.token(id));
    auto& prons = words[i].prons;
    if (i % 3 == 0) prons.front() = phones;
    if (i % 3 == 1) prons.back() = phones;  // the only one of most words
    // Greedy's output without its last phone: right up to the </s>, which
    // greedy does not choose there.
    if (i % 3 == 2 && !phones.empty()) prons.front().assign(phones.begin(), phones.end() - 1);
    const bool ended = static_cast<int64_t>(greedy[i].size()) < limits[i];
    stopped += ended ? 1 : 0;
    if (ended && std::find(prons.begin(), prons.end(), phones) != prons.end()) ++want_shown;
  }
  ASSERT_GE(want_shown, 25) << "too few greedy outputs end before their limit";
  ASSERT_LT(stopped, 90) << "every output ends: the limit case is not tested";
  std::vector<std::string> shown_lines, all_lines;
  DecodeOptions all;
  all.from_scoring = false;
  const EvalResult shown = evaluate(model, f.data, Split::kValid, 16, 90, &shown_lines);
  const EvalResult every = evaluate(model, f.data, Split::kValid, 16, 90, &all_lines, all);
  EXPECT_EQ(every.shown_words, 0);
  EXPECT_NEAR(static_cast<double>(shown.shown_words), static_cast<double>(want_shown), 1.0);
  ASSERT_EQ(shown_lines.size(), 90u);
  ASSERT_EQ(all_lines.size(), 90u);
  int differ = 0;
  for (size_t i = 0; i < 90; ++i) differ += shown_lines[i] != all_lines[i] ? 1 : 0;
  EXPECT_LE(differ, 1);
  if (differ == 0) {
    EXPECT_EQ(shown.shown_words, want_shown);
    EXPECT_EQ(shown.wer, every.wer);
    EXPECT_EQ(shown.per, every.per);
  }
  EXPECT_EQ(shown.loss, every.loss);
  // The words left are decoded from the pass's encoder output; with room
  // for 200 positions' (the longest words', about a batch), batches of words
  // without it run the encoder again.
  DecodeOptions little;
  little.kept_encoder_bytes = 200 * f.job.model.d_model * static_cast<int64_t>(sizeof(float));
  std::vector<std::string> little_lines;
  evaluate(model, f.data, Split::kValid, 16, 90, &little_lines, little);
  int little_differ = 0;
  for (size_t i = 0; i < 90; ++i) little_differ += little_lines[i] != all_lines[i] ? 1 : 0;
  EXPECT_LE(little_differ, 1);
  // Beam search and the uncached reference decode every word.
  EXPECT_EQ(evaluate(model, f.data, Split::kValid, 16, 90, nullptr, DecodeOptions{2, 1.0}).shown_words, 0);
  EXPECT_EQ(evaluate(model, f.data, Split::kValid, 16, 90, nullptr, DecodeOptions{1, 1.0, false}).shown_words, 0);
}

// Continuations of a decoder-only model: the cache is used until the
// context fills the model's positions, then every byte is a whole forward
// over the last max_len bytes (as without it).
TEST(DecodeCacheTest, GeneratedBytesAreTheUncachedOnes) {
  PST_TEST_BACKEND_OR_SKIP(be);
  ModelConfig cfg = testing::tiny_model(ModelKind::kDecoderOnly, NormPlacement::kPre);
  cfg.d_model = 32;
  cfg.ffn_dim = 64;
  cfg.max_len = 24;
  Transformer model(cfg, 0, 256, be.get());
  set_doubled_weights(model, 4);
  for (const std::string prompt :
       {"", "the quick brown fox", "a prompt longer than the model's twenty-four positions"}) {
    const std::vector<int32_t> p(prompt.begin(), prompt.end());
    const auto cached = generate_ids(model, p, 40, true);
    const auto uncached = generate_ids(model, p, 40, false);
    ASSERT_EQ(cached.size(), 40u);
    size_t j = 0;
    while (j < cached.size() && cached[j] == uncached[j]) ++j;
    if (j == cached.size()) continue;
    // Parted: only at a tie of the uncached logits.
    std::vector<int32_t> ctx(p.begin(), p.end());
    if (ctx.empty()) ctx.push_back('\n');
    ctx.insert(ctx.end(), uncached.begin(), uncached.begin() + static_cast<int64_t>(j));
    const Batch b = last_window(ctx, cfg.max_len);
    model.forward(b, ForwardOptions{});
    const std::vector<float> logits = model.logits();
    const float* row = logits.data() + (b.T - 1) * 256;
    EXPECT_NEAR(row[cached[j]], row[uncached[j]], 1e-4) << "'" << prompt << "' parts at byte " << j;
  }
}

}  // namespace
}  // namespace pst
