#include "worker/evaluate.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/philox.h"
#include "core/stop.h"
#include "core/timer.h"
#include "data/vocab.h"

namespace pst {

int64_t edit_distance(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<int64_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = static_cast<int64_t>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = static_cast<int64_t>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int64_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

WordScore score_word(const std::vector<std::string>& predicted,
                     const std::vector<std::vector<std::string>>& references) {
  WordScore best;
  bool first = true;
  for (const auto& ref : references) {
    const int64_t d = edit_distance(predicted, ref);
    // Closest reference; among equally close ones the shorter, so PER is not
    // flattered by a long reference.
    if (first || d < best.distance || (d == best.distance && static_cast<int64_t>(ref.size()) < best.ref_length)) {
      best.distance = d;
      best.ref_length = static_cast<int64_t>(ref.size());
      first = false;
    }
    if (d == 0) best.correct = true;
  }
  return best;
}

int64_t g2p_output_limit(int64_t letters) { return 2 * letters + 5; }

std::vector<int64_t> g2p_output_limits(const std::vector<std::vector<int32_t>>& sources) {
  std::vector<int64_t> limits;
  for (const auto& s : sources)
    limits.push_back(g2p_output_limit(std::max<int64_t>(0, static_cast<int64_t>(s.size()) - 1)));
  return limits;
}

namespace {

// Each source's limit, at least 1 and at most the model's max_len - 1.
std::vector<int64_t> clamp_limits(const Transformer& model, std::vector<int64_t> limits, size_t sources) {
  PST_CHECK_MSG(limits.size() == sources, "{} output limits for {} sources", limits.size(), sources);
  for (int64_t& l : limits) l = std::max<int64_t>(1, std::min<int64_t>(l, model.config().max_len - 1));
  return limits;
}

// The batch of `sources` (ids ending in </s>, padded), each repeated
// `copies` times in a row, with `<s>` as every row's decoder input.
Batch source_batch(const std::vector<std::vector<int32_t>>& sources, int64_t copies) {
  Batch batch;
  batch.B = static_cast<int64_t>(sources.size()) * copies;
  batch.T = 1;
  for (const auto& s : sources) batch.S = std::max<int64_t>(batch.S, static_cast<int64_t>(s.size()));
  batch.src.assign(static_cast<size_t>(batch.B * batch.S), kPadId);
  for (int64_t r = 0; r < batch.B; ++r) {
    const auto& s = sources[static_cast<size_t>(r / copies)];
    std::copy(s.begin(), s.end(), batch.src.begin() + r * batch.S);
    batch.src_len.push_back(static_cast<int32_t>(s.size()));
  }
  batch.tgt_in.assign(static_cast<size_t>(batch.B), 1);  // <s>
  batch.tgt_out.assign(static_cast<size_t>(batch.B), kIgnoreTarget);
  batch.tgt_len.assign(static_cast<size_t>(batch.B), 1);
  return batch;
}

// Greedy's choice from a row of logits: </s> or the best non-special id (the
// first among equals).
int32_t greedy_choice(const float* row, int64_t V) {
  int32_t best = 2;
  for (int32_t v = 4; v < V; ++v)
    if (row[v] > row[best]) best = v;
  return best;
}

// Greedy decoding that runs the decoder over every row's whole prefix at each
// step: the reference the cached decoder is tested against.
std::vector<std::vector<int32_t>> greedy_uncached(Transformer& model, const std::vector<std::vector<int32_t>>& sources,
                                                  const std::vector<int64_t>& limit) {
  const int64_t B = static_cast<int64_t>(sources.size());
  const int64_t V = model.tgt_vocab();
  int64_t max_out = 0;
  for (int64_t l : limit) max_out = std::max(max_out, l);
  Batch batch = source_batch(sources, 1);
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(B));
  std::vector<bool> done(static_cast<size_t>(B), false);
  std::vector<std::vector<int32_t>> prefix(static_cast<size_t>(B), std::vector<int32_t>{1});  // <s>
  ForwardOptions opt;
  for (int64_t t = 1; t <= max_out + 1; ++t) {
    batch.T = t;
    batch.tgt_in.assign(static_cast<size_t>(B * t), kPadId);
    batch.tgt_out.assign(static_cast<size_t>(B * t), kIgnoreTarget);
    batch.tgt_len.assign(static_cast<size_t>(B), static_cast<int32_t>(t));
    for (int64_t b = 0; b < B; ++b) std::copy(prefix[b].begin(), prefix[b].end(), batch.tgt_in.begin() + b * t);
    model.forward(batch, opt);
    opt.reuse_encoder = true;  // the source is the same at every step
    const std::vector<float> logits = model.logits();
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      const int32_t best = greedy_choice(logits.data() + ((b * t) + (t - 1)) * V, V);
      if (best == 2 || t == limit[b] + 1) {
        done[b] = true;
        continue;
      }
      out[b].push_back(best);
      prefix[b].push_back(best);
      all_done = false;
    }
    if (all_done) break;
  }
  return out;
}

// Greedy decoding's output for row r of a teacher-forced batch, when its
// logits show that it is the row's reference: at every position greedy's
// choice is the reference's next id, the last one </s>, and the reference
// is shorter than the row's output limit (greedy reaches the </s>). Nothing
// otherwise. The logits of a position are those a decoding step computes
// for the same prefix, up to float rounding (the sums run over other shapes).
std::optional<std::vector<int32_t>> greedy_shown(const Transformer& model, const Batch& b,
                                                 const std::vector<float>& logits, int64_t r) {
  const int64_t V = model.tgt_vocab();
  const int64_t len = b.tgt_len[static_cast<size_t>(r)];
  const int32_t* target = b.tgt_out.data() + r * b.T;
  if (len < 1 || target[len - 1] != Vocabulary::kEos) return std::nullopt;
  const int64_t letters = b.src_len[static_cast<size_t>(r)] - 1;
  if (len - 1 >= clamp_limits(model, {g2p_output_limit(letters)}, 1)[0]) return std::nullopt;
  for (int64_t t = 0; t < len; ++t)
    if (greedy_choice(logits.data() + (r * b.T + t) * V, V) != target[t]) return std::nullopt;
  return std::vector<int32_t>(target, target + len - 1);
}

// The (words, S, C) encoder output of `words` for begin_decoding: each one's
// kept positions, zeros up to the longest.
std::vector<float> padded_encoder_output(const std::vector<std::vector<float>>& encoded,
                                         const std::vector<int64_t>& words, int64_t C) {
  size_t S = 0;
  for (int64_t w : words) S = std::max(S, encoded[static_cast<size_t>(w)].size() / static_cast<size_t>(C));
  std::vector<float> out(words.size() * S * static_cast<size_t>(C), 0.0f);
  for (size_t i = 0; i < words.size(); ++i) {
    const std::vector<float>& e = encoded[static_cast<size_t>(words[i])];
    std::copy(e.begin(), e.end(), out.begin() + static_cast<int64_t>(i * S * static_cast<size_t>(C)));
  }
  return out;
}

int64_t largest(const std::vector<int64_t>& v) {
  int64_t m = 1;
  for (int64_t x : v) m = std::max(m, x);
  return m;
}

}  // namespace

