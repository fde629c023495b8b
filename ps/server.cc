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
                               std::vector<ChunkRange> owned, const float* initial, Backend* device)
    : job_(job), table_(table), schedule_(make_schedule(job)), owned_(std::move(owned)), device_(device) {
  int64_t n = 0;
  for (const ChunkRange& r : owned_) {
    local_offset_.push_back(n);
    if (!runs_.empty() && runs_.back().flat + runs_.back().length == r.begin) {
      runs_.back().length += r.length;
    } else {
      runs_.push_back({n, r.begin, r.length});
    }
    n += r.length;
  }
  grad_.assign(static_cast<size_t>(n), 0.0f);
  std::vector<float> w(static_cast<size_t>(n));
  for (const Run& r : runs_) std::copy_n(initial + r.flat, r.length, w.begin() + r.local);
  if (device_) {
    // allocate() zeroes, which is the moments' initial value.
    device_state_ = static_cast<float*>(device_->allocate(4 * static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float)));
    w_ = device_state_;
    m_ = w_ + n;
    v_ = m_ + n;
    device_->upload(w_, w.data(), static_cast<size_t>(n) * sizeof(float));
  } else {
    weights_ = std::move(w);
    exp_avg_.assign(static_cast<size_t>(n), 0.0f);
    exp_avg_sq_.assign(static_cast<size_t>(n), 0.0f);
    w_ = weights_.data();
    m_ = exp_avg_.data();
    v_ = exp_avg_sq_.data();
  }
}

ShardOptimizer::~ShardOptimizer() {
  if (device_state_) device_->deallocate(device_state_);
}

void ShardOptimizer::add_push(const float* grads, int64_t tokens, double loss_sum) {
  // Push buffers are kept across steps, so a step allocates nothing.
  const size_t slot = push_tokens_.size();
  if (pushed_.size() <= slot) pushed_.emplace_back(grad_.size());
  for (const Run& r : runs_) std::copy_n(grads + r.flat, r.length, pushed_[slot].begin() + r.local);
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
  const float* g = grad_.data();
  if (device_) {
    float* dg = v_ + grad_.size();
    device_->upload(dg, grad_.data(), grad_.size() * sizeof(float));
    g = dg;
  }
  for (size_t i = 0; i < owned_.size(); ++i) {
    const ParamSpec& spec = table_[owned_[i].tensor];
    const int64_t off = local_offset_[i];
    const AdamConstants& k = decays(spec, o.decay_embeddings) ? with_decay : no_decay;
    if (device_) {
      device_->adam_update(w_ + off, m_ + off, v_ + off, g + off, owned_[i].length, k);
    } else {
      adam_update(w_ + off, m_ + off, v_ + off, g + off, owned_[i].length, k);
    }
  }
  r.applied = true;
  r.applied_steps = applied_;
  return r;
}

void ShardOptimizer::copy_weights(float* flat) const {
  for (const Run& r : runs_) {
    if (device_) {
      device_->download(flat + r.flat, w_ + r.local, static_cast<size_t>(r.length) * sizeof(float));
    } else {
      std::copy_n(w_ + r.local, r.length, flat + r.flat);
    }
  }
}

}  // namespace pst
