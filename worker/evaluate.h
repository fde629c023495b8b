// Evaluation of a model on a split: teacher-forced loss and token accuracy,
// plus the task's own metrics. G2P (docs/design.md, Data): greedy decoding, phone
// error rate = sum of edit distances to the closest reference / sum of that
// reference's lengths, word error rate = share of words whose prediction
// matches none of their references. LM: loss per byte, bits per byte,
// perplexity.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/g2p.h"
#include "model/transformer.h"
#include "worker/task_data.h"

namespace pst {

struct EvalResult {
  int64_t examples = 0;
  int64_t tokens = 0;
  double loss = 0.0;            // mean per target token, nats, no label smoothing
  double token_accuracy = 0.0;  // teacher-forced argmax == target
  // g2p
  int64_t words = 0;
  double per = 0.0;
  double wer = 0.0;
  // lm
  double bits_per_byte = 0.0;
  double perplexity = 0.0;
  bool stopped = false;  // a stop was asked for: the figures cover part of the split
  // Wall time of the teacher-forced pass and of decoding (G2P).
  double scoring_seconds = 0.0;
  double decoding_seconds = 0.0;
  // The sums the rates above divide, so that results merge.
  double loss_sum = 0.0;  // nats over `tokens`
  int64_t bytes = 0;      // lm: the bytes of text the scored tokens stand for
  int64_t correct = 0;    // teacher-forced argmax == target
  int64_t distance = 0;   // g2p: edit distances to the closest references
  int64_t ref_length = 0;
  int64_t wrong = 0;  // g2p: words matching no reference
  // g2p, greedy: words not decoded, their output shown by the teacher-forced
  // pass (DecodeOptions::from_scoring)
  int64_t shown_words = 0;
};

// The figures of evaluations of disjoint sets as one of their union.
EvalResult merge_evals(const std::vector<EvalResult>& parts);

// One line of the task's metrics, as the training log prints them.
std::string describe_eval(Task task, const EvalResult& r);

// How G2P words are decoded: greedy (beam 1) or beam search.
struct DecodeOptions {
  int64_t beam = 1;
  // Beam search ranks finished hypotheses by log P(y | x) / |y|^alpha, |y|
  // counting </s> (as Hugging Face's length_penalty and fairseq's lenpen):
  // 0 is the plain log-probability, which favours short outputs; 1 the
  // mean per token. Must be >= 0.
  double length_penalty = 1.0;
  // Keep each decoder layer's keys and values from step to step, so that a
  // step computes one position (Transformer::begin_decoding). false re-runs
  // the decoder over the whole prefix at every step: the reference the
  // cache is tested against, and the baseline of bench/decode.sh.
  bool cache = true;
  // Greedy with the cache: a word is not decoded when the teacher-forced
  // pass, which scores every reference pronunciation anyway, shows greedy's
  // output: for one of its references, greedy's choice from the logits at
  // each position is the reference's next phone and then </s> (within the
  // word's output limit). Greedy decoding would compute the same logits
  // step by step (up to float rounding) and make the same choices. The
  // words left are decoded from the encoder output the pass computed for
  // them, up to kept_encoder_bytes of it (the rest run the encoder again).
  // false decodes every word from its letters (--decode-all).
  bool from_scoring = true;
  int64_t kept_encoder_bytes = int64_t{256} << 20;
};

// max_examples = 0 evaluates the whole split (for G2P: the first N words).
// predictions, if not null, receives one "word<TAB>phones" line per word.
// A stop (core/stop.h) ends it at the next batch, with `stopped` set. Every
// 10 s of a long evaluation a log line says how far it has come.
EvalResult evaluate(Transformer& model, const TaskData& data, Split split, int64_t batch_size, int64_t max_examples,
                    std::vector<std::string>* predictions = nullptr, const DecodeOptions& decode = {});

// The most phones decoded for a word of this many letters: 2 x letters + 5
// (every CMUdict pronunciation fits; "w" has 7 phones). A model that never
// emits </s> stops there instead of at the model's max_len.
int64_t g2p_output_limit(int64_t letters);
// g2p_output_limit of each source (ids ending in </s>).
std::vector<int64_t> g2p_output_limits(const std::vector<std::vector<int32_t>>& sources);

// Greedy decoding of an encoder-decoder model: for each source (ids ending in
// </s>), the target ids up to but excluding </s>, at most max_out of them
// (one limit for all, or one per source; never past the model's max_len).
// cache as in DecodeOptions.
std::vector<std::vector<int32_t>> greedy_decode(Transformer& model, const std::vector<std::vector<int32_t>>& sources,
                                                const std::vector<int64_t>& max_out, bool cache = true);
std::vector<std::vector<int32_t>> greedy_decode(Transformer& model, const std::vector<std::vector<int32_t>>& sources,
                                                int64_t max_out, bool cache = true);

// A decoded output: its ids (without </s>), log P(ids, </s> | source) (no
// </s> term when it stopped at max_out), and that divided by the length
// penalty.
struct Hypothesis {
  std::vector<int32_t> ids;
  double log_prob = 0.0;
  double score = 0.0;
};

// Beam search: each step extends the `beam` live hypotheses of a source by
// every token (</s> or a non-special one), keeps the `beam` best extensions
// by log-probability, and sets those ending in </s> aside as finished (the
// beam narrows; with beam 1 this is greedy decoding, ties included). A
// hypothesis of max_out ids finishes there. It stops once no live
// hypothesis can beat the best finished one (log-probabilities only fall as
// outputs grow), and returns that one per source.
std::vector<Hypothesis> beam_decode(Transformer& model, const std::vector<std::vector<int32_t>>& sources,
                                    const std::vector<int64_t>& max_out, const DecodeOptions& options);
std::vector<Hypothesis> beam_decode(Transformer& model, const std::vector<std::vector<int32_t>>& sources,
                                    int64_t max_out, const DecodeOptions& options);

// The decoder-only batch of one row: the last `window` of `ids` (all when
// fewer), no targets.
Batch last_window(const std::vector<int32_t>& ids, int64_t window);

// How generation picks each next token. Temperature 0 is greedy (the
// argmax). Otherwise, as Hugging Face's sampling does: the logits divided by
// the temperature, then only the top_k most probable tokens (0: all), then
// only the fewest most probable whose probabilities sum to at least top_p
// (1: all); the softmax over those is sampled. Ties in probability rank by
// token id. Draws come from Philox (seed, stream), one per token generated,
// so a seed gives the same text on every machine for the same logits.
struct Sampling {
  double temperature = 0.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  uint64_t seed = 1;
  uint64_t stream = 0;  // e.g. the prompt's index
};

// The probabilities sample_token draws from, over all V tokens (0 outside
// the kept ones); temperature 0 puts 1 on the argmax.
std::vector<double> sampling_distribution(const float* logits, int64_t V, const Sampling& s);
// The token for a uniform draw u in [0, 1): the first token id whose
// cumulative probability (in id order) exceeds u.
int32_t sample_token(const float* logits, int64_t V, const Sampling& s, float u);

// Continuation of a prompt of token ids by a decoder-only model: up to
// `count` tokens, each from the last max_len, picked as `sampling` says
// (greedy by default), ending early once `done` (if given) says so of the
// tokens so far; with the cache, a step costs one position until the
// context fills the model's positions. An empty prompt starts from `start`.
std::vector<int32_t> generate_ids(Transformer& model, const std::vector<int32_t>& prompt, int64_t count,
                                  bool cache = true, const Sampling& sampling = {}, int32_t start = '\n',
                                  const std::function<bool(const std::vector<int32_t>&)>& done = nullptr);
// The continuation of a text prompt: tokens until their text has at least
// `bytes` bytes (bytes tokenizer: exactly `bytes` tokens).
std::string generate_text(Transformer& model, const Tokenizer& tokenizer, const std::string& prompt, int64_t bytes,
                          bool cache = true, const Sampling& sampling = {});

// Levenshtein distance between two token sequences.
int64_t edit_distance(const std::vector<std::string>& a, const std::vector<std::string>& b);

// PER/WER bookkeeping for one predicted word against its references.
struct WordScore {
  int64_t distance = 0;    // to the closest reference
  int64_t ref_length = 0;  // length of that reference
  bool correct = false;    // matches some reference exactly
};
WordScore score_word(const std::vector<std::string>& predicted,
                     const std::vector<std::vector<std::string>>& references);

}  // namespace pst
