// Small jobs, batches and gradients shared by the server-side suites.
#pragma once

#include <algorithm>
#include <vector>

#include "core/batch.h"
#include "core/config.h"
#include "model/transformer.h"
#include "ps/shard_optimizer.h"

namespace pst::testing {

inline JobConfig tiny_job() {
  JobConfig job;
  job.model.d_model = 8;
  job.model.heads = 2;
  job.model.ffn_dim = 16;
  job.model.encoder_layers = 1;
  job.model.decoder_layers = 1;
  job.model.max_len = 8;
  job.model.dropout = job.model.attention_dropout = job.model.embedding_dropout = 0;
  job.optim.lr = 1e-2;
  job.optim.clip_norm = 0.5;
  job.schedule.kind = ScheduleKind::kLinear;
  job.schedule.warmup_steps = 3;
  job.train.steps = 10;
  return job;
}

inline Batch make_batch(const std::vector<std::vector<int32_t>>& src, const std::vector<std::vector<int32_t>>& tgt) {
  Batch b;
  b.B = static_cast<int64_t>(src.size());
  for (const auto& s : src) b.S = std::max<int64_t>(b.S, static_cast<int64_t>(s.size()));
  for (const auto& t : tgt) b.T = std::max<int64_t>(b.T, static_cast<int64_t>(t.size()) + 1);
  b.src.assign(b.B * b.S, kPadId);
  b.tgt_in.assign(b.B * b.T, kPadId);
  b.tgt_out.assign(b.B * b.T, kIgnoreTarget);
  for (int64_t r = 0; r < b.B; ++r) {
    std::copy(src[r].begin(), src[r].end(), b.src.begin() + r * b.S);
    b.src_len.push_back(static_cast<int32_t>(src[r].size()));
    b.tgt_in[r * b.T] = 1;
    for (size_t i = 0; i < tgt[r].size(); ++i) {
      b.tgt_in[r * b.T + i + 1] = tgt[r][i];
      b.tgt_out[r * b.T + i] = tgt[r][i];
    }
    b.tgt_out[r * b.T + tgt[r].size()] = 2;
    b.tgt_len.push_back(static_cast<int32_t>(tgt[r].size() + 1));
  }
  return b;
}

inline std::vector<float> gradient(Transformer& m, const Batch& b, float label_smoothing = 0) {
  m.zero_grads();
  ForwardOptions o;
  o.train = true;
  o.grad_scale = 1.0f / static_cast<float>(b.tokens());
  o.label_smoothing = label_smoothing;
  m.forward(b, o);
  m.backward();
  std::vector<float> g(m.num_params());
  m.get_grads(g.data());
  return g;
}

// The weights after one step from w0 on the pushes (tokens each) of g, by
// one in-process optimizer over the whole model: the oracle of a served round.
inline std::vector<float> one_step(const JobConfig& job, const ParamTable& table, const std::vector<float>& w0,
                                   const std::vector<float>& g, const std::vector<int64_t>& tokens) {
  ShardOptimizer ref(job, table, whole_tensors(table), w0.data());
  for (int64_t t : tokens) ref.add_push(g.data(), t, 0.0);
  ref.apply(ref.reduce());
  std::vector<float> want(w0.size());
  ref.copy_weights(want.data());
  return want;
}

}  // namespace pst::testing