std::vector<std::vector<int32_t>> greedy_decode(Transformer& model, const std::vector<std::vector<int32_t>>& sources,
                                                int64_t max_out, bool cache) {
  return greedy_decode(model, sources, std::vector<int64_t>(sources.size(), max_out), cache);
}

namespace {

// Greedy decoding with the cache, limits clamped; the encoder's output
// given (begin_decoding's layout) or computed.
std::vector<std::vector<int32_t>> greedy_cached(Transformer& model, const std::vector<std::vector<int32_t>>& sources,
                                                const std::vector<int64_t>& limit,
                                                const std::vector<float>* encoder_output) {
  const int64_t V = model.tgt_vocab();
  std::vector<std::vector<int32_t>> out(sources.size());
  if (sources.empty()) return out;
  // A row's t-th step needs t positions, and steps go on while t <= limit.
  if (encoder_output) {
    model.begin_decoding(source_batch(sources, 1), largest(limit), *encoder_output);
  } else {
    model.begin_decoding(source_batch(sources, 1), largest(limit));
  }
  std::vector<int64_t> source_of(sources.size());  // decoding row -> source
  std::iota(source_of.begin(), source_of.end(), 0);
  for (int64_t t = 1;; ++t) {
    const std::vector<float> logits = model.logits();
    std::vector<int32_t> keep, next;
    std::vector<int64_t> kept;
    for (size_t r = 0; r < source_of.size(); ++r) {
      const int64_t b = source_of[r];
      const int32_t best = greedy_choice(logits.data() + static_cast<int64_t>(r) * V, V);
      if (best == 2) continue;
      out[static_cast<size_t>(b)].push_back(best);
      if (t == limit[static_cast<size_t>(b)]) continue;  // as long as allowed
      keep.push_back(static_cast<int32_t>(r));
      next.push_back(best);
      kept.push_back(b);
    }
    if (keep.empty()) break;
    // Finished rows leave the batch, so later steps cost only the words still going.
    if (keep.size() != source_of.size()) model.reorder_decoding(keep);
    source_of = std::move(kept);
    model.decode_step(next);
  }
  return out;
}

}  // namespace

