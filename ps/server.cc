#include "ps/server.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/status.h"

namespace pst {

std::vector<ChunkRange> whole_tensors(const ParamTable& table) {
  std::vector<ChunkRange> out;
  for (int64_t i = 0; i < table.size(); ++i) out.push_back({i, table[i].offset, table[i].numel});
  return out;
}

ShardOptimizer::ShardOptimizer(const JobConfig& job, const ParamTable& table,
                               std::vector<ChunkRange> owned, const float* initial)
    : job_(job), table_(table), schedule_(make_schedule(job)), owned_(std::move(owned)) {
  int64_t n = 0;
  for (const ChunkRange& r : owned_) {
    local_offset_.push_back(n);
    n += r.length;
  }
  weights_.resize(static_cast<size_t>(n));
  exp_avg_.assign(static_cast<size_t>(n), 0.0f);
  exp_avg_sq_.assign(static_cast<size_t>(n), 0.0f);
  grad_.assign(static_cast<size_t>(n), 0.0f);
  for (size_t i = 0; i < owned_.size(); ++i)
    std::copy_n(initial + owned_[i].begin, owned_[i].length, weights_.begin() + local_offset_[i]);
}

void ShardOptimizer::add_push(const float* grads, int64_t tokens, double loss_sum) {
  // Push buffers are kept across steps, so a step allocates nothing.
  const size_t slot = push_tokens_.size();
  if (pushed_.size() <= slot) pushed_.emplace_back(grad_.size());
  for (size_t i = 0; i < owned_.size(); ++i)
    std::copy_n(grads + owned_[i].begin, owned_[i].length, pushed_[slot].begin() + local_offset_[i]);
  push_tokens_.push_back(tokens);
  push_loss_ += loss_sum;
}

GradStats ShardOptimizer::reduce() {
  const size_t pushes = push_tokens_.size();
  PST_CHECK_MSG(pushes > 0, "reduce() without pushes");
  int64_t total = 0;
  for (int64_t t : push_tokens_) total += t;
  const int64_t n = static_cast<int64_t>(grad_.size());
  // G = sum_w (n_w / N) g_w, in worker order. With one worker the weight is
  // exactly 1, so G is that worker's gradient bit for bit, taken as it is.
  if (pushes == 1) {
    grad_.swap(pushed_[0]);
    return grad_stats(grad_.data(), n);
  }
  for (size_t w = 0; w < pushes; ++w) {
    const float weight = total > 0 ? static_cast<float>(static_cast<double>(push_tokens_[w]) / static_cast<double>(total))
                                   : 1.0f / static_cast<float>(pushes);
    const float* g = pushed_[w].data();
    float* G = grad_.data();
    if (w == 0) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
      for (int64_t i = 0; i < n; ++i) G[i] = g[i] * weight;
    } else {
#pragma omp parallel for simd schedule(static) if (n > 65536)
      for (int64_t i = 0; i < n; ++i) G[i] += g[i] * weight;
    }
  }
  return grad_stats(grad_.data(), n);
}

StepReport ShardOptimizer::apply(const GradStats& global) {
  StepReport r;
  for (int64_t t : push_tokens_) r.tokens += t;
  r.loss_sum = push_loss_;
  push_tokens_.clear();
  push_loss_ = 0.0;
  ++version_;
  r.version = version_;
  r.grad_norm = std::sqrt(global.sum_squares);
  if (global.nonfinite) {
    r.applied = false;
    r.applied_steps = applied_;
    r.lr = schedule_.lr(applied_);
    r.grad_norm = std::numeric_limits<double>::quiet_NaN();
    return r;
  }
  r.clip_coef = clip_coefficient(r.grad_norm, job_.optim.clip_norm);
  r.lr = schedule_.lr(applied_);
  ++applied_;
  if (r.clip_coef < 1.0) {
    const auto coef = static_cast<float>(r.clip_coef);
    const int64_t n = static_cast<int64_t>(grad_.size());
    float* G = grad_.data();
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) G[i] *= coef;
  }
  const OptimConfig& o = job_.optim;
  const bool decoupled = o.algorithm == OptimizerKind::kAdamW;
  const AdamConstants with_decay =
      adam_constants(r.lr, o.beta1, o.beta2, o.eps, o.weight_decay, decoupled, applied_);
  const AdamConstants no_decay = adam_constants(r.lr, o.beta1, o.beta2, o.eps, 0.0, decoupled, applied_);
  for (size_t i = 0; i < owned_.size(); ++i) {
    const ParamSpec& spec = table_[owned_[i].tensor];
    const int64_t off = local_offset_[i];
    adam_update(weights_.data() + off, exp_avg_.data() + off, exp_avg_sq_.data() + off,
                grad_.data() + off, owned_[i].length,
                decays(spec, o.decay_embeddings) ? with_decay : no_decay);
  }
  r.applied = true;
  r.applied_steps = applied_;
  return r;
}

void ShardOptimizer::copy_weights(float* flat) const {
  for (size_t i = 0; i < owned_.size(); ++i)
    std::copy_n(weights_.begin() + local_offset_[i], owned_[i].length, flat + owned_[i].begin);
}

}  // namespace pst
