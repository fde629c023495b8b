#include "ps/shard_optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "core/status.h"

namespace pst {

std::vector<ChunkRange> whole_tensors(const ParamTable& table) {
  std::vector<ChunkRange> out;
  for (int64_t i = 0; i < table.size(); ++i) out.push_back({i, table[i].offset, table[i].numel});
  return out;
}

ShardOptimizer::ShardOptimizer(const JobConfig& job, const ParamTable& table, std::vector<ChunkRange> owned,
                               const float* initial, Backend* device)
    : job_(job), table_(table), schedule_(make_schedule(job)), owned_(std::move(owned)), device_(device) {
  for (const ChunkRange& r : owned_) {
    local_offset_.push_back(n_);
    if (!runs_.empty() && runs_.back().flat + runs_.back().length == r.begin) {
      runs_.back().length += r.length;
    } else {
      runs_.push_back({n_, r.begin, r.length});
    }
    n_ += r.length;
  }
  const size_t n = static_cast<size_t>(n_);
  std::vector<float> w(n);
  for (const Run& r : runs_) std::copy_n(initial + r.flat, r.length, w.begin() + r.local);
  if (device_) {
    // allocate() zeroes: the moments' initial value.
    device_state_ = static_cast<float*>(device_->allocate(4 * std::max<size_t>(n, 1) * sizeof(float)));
    w_ = device_state_;
    m_ = w_ + n;
    device_->upload(w_, w.data(), n * sizeof(float));
  } else {
    host_weights_ = std::move(w);
    host_state_.assign(3 * n, 0.0f);
    w_ = host_weights_.data();
    m_ = host_state_.data();
  }
  v_ = m_ + n;
  grad_ = v_ + n;
}

ShardOptimizer::~ShardOptimizer() {
  if (!device_) return;
  for (float* p : device_pushed_) device_->deallocate(p);
  device_->deallocate(device_state_);
}

size_t ShardOptimizer::claim_push_slot(int64_t slot, int64_t tokens, double loss_sum) {
  if (slot < 0) slot = static_cast<int64_t>(push_tokens_.size());
  const size_t k = static_cast<size_t>(slot);
  if (push_tokens_.size() <= k) {
    push_tokens_.resize(k + 1, -1);
    push_loss_.resize(k + 1, 0.0);
  }
  PST_CHECK_MSG(push_tokens_[k] < 0, "push slot {} filled twice in one round", slot);
  if (device_ && pushed_.size() <= k) pushed_.resize(k + 1, nullptr);
  if (!device_ && push_ranges_.size() <= k) push_ranges_.resize(k + 1, std::vector<const float*>(owned_.size()));
  push_tokens_[k] = tokens;
  push_loss_[k] = loss_sum;
  ++pushes_;
  return k;
}

float* ShardOptimizer::slot_buffer(size_t k) {
  // Push buffers are kept across steps, so a step allocates nothing.
  if (pushed_[k] == nullptr) {
    device_pushed_.push_back(static_cast<float*>(device_->allocate(std::max<size_t>(n_, 1) * sizeof(float))));
    pushed_[k] = device_pushed_.back();
  }
  return pushed_[k];
}

float* ShardOptimizer::host_copies(size_t k, int64_t floats) {
  if (host_pushed_.size() <= k) host_pushed_.resize(k + 1);
  host_pushed_[k].resize(static_cast<size_t>(floats));  // its capacity stays for the next rounds
  return host_pushed_[k].data();
}

int64_t ShardOptimizer::host_push_floats() const {
  int64_t floats = 0;
  for (const std::vector<float>& b : host_pushed_) floats += static_cast<int64_t>(b.capacity());
  return floats;
}

void ShardOptimizer::add_push(const float* grads, int64_t tokens, double loss_sum, Lend lend) {
  const size_t k = claim_push_slot(-1, tokens, loss_sum);
  if (!device_ && lend == Lend::kYes) {
    for (size_t i = 0; i < owned_.size(); ++i) push_ranges_[k][i] = grads + owned_[i].begin;
    return;
  }
  float* slot = device_ ? slot_buffer(k) : host_copies(k, n_);
  for (const Run& r : runs_) {
    if (device_) {
      device_->upload(slot + r.local, grads + r.flat, static_cast<size_t>(r.length) * sizeof(float));
    } else {
      std::copy_n(grads + r.flat, r.length, slot + r.local);
    }
  }
  if (!device_)
    for (size_t i = 0; i < owned_.size(); ++i) push_ranges_[k][i] = slot + local_offset_[i];
}

void ShardOptimizer::add_push_device(const float* grads, int64_t tokens, double loss_sum) {
  PST_CHECK_MSG(device_ != nullptr, "add_push_device on a host optimizer");
  float* slot = slot_buffer(claim_push_slot(-1, tokens, loss_sum));
  for (const Run& r : runs_) device_->copy(slot + r.local, grads + r.flat, r.length);
}

void ShardOptimizer::add_push_ranges(const std::vector<WireValues>& ranges, int64_t tokens, double loss_sum,
                                     int64_t slot_index, Lend lend) {
  PST_CHECK_MSG(ranges.size() == owned_.size(), "push of {} ranges to a shard of {}", ranges.size(), owned_.size());
  const size_t k = claim_push_slot(slot_index, tokens, loss_sum);
  if (!device_) {
    // A float32 range the caller lends is read where it lies. The others
    // (bfloat16, or not aligned for float: ZeroMQ puts a small frame at any
    // byte of its buffer) are copied back to back into the slot's buffer,
    // which is only as large as they are.
    auto lent = [&](size_t i) {
      return lend == Lend::kYes && !ranges[i].bf16 && reinterpret_cast<uintptr_t>(ranges[i].data) % alignof(float) == 0;
    };
    int64_t copies = 0;
    for (size_t i = 0; i < owned_.size(); ++i) copies += lent(i) ? 0 : owned_[i].length;
    float* to = host_copies(k, copies);
    for (size_t i = 0; i < owned_.size(); ++i) {
      if (lent(i)) {
        push_ranges_[k][i] = static_cast<const float*>(ranges[i].data);
        continue;
      }
      to_fp32(ranges[i], to, owned_[i].length);
      push_ranges_[k][i] = to;
      to += owned_[i].length;
    }
    return;
  }
  std::vector<float> widened;  // a bfloat16 range on its way to the device
  float* slot = slot_buffer(k);
  for (size_t i = 0; i < owned_.size(); ++i) {
    const int64_t n = owned_[i].length;
    const float* host = static_cast<const float*>(ranges[i].data);
    if (ranges[i].bf16) {
      widened.resize(static_cast<size_t>(n));
      to_fp32(ranges[i], widened.data(), n);
      host = widened.data();
    }
    device_->upload(slot + local_offset_[i], host, static_cast<size_t>(n) * sizeof(float));
  }
}

GradStats ShardOptimizer::reduce() {
  const size_t slots = push_tokens_.size();
  PST_CHECK_MSG(slots > 0 && pushes_ == static_cast<int64_t>(slots), "reduce() with {} of {} push slots filled",
                pushes_, slots);
  return reduce(std::vector<uint8_t>(slots, 1));
}

GradStats ShardOptimizer::reduce(const std::vector<uint8_t>& only) {
  if (swapped_ >= 0) {  // a reduce of this round took that push's buffer: give it back
    std::swap(grad_, pushed_[static_cast<size_t>(swapped_)]);
    swapped_ = -1;
  }
  included_.assign(push_tokens_.size(), 0);
  std::vector<size_t> in;
  int64_t total = 0;
  for (size_t w = 0; w < push_tokens_.size(); ++w)
    if (w < only.size() && only[w] && push_tokens_[w] >= 0) {
      included_[w] = 1;
      in.push_back(w);
      total += push_tokens_[w];
    }
  if (in.empty()) return GradStats{};
  const int64_t n = n_;
  // G = sum_w (n_w / N) g_w, in worker order. With one worker the weight is
  // exactly 1, so G is that worker's gradient bit for bit, taken as it is.
  std::vector<float> weights;
  for (size_t w : in)
    weights.push_back(total > 0 ? static_cast<float>(static_cast<double>(push_tokens_[w]) / static_cast<double>(total))
                                : 1.0f / static_cast<float>(in.size()));
  GradStats st;
  if (!device_) {
    // Range by range where each push lies; the sum and its statistics in
    // one pass.
    const size_t ranges = owned_.size(), k = in.size();
    std::vector<int64_t> lengths(ranges);
    std::vector<const float*> terms(ranges * k);
    for (size_t i = 0; i < ranges; ++i) {
      lengths[i] = owned_[i].length;
      for (size_t j = 0; j < k; ++j) terms[i * k + j] = push_ranges_[in[j]][i];
    }
    if (k == 1) {
      grad_ranges_ = push_ranges_[in[0]];
      st.sum_squares = weighted_sum(nullptr, terms.data(), nullptr, 1, lengths.data(), ranges, &st.nonfinite);
      return st;
    }
    std::vector<float*> out(ranges);
    for (size_t i = 0; i < ranges; ++i) out[i] = grad_ + local_offset_[i];
    grad_ranges_.assign(out.begin(), out.end());
    st.sum_squares = weighted_sum(out.data(), terms.data(), weights.data(), static_cast<int>(k), lengths.data(), ranges,
                                  &st.nonfinite);
    return st;
  }
  if (in.size() == 1) {
    swapped_ = static_cast<int64_t>(in[0]);
    std::swap(grad_, pushed_[in[0]]);
  } else {
    device_->copy(grad_, pushed_[in[0]], n);
    device_->scale(grad_, weights[0], n);
    for (size_t j = 1; j < in.size(); ++j) device_->axpy(grad_, weights[j], pushed_[in[j]], n);
  }
  st.sum_squares = device_->sum_squares(grad_, n, &st.nonfinite);
  return st;
}

StepReport ShardOptimizer::apply(const GradStats& global, bool clip, const Progress& progress, float* next) {
  PST_CHECK_MSG(next == nullptr || device_ == nullptr, "apply() into a host buffer on a device optimizer");
  // The weights are read from `from` and written to w_: next from now on
  // (progress() then finds the updated ranges where they are), or in place.
  const float* from = w_;
  if (next != nullptr) w_ = next;
  // Once the weights live in the caller's buffer, their first one goes.
  auto release_first = [&] {
    if (!host_weights_.empty() && w_ != host_weights_.data()) std::vector<float>().swap(host_weights_);
  };
  StepReport r;
  bool any = false;
  for (size_t w = 0; w < included_.size(); ++w)
    if (included_[w]) {
      r.tokens += push_tokens_[w];
      r.loss_sum += push_loss_[w];
      any = true;
    }
  push_tokens_.clear();
  push_loss_.clear();
  included_.clear();
  pushes_ = 0;
  swapped_ = -1;
  // The pushes' ranges are read for the last time below (lent ones may go
  // once apply() returns).
  const std::vector<const float*> grad = std::move(grad_ranges_);
  grad_ranges_.clear();
  for (std::vector<const float*>& r : push_ranges_) std::fill(r.begin(), r.end(), nullptr);
  ++version_;
  r.version = version_;
  r.grad_norm = std::sqrt(global.sum_squares);
  if (global.nonfinite || !any) {  // no push in the sum: every worker of the round was removed
    r.applied = false;
    r.applied_steps = applied_;
    r.lr = schedule_.lr(applied_);
    r.grad_norm = any ? std::numeric_limits<double>::quiet_NaN() : 0.0;
    if (w_ != from) std::copy_n(from, n_, w_);
    release_first();
    return r;
  }
  r.clip_coef = clip ? clip_coefficient(r.grad_norm, job_.optim.clip_norm) : 1.0;
  r.lr = schedule_.lr(applied_);
  ++applied_;
  const OptimConfig& o = job_.optim;
  const bool decoupled = o.algorithm == OptimizerKind::kAdamW;
  AdamConstants with_decay = adam_constants(r.lr, o.beta1, o.beta2, o.eps, o.weight_decay, decoupled, applied_);
  AdamConstants no_decay = adam_constants(r.lr, o.beta1, o.beta2, o.eps, 0.0, decoupled, applied_);
  // Clipping scales the gradient inside the update (AdamConstants::grad_scale).
  with_decay.grad_scale = no_decay.grad_scale = static_cast<float>(r.clip_coef);
  for (size_t i = 0; i < owned_.size(); ++i) {
    const ParamSpec& spec = table_[owned_[i].tensor];
    const int64_t off = local_offset_[i];
    const AdamConstants& k = decays(spec, o.decay_embeddings) ? with_decay : no_decay;
    if (device_) {
      device_->adam_update(w_ + off, m_ + off, v_ + off, grad_ + off, owned_[i].length, k);
    } else {
      adam_update(w_ + off, from + off, m_ + off, v_ + off, grad[i], owned_[i].length, k);
    }
    if (progress) {
      r.applied = true;
      r.applied_steps = applied_;
      progress(r, i + 1);
    }
  }
  release_first();
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

void ShardOptimizer::copy_local_weights(float* local) const {
  if (local == w_) return;
  if (device_) {
    device_->download(local, w_, static_cast<size_t>(n_) * sizeof(float));
  } else {
    std::copy_n(w_, n_, local);
  }
}

void ShardOptimizer::copy_local_weights(float* local, size_t first, size_t last) const {
  PST_CHECK_MSG(first <= last && last <= owned_.size(), "owned ranges [{}, {}) of {}", first, last, owned_.size());
  if (first == last || local == w_) return;
  const int64_t begin = local_offset_[first];
  const int64_t end = last < owned_.size() ? local_offset_[last] : n_;
  if (device_) {
    device_->download(local + begin, w_ + begin, static_cast<size_t>(end - begin) * sizeof(float));
  } else {
    std::copy(w_ + begin, w_ + end, local + begin);
  }
}

void ShardOptimizer::export_state(std::vector<float>* weights, std::vector<float>* exp_avg,
                                  std::vector<float>* exp_avg_sq) const {
  const size_t n = static_cast<size_t>(n_);
  const float* src[3] = {w_, m_, v_};
  std::vector<float>* dst[3] = {weights, exp_avg, exp_avg_sq};
  for (int k = 0; k < 3; ++k) {
    dst[k]->resize(n);
    if (device_) {
      device_->download(dst[k]->data(), src[k], n * sizeof(float));
    } else {
      std::copy_n(src[k], n, dst[k]->data());
    }
  }
}

void ShardOptimizer::import_state(const float* weights, const float* exp_avg, const float* exp_avg_sq, int64_t version,
                                  int64_t applied_steps) {
  PST_CHECK_MSG(pushes_ == 0, "import_state() with {} pushes pending", pushes_);
  const size_t n = static_cast<size_t>(n_);
  float* dst[3] = {w_, m_, v_};
  const float* src[3] = {weights, exp_avg, exp_avg_sq};
  for (int k = 0; k < 3; ++k) {
    if (device_) {
      device_->upload(dst[k], src[k], n * sizeof(float));
    } else {
      std::copy_n(src[k], n, dst[k]);
    }
  }
  version_ = version;
  applied_ = applied_steps;
}

void ShardOptimizer::copy_weights_device(float* flat) const {
  PST_CHECK_MSG(device_ != nullptr, "copy_weights_device on a host optimizer");
  for (const Run& r : runs_) device_->copy(flat + r.flat, w_ + r.local, r.length);
}

}  // namespace pst