std::vector<std::vector<int32_t>> greedy_decode(Transformer& model, const std::vector<std::vector<int32_t>>& sources,
                                                const std::vector<int64_t>& max_outs, bool cache) {
  const std::vector<int64_t> limit = clamp_limits(model, max_outs, sources.size());
  return cache ? greedy_cached(model, sources, limit, nullptr) : greedy_uncached(model, sources, limit);
}

namespace {

// The rates of an EvalResult from its sums (both tasks' are set; each task
// reports its own).
void set_rates(EvalResult& r) {
  auto ratio = [](double num, int64_t den) { return den > 0 ? num / static_cast<double>(den) : 0.0; };
  r.loss = ratio(r.loss_sum, r.tokens);
  r.token_accuracy = ratio(static_cast<double>(r.correct), r.tokens);
  r.per = ratio(static_cast<double>(r.distance), r.ref_length);
  r.wer = ratio(static_cast<double>(r.wrong), r.words);
  // Per byte of text, whatever the tokens (bytes or SentencePiece pieces).
  r.bits_per_byte = r.bytes > 0 ? r.loss_sum / static_cast<double>(r.bytes) / std::log(2.0) : r.loss / std::log(2.0);
  r.perplexity = std::exp(r.loss);
}

}  // namespace

std::string describe_eval(Task task, const EvalResult& r) {
  if (task == Task::kG2P)
    return fmt::format("loss {:.4f}  token acc {:.2f}%  PER {:.2f}%  WER {:.2f}%  ({} words)", r.loss,
                       100 * r.token_accuracy, 100 * r.per, 100 * r.wer, r.words);
  const std::string count =
      r.bytes == r.tokens ? fmt::format("{} bytes", r.bytes) : fmt::format("{} tokens, {} bytes", r.tokens, r.bytes);
  return fmt::format("loss {:.4f}  bits/byte {:.4f}  perplexity {:.3f}  ({})", r.loss, r.bits_per_byte, r.perplexity,
                     count);
}

std::vector<Hypothesis> beam_decode(Transformer& model, const std::vector<std::vector<int32_t>>& sources,
                                    int64_t max_out, const DecodeOptions& options) {
  return beam_decode(model, sources, std::vector<int64_t>(sources.size(), max_out), options);
}

