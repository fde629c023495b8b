#include "worker/evaluate.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

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
    if (first || d < best.distance ||
        (d == best.distance && static_cast<int64_t>(ref.size()) < best.ref_length)) {
      best.distance = d;
      best.ref_length = static_cast<int64_t>(ref.size());
      first = false;
    }
    if (d == 0) best.correct = true;
  }
  return best;
}

std::vector<std::vector<int32_t>> greedy_decode(Transformer& model,
                                                const std::vector<std::vector<int32_t>>& sources,
                                                int64_t max_out) {
  const int64_t B = static_cast<int64_t>(sources.size());
  const int64_t V = model.tgt_vocab();
  max_out = std::min<int64_t>(max_out, model.config().max_len - 1);
  Batch batch;
  batch.B = B;
  for (const auto& s : sources) batch.S = std::max<int64_t>(batch.S, static_cast<int64_t>(s.size()));
  batch.src.assign(static_cast<size_t>(B * batch.S), kPadId);
  for (int64_t b = 0; b < B; ++b) {
    std::copy(sources[b].begin(), sources[b].end(), batch.src.begin() + b * batch.S);
    batch.src_len.push_back(static_cast<int32_t>(sources[b].size()));
  }
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(B));
  std::vector<bool> done(static_cast<size_t>(B), false);
  std::vector<std::vector<int32_t>> prefix(static_cast<size_t>(B), std::vector<int32_t>{1});  // <s>
  ForwardOptions opt;
  for (int64_t t = 1; t <= max_out + 1; ++t) {
    batch.T = t;
    batch.tgt_in.assign(static_cast<size_t>(B * t), kPadId);
    batch.tgt_out.assign(static_cast<size_t>(B * t), kIgnoreTarget);
    batch.tgt_len.assign(static_cast<size_t>(B), static_cast<int32_t>(t));
    for (int64_t b = 0; b < B; ++b)
      std::copy(prefix[b].begin(), prefix[b].end(), batch.tgt_in.begin() + b * t);
    model.forward(batch, opt);
    opt.reuse_encoder = true;  // the source is the same at every step
    const std::vector<float> logits = model.logits();
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      const float* row = logits.data() + ((b * t) + (t - 1)) * V;
      // Specials other than </s> are never emitted.
      int32_t best = 2;
      for (int32_t v = 4; v < V; ++v)
        if (row[v] > row[best]) best = v;
      if (best == 2 || t == max_out + 1) {
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

std::vector<uint8_t> generate_bytes(Transformer& model, const std::vector<uint8_t>& prompt,
                                    int64_t count) {
  std::vector<int32_t> ctx(prompt.begin(), prompt.end());
  if (ctx.empty()) ctx.push_back('\n');
  std::vector<uint8_t> out;
  const int64_t window = model.config().max_len;
  const int64_t V = model.tgt_vocab();
  for (int64_t i = 0; i < count; ++i) {
    const int64_t start = std::max<int64_t>(0, static_cast<int64_t>(ctx.size()) - window);
    Batch b;
    b.B = 1;
    b.T = static_cast<int64_t>(ctx.size()) - start;
    b.tgt_in.assign(ctx.begin() + start, ctx.end());
    b.tgt_out.assign(static_cast<size_t>(b.T), kIgnoreTarget);
    b.tgt_len = {static_cast<int32_t>(b.T)};
    model.forward(b, ForwardOptions{});
    const std::vector<float> logits = model.logits();
    const float* row = logits.data() + (b.T - 1) * V;
    const auto next = static_cast<int32_t>(std::max_element(row, row + V) - row);
    ctx.push_back(next);
    out.push_back(static_cast<uint8_t>(next));
  }
  return out;
}

EvalResult evaluate(Transformer& model, const TaskData& data, Split split, int64_t batch_size,
                    int64_t max_examples, std::vector<std::string>* predictions) {
  EvalResult r;
  const Dataset& ds = data.split(split);
  int64_t n = ds.size();
  if (data.task == Task::kG2P && max_examples > 0) {
    // Cap by words: keep every pronunciation of the first N words.
    const auto& g = static_cast<const G2PDataset&>(ds);
    int64_t i = 0;
    while (i < n && g.word_of(i) < max_examples) ++i;
    n = i;
  } else if (max_examples > 0) {
    n = std::min(n, max_examples);
  }
  double loss = 0.0;
  int64_t correct = 0;
  ForwardOptions opt;
  for (const auto& ids : sequential_batches(n, batch_size)) {
    const Batch b = collate(ds, ids);
    const LossStats s = model.forward(b, opt);
    loss += s.loss_sum;
    r.tokens += s.tokens;
    correct += s.correct;
  }
  r.examples = n;
  r.loss = r.tokens > 0 ? loss / static_cast<double>(r.tokens) : 0.0;
  r.token_accuracy = r.tokens > 0 ? static_cast<double>(correct) / static_cast<double>(r.tokens) : 0.0;
  if (data.task == Task::kLM) {
    r.bits_per_byte = r.loss / std::log(2.0);
    r.perplexity = std::exp(r.loss);
    return r;
  }
  const auto& g = static_cast<const G2PDataset&>(ds);
  const auto& words = data.g2p->split(split);
  const int64_t nwords = n > 0 ? g.word_of(n - 1) + 1 : 0;
  int64_t dist = 0, ref_len = 0, wrong = 0;
  for (const auto& ids : sequential_batches(nwords, batch_size)) {
    std::vector<std::vector<int32_t>> srcs;
    for (int64_t w : ids) srcs.push_back(g.encode_word(words[w].word));
    int64_t longest = 0;
    for (const auto& s : srcs) longest = std::max<int64_t>(longest, static_cast<int64_t>(s.size()));
    const auto decoded = greedy_decode(model, srcs, 2 * longest + 4);
    for (size_t k = 0; k < ids.size(); ++k) {
      std::vector<std::string> phones;
      for (int32_t id : decoded[k]) phones.push_back(data.g2p->phones.token(id));
      const G2PWord& w = words[ids[k]];
      const WordScore sc = score_word(phones, w.prons);
      dist += sc.distance;
      ref_len += sc.ref_length;
      wrong += sc.correct ? 0 : 1;
      if (predictions) {
        std::string line = w.word + "\t";
        for (size_t p = 0; p < phones.size(); ++p) line += (p ? " " : "") + phones[p];
        predictions->push_back(line);
      }
    }
  }
  r.words = nwords;
  r.per = ref_len > 0 ? static_cast<double>(dist) / static_cast<double>(ref_len) : 0.0;
  r.wer = nwords > 0 ? static_cast<double>(wrong) / static_cast<double>(nwords) : 0.0;
  return r;
}

}  // namespace pst