std::vector<Hypothesis> beam_decode(Transformer& model, const std::vector<std::vector<int32_t>>& sources,
                                    const std::vector<int64_t>& max_outs, const DecodeOptions& options) {
  PST_CHECK_MSG(options.beam >= 1 && options.length_penalty >= 0, "beam {} and length penalty {}", options.beam,
                options.length_penalty);
  if (sources.empty()) return {};
  const int64_t B = static_cast<int64_t>(sources.size());
  const int64_t K = options.beam;
  const int64_t V = model.tgt_vocab();
  const std::vector<int64_t> limit = clamp_limits(model, max_outs, sources.size());
  const auto normalized = [&](double log_prob, int64_t length) {
    return options.length_penalty == 0 ? log_prob
                                       : log_prob / std::pow(static_cast<double>(length), options.length_penalty);
  };
  struct Live {
    std::vector<int32_t> ids;
    double log_prob = 0.0;
    int64_t row = 0;  // where its next-id logits are: a row of V floats
  };
  std::vector<std::vector<Live>> live(static_cast<size_t>(B), std::vector<Live>(1));
  std::vector<std::vector<Hypothesis>> finished(static_cast<size_t>(B));
  // Step t scores the next id of every live hypothesis with t - 1 ids.
  // Cached: one decoding row per hypothesis still to extend (a source's
  // beams fork from their parents' rows). Uncached: row b * K + k of every
  // batch is hypothesis k of source b, run over its whole prefix, so the
  // source side stays the same from step to step (the encoder runs once).
  Batch batch = options.cache ? source_batch(sources, 1) : source_batch(sources, K);
  ForwardOptions opt;
  auto run_step = [&](int64_t t) {
    if (options.cache) {
      if (t == 1) {
        model.begin_decoding(batch, largest(limit));
        for (int64_t b = 0; b < B; ++b) live[b][0].row = b;
        return;
      }
      std::vector<int32_t> from, ids;
      for (int64_t b = 0; b < B; ++b) {
        if (t - 1 == limit[b]) continue;  // finishes unscored
        for (Live& l : live[b]) {
          from.push_back(static_cast<int32_t>(l.row));
          ids.push_back(l.ids.back());
          l.row = static_cast<int64_t>(from.size()) - 1;
        }
      }
      model.reorder_decoding(from);
      model.decode_step(ids);
      return;
    }
    batch.T = t;
    batch.tgt_in.assign(static_cast<size_t>(B * K * t), kPadId);
    batch.tgt_out.assign(static_cast<size_t>(B * K * t), kIgnoreTarget);
    batch.tgt_len.assign(static_cast<size_t>(B * K), static_cast<int32_t>(t));
    for (int64_t b = 0; b < B; ++b)
      for (size_t k = 0; k < live[b].size(); ++k) {
        const int64_t r = b * K + static_cast<int64_t>(k);
        int32_t* row = batch.tgt_in.data() + r * t;
        row[0] = 1;  // <s>
        std::copy(live[b][k].ids.begin(), live[b][k].ids.end(), row + 1);
        live[b][k].row = r * t + (t - 1);
      }
    model.forward(batch, opt);
    opt.reuse_encoder = true;
  };
  std::vector<double> logp(static_cast<size_t>(V));
  for (int64_t t = 1;; ++t) {  // t - 1 ids so far
    bool any = false;
    for (const auto& l : live) any = any || !l.empty();
    if (!any) break;
    run_step(t);
    const std::vector<float> logits = model.logits();
    for (int64_t b = 0; b < B; ++b) {
      auto& beams = live[b];
      if (beams.empty()) continue;
      struct Candidate {
        double log_prob;
        size_t from;
        int32_t id;
      };
      std::vector<Candidate> cand;
      for (size_t k = 0; k < beams.size(); ++k) {
        if (t - 1 == limit[b]) {  // as long as allowed: finished without </s>
          finished[b].push_back({beams[k].ids, beams[k].log_prob, normalized(beams[k].log_prob, limit[b])});
          continue;
        }
        const float* row = logits.data() + beams[k].row * V;
        double top = row[0];
        for (int64_t v = 1; v < V; ++v) top = std::max(top, static_cast<double>(row[v]));
        double sum = 0.0;
        for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v]) - top);
        const double lse = top + std::log(sum);
        // </s> first, then the non-special ids in order: among equal
        // log-probabilities the earlier wins, as in greedy_decode.
        cand.push_back({beams[k].log_prob + (static_cast<double>(row[2]) - lse), k, 2});
        for (int32_t v = 4; v < V; ++v) cand.push_back({beams[k].log_prob + (static_cast<double>(row[v]) - lse), k, v});
      }
      const size_t keep = std::min(cand.size(), static_cast<size_t>(K));
      std::stable_sort(cand.begin(), cand.end(),
                       [](const Candidate& x, const Candidate& y) { return x.log_prob > y.log_prob; });
      std::vector<Live> next;
      for (size_t i = 0; i < keep; ++i) {
        const Candidate& c = cand[i];
        const Live& from = beams[c.from];
        if (c.id == 2) {
          finished[b].push_back(
              {from.ids, c.log_prob, normalized(c.log_prob, static_cast<int64_t>(from.ids.size()) + 1)});
        } else {
          Live l{from.ids, c.log_prob, from.row};
          l.ids.push_back(c.id);
          next.push_back(std::move(l));
        }
      }
      beams = std::move(next);
      // A live hypothesis ends with at most max_out ids (</s> included) and a
      // log-probability no higher than it has now: it cannot score above
      // log_prob / max_out^alpha (alpha >= 0, log_prob <= 0).
      if (!finished[b].empty() && !beams.empty()) {
        double best = -INFINITY, bound = -INFINITY;
        for (const Hypothesis& h : finished[b]) best = std::max(best, h.score);
        for (const Live& l : beams) bound = std::max(bound, normalized(l.log_prob, limit[b]));
        if (best >= bound) beams.clear();
      }
    }
  }
  std::vector<Hypothesis> out(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    const auto& f = finished[b];
    size_t best = 0;
    for (size_t i = 1; i < f.size(); ++i)
      if (f[i].score > f[best].score) best = i;
    out[b] = f[best];
  }
  return out;
}

Batch last_window(const std::vector<int32_t>& ids, int64_t window) {
  const int64_t start = std::max<int64_t>(0, static_cast<int64_t>(ids.size()) - window);
  Batch b;
  b.B = 1;
  b.T = static_cast<int64_t>(ids.size()) - start;
  b.tgt_in.assign(ids.begin() + start, ids.end());
  b.tgt_out.assign(static_cast<size_t>(b.T), kIgnoreTarget);
  b.tgt_len = {static_cast<int32_t>(b.T)};
  return b;
}

std::vector<double> sampling_distribution(const float* logits, int64_t V, const Sampling& s) {
  std::vector<double> p(static_cast<size_t>(V), 0.0);
  if (V == 0) return p;
  if (s.temperature <= 0) {
    p[static_cast<size_t>(std::max_element(logits, logits + V) - logits)] = 1.0;
    return p;
  }
  // Tokens by probability, most probable first (ties by id).
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  const size_t k = s.top_k > 0 ? static_cast<size_t>(std::min<int64_t>(s.top_k, V)) : order.size();
  const double top = static_cast<double>(logits[order[0]]) / s.temperature;
  double z = 0;
  std::vector<double> w(k);
  for (size_t i = 0; i < k; ++i) {
    w[i] = std::exp(static_cast<double>(logits[order[i]]) / s.temperature - top);
    z += w[i];
  }
  // The nucleus: the fewest leading tokens whose share reaches top_p.
  size_t keep = 0;
  double mass = 0;
  while (keep < k && (keep == 0 || mass < s.top_p * z)) mass += w[keep++];
  for (size_t i = 0; i < keep; ++i) p[static_cast<size_t>(order[i])] = w[i] / mass;
  return p;
}

int32_t sample_token(const float* logits, int64_t V, const Sampling& s, float u) {
  const std::vector<double> p = sampling_distribution(logits, V, s);
  double cum = 0;
  int32_t last = 0;
  for (int64_t i = 0; i < V; ++i) {
    if (p[static_cast<size_t>(i)] <= 0) continue;
    last = static_cast<int32_t>(i);
    cum += p[static_cast<size_t>(i)];
    if (static_cast<double>(u) < cum) return last;
  }
  return last;  // (u within rounding of 1)
}

std::vector<int32_t> generate_ids(Transformer& model, const std::vector<int32_t>& prompt, int64_t count, bool cache,
                                  const Sampling& sampling, int32_t start,
                                  const std::function<bool(const std::vector<int32_t>&)>& done) {
  const Philox draws(sampling.seed, sampling.stream);
  std::vector<int32_t> ctx(prompt.begin(), prompt.end());
  if (ctx.empty()) ctx.push_back(start);
  std::vector<int32_t> out;
  const int64_t window = model.config().max_len;
  const int64_t V = model.tgt_vocab();
  bool decoding = false;  // the model holds the keys and values of all of ctx
  for (int64_t i = 0; i < count; ++i) {
    int64_t last = 0;  // the row of the logits to continue from
    if (decoding && model.decoded_positions() < window) {
      model.decode_step({ctx.back()});
    } else {
      // The last `window` bytes, run whole: at the start, and once the
      // context is longer than the model's positions (it slides).
      const Batch b = last_window(ctx, window);
      decoding = cache && b.T < window;
      if (decoding) {
        model.begin_decoding(b, window);
      } else {
        model.forward(b, ForwardOptions{});
      }
      last = b.T - 1;
    }
    const std::vector<float> logits = model.logits();
    const float* row = logits.data() + last * V;
    const int32_t next = sample_token(row, V, sampling, draws.uniform(static_cast<uint64_t>(i)));
    ctx.push_back(next);
    out.push_back(next);
    if (done && done(out)) break;
  }
  return out;
}

std::string generate_text(Transformer& model, const Tokenizer& tokenizer, const std::string& prompt, int64_t bytes,
                          bool cache, const Sampling& sampling) {
  std::vector<int32_t> ids;
  tokenizer.encode(prompt, &ids, nullptr);
  if (tokenizer.is_bytes()) return tokenizer.decode(generate_ids(model, ids, bytes, cache, sampling));
  // Pieces are a byte of text or more, but for a bare word-start marker at
  // the start of a line, which decodes to nothing: a bound of 4 x bytes
  // pieces leaves room for those.
  const auto out = generate_ids(model, ids, 4 * bytes + 16, cache, sampling, tokenizer.newline_id(),
                                [&](const std::vector<int32_t>& so_far) {
                                  return static_cast<int64_t>(tokenizer.decode(so_far).size()) >= bytes;
                                });
  return tokenizer.decode(out);
}

EvalResult evaluate(Transformer& model, const TaskData& data, Split split, int64_t batch_size, int64_t max_examples,
                    std::vector<std::string>* predictions, const DecodeOptions& decode) {
  EvalResult r;
  const Dataset& ds = data.split(split);
  const auto* g = data.task == Task::kG2P ? static_cast<const G2PDataset*>(&ds) : nullptr;
  int64_t n = ds.size();
  if (g && max_examples > 0) {
    // Cap by words: keep every pronunciation of the first N words.
    int64_t i = 0;
    while (i < n && g->word_of(i) < max_examples) ++i;
    n = i;
  } else if (max_examples > 0) {
    n = std::min(n, max_examples);
  }
  const int64_t nwords = g && n > 0 ? g->word_of(n - 1) + 1 : 0;
  ForwardOptions opt;
  Stopwatch since_report;
  const char* what = to_string(split);
  auto report = [&](const char* phase, int64_t done, int64_t total, const char* unit) {
    if (since_report.seconds() < 10) return;
    spdlog::info("{}: {} {}/{} {}", what, phase, done, total, unit);
    since_report.reset();
  };
  // Greedy decoding from the scoring pass (DecodeOptions::from_scoring):
  // shown[w] is word w's greedy output where a reference's logits show it;
  // encoded[w] the encoder's output for a word not shown (yet), while those
  // kept take at most decode.kept_encoder_bytes.
  const bool from_scoring = g && decode.beam == 1 && decode.cache && decode.from_scoring;
  std::vector<std::optional<std::vector<int32_t>>> shown(static_cast<size_t>(nwords));
  std::vector<std::vector<float>> encoded(static_cast<size_t>(nwords));
  int64_t kept_bytes = 0;
  int64_t scored = 0;
  Stopwatch since_start;
  for (const auto& ids : length_sorted_batches(ds, n, batch_size)) {
    if (stop_requested()) {
      r.stopped = true;
      return r;
    }
    report("scoring", scored, n, "examples");
    scored += static_cast<int64_t>(ids.size());
    const Batch b = collate(ds, ids);
    const LossStats s = model.forward(b, opt);
    for (int64_t i : ids) r.bytes += ds.target_bytes(i);
    r.loss_sum += s.loss_sum;
    r.tokens += s.tokens;
    r.correct += s.correct;
    if (!from_scoring) continue;
    const std::vector<float> logits = model.logits();
    for (size_t k = 0; k < ids.size(); ++k) {
      const auto w = static_cast<size_t>(g->word_of(ids[k]));
      if (shown[w]) continue;
      const int64_t bytes = b.src_len[k] * model.config().d_model * static_cast<int64_t>(sizeof(float));
      shown[w] = greedy_shown(model, b, logits, static_cast<int64_t>(k));
      if (shown[w] && !encoded[w].empty()) {  // kept for another reference
        encoded[w] = {};
        kept_bytes -= bytes;
      }
      if (shown[w] || !encoded[w].empty() || kept_bytes + bytes > decode.kept_encoder_bytes) continue;
      encoded[w] = model.encoder_output(static_cast<int64_t>(k), b.src_len[k]);
      kept_bytes += bytes;
    }
  }
  r.scoring_seconds = since_start.seconds();
  r.examples = n;
  if (data.task == Task::kLM) {
    set_rates(r);
    return r;
  }
  const auto& words = data.g2p->split(split);
  std::vector<std::string> lines(predictions ? static_cast<size_t>(nwords) : 0);
  auto score = [&](int64_t word, const std::vector<int32_t>& decoded) {
    std::vector<std::string> phones;
    for (int32_t id : decoded) phones.push_back(data.g2p->phones.token(id));
    const G2PWord& w = words[static_cast<size_t>(word)];
    const WordScore sc = score_word(phones, w.prons);
    r.distance += sc.distance;
    r.ref_length += sc.ref_length;
    r.wrong += sc.correct ? 0 : 1;
    if (predictions) {
      std::string& line = lines[static_cast<size_t>(word)];
      line = w.word + "\t";
      for (size_t p = 0; p < phones.size(); ++p) line += (p ? " " : "") + phones[p];
    }
  };
  // The words left to decode, in order of length, longest first, so that a
  // batch runs about as many steps as each of its words needs and the first
  // sizes the buffers; predictions keep the split's order.
  std::vector<int64_t> by_length;
  for (int64_t w = 0; w < nwords; ++w) {
    if (const auto& out = shown[static_cast<size_t>(w)]) {
      score(w, *out);
      ++r.shown_words;
    } else {
      by_length.push_back(w);
    }
  }
  std::stable_sort(by_length.begin(), by_length.end(),
                   [&](int64_t a, int64_t b) { return word_symbols(words[a].word) > word_symbols(words[b].word); });
  const auto to_decode = static_cast<int64_t>(by_length.size());
  int64_t decoded_words = 0;
  for (auto ids : sequential_batches(to_decode, batch_size)) {
    if (stop_requested()) {
      r.stopped = true;
      return r;
    }
    report("decoded", decoded_words, to_decode, "words");
    decoded_words += static_cast<int64_t>(ids.size());
    for (int64_t& w : ids) w = by_length[static_cast<size_t>(w)];
    std::vector<std::vector<int32_t>> srcs;
    for (int64_t w : ids) srcs.push_back(g->encode_word(words[w].word));
    const std::vector<int64_t> limits = g2p_output_limits(srcs);
    std::vector<std::vector<int32_t>> decoded;
    if (decode.beam == 1) {
      // The encoder's output from the scoring pass, when it kept every word's.
      const bool kept =
          std::all_of(ids.begin(), ids.end(), [&](int64_t w) { return !encoded[static_cast<size_t>(w)].empty(); });
      if (kept) {
        const std::vector<float> memory = padded_encoder_output(encoded, ids, model.config().d_model);
        decoded = greedy_cached(model, srcs, clamp_limits(model, limits, srcs.size()), &memory);
      } else {
        decoded = greedy_decode(model, srcs, limits, decode.cache);
      }
    } else {
      for (Hypothesis& h : beam_decode(model, srcs, limits, decode)) decoded.push_back(std::move(h.ids));
    }
    for (size_t k = 0; k < ids.size(); ++k) score(ids[k], decoded[k]);
  }
  r.decoding_seconds = since_start.seconds() - r.scoring_seconds;
  if (predictions) predictions->insert(predictions->end(), lines.begin(), lines.end());
  r.words = nwords;
  set_rates(r);
  return r;
}

EvalResult merge_evals(const std::vector<EvalResult>& parts) {
  EvalResult r;
  for (const EvalResult& p : parts) {
    r.examples += p.examples;
    r.tokens += p.tokens;
    r.bytes += p.bytes;
    r.words += p.words;
    r.loss_sum += p.loss_sum;
    r.correct += p.correct;
    r.distance += p.distance;
    r.ref_length += p.ref_length;
    r.wrong += p.wrong;
    r.scoring_seconds += p.scoring_seconds;
    r.decoding_seconds += p.decoding_seconds;
    r.shown_words += p.shown_words;
    r.stopped = r.stopped || p.stopped;
  }
  set_rates(r);
  return r;
}

}  // namespace pst
