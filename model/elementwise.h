// Element-wise math shared by the CPU backend and CUDA kernels (PST_HD), so
// that the CPU tests exercise the same formulas the GPU runs.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/hd.h"
#include "core/philox.h"

namespace pst {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kInvSqrt2 = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;

// fminf(fmaxf(x, -87.3f), 88.7f), bit for bit (a quiet NaN becomes -87.3;
// a signaling NaN, which no arithmetic produces, too, where fmaxf's quieting
// made it 88.7), in comparisons the compiler turns into vector instructions:
// fminf and fmaxf are libm calls on x86, which keep a loop around them scalar.
PST_HD float clamp_exp_input(float x) {
  x = x >= -87.3f ? x : -87.3f;
  return x <= 88.7f ? x : 88.7f;
}

// exp(x) in float without a libm call, so that loops over it vectorise:
// x = n ln2 + r with |r| <= ln2/2, e^r by the degree-7 polynomial of Cephes'
// expf (about 1 ulp on the reduced range), times 2^n built in the exponent
// bits. Inputs are clamped to [-87.3, 88.7], where the result is a normal float.
PST_HD float exp_approx(float x) {
  x = clamp_exp_input(x);
  const float n = floorf(x * 1.44269504088896341f + 0.5f);
  float r = fmaf(n, -0.693359375f, x);
  r = fmaf(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = fmaf(p, r, 1.3981999507e-3f);
  p = fmaf(p, r, 8.3334519073e-3f);
  p = fmaf(p, r, 4.1665795894e-2f);
  p = fmaf(p, r, 1.6666665459e-1f);
  p = fmaf(p, r, 5.0000001201e-1f);
  p = fmaf(p * r, r, r) + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
#if defined(__CUDA_ARCH__)
  const float scale = __int_as_float(bits);
#else
  float scale;
  __builtin_memcpy(&scale, &bits, sizeof(scale));
#endif
  return p * scale;
}

// tanh(x) = 1 - 2 / (e^(2x) + 1), absolute error about 2e-7 (all pst needs:
// GELU uses 1 + tanh).
PST_HD float tanh_approx(float x) { return 1.0f - 2.0f / (exp_approx(2.0f * x) + 1.0f); }

// ReLU and its derivative.
PST_HD float relu(float x) { return x > 0.0f ? x : 0.0f; }
PST_HD float relu_grad(float x) { return x > 0.0f ? 1.0f : 0.0f; }

// GELU with the exact Gaussian CDF: x * Phi(x).
PST_HD float gelu(float x) { return 0.5f * x * (1.0f + erff(x * kInvSqrt2)); }
PST_HD float gelu_grad(float x) {
  const float cdf = 0.5f * (1.0f + erff(x * kInvSqrt2));
  const float pdf = kInvSqrt2Pi * expf(-0.5f * x * x);
  return cdf + x * pdf;
}

// GELU with the tanh approximation (PyTorch approximate='tanh').
PST_HD float gelu_tanh(float x) {
  const float inner = kSqrt2OverPi * (x + 0.044715f * x * x * x);
  return 0.5f * x * (1.0f + tanh_approx(inner));
}
PST_HD float gelu_tanh_grad(float x) {
  const float inner = kSqrt2OverPi * (x + 0.044715f * x * x * x);
  const float t = tanh_approx(inner);
  const float dinner = kSqrt2OverPi * (1.0f + 3.0f * 0.044715f * x * x);
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * dinner;
}

// SiLU (swish), x * sigmoid(x), and its derivative: the gate of SwiGLU.
PST_HD float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }
PST_HD float silu(float x) { return x * sigmoid(x); }
PST_HD float silu_grad(float x) {
  const float s = sigmoid(x);
  return s * (1.0f + x * (1.0f - s));
}

// One rotary pair (Su et al. 2021): (a, b) turned by the angle whose cosine
// and sine are c and s, or back by it (the transpose, for the backward pass).
PST_HD void rotate_pair(float& a, float& b, float c, float s, bool inverse) {
  const float sn = inverse ? -s : s;
  const float x = a, y = b;
  a = x * c - y * sn;
  b = y * c + x * sn;
}

// Identifies one dropout mask: (seed, step, worker, site). Element i is kept
// when the i-th uniform of the stream is >= p; kept values are scaled by
// 1/(1-p) (inverted dropout, as torch.nn.Dropout).
struct DropoutKey {
  uint64_t seed = 0;
  uint64_t stream = 0;

  static DropoutKey make(uint64_t seed, uint64_t step, uint64_t worker, uint64_t site) {
    return DropoutKey{seed, mix_stream(mix_stream(step, worker), site)};
  }
};

PST_HD bool dropout_keep(uint64_t key, uint64_t stream, uint64_t i, float p) {
  return uniform01(philox_block(key, stream, i >> 2).v[i & 3]) >= p;
}

// One Adam/AdamW update of one element, in exactly the operation order and
// rounding of torch.optim.Adam / AdamW (single-tensor path, PyTorch 1.13), so
// that pst's updates match PyTorch bit for bit:
//   Adam (L2):  g = fma(w, wd, g)                  grad.add(param, alpha=wd)
//   AdamW:      w = w * (1 - lr*wd)                param.mul_(1 - lr*wd)
//   m = fma(g, 1-b1, m*b1)                         exp_avg.mul_(b1).add_(g, alpha=1-b1)
//   v = fma((1-b2)*g, g, v*b2)                     exp_avg_sq.mul_(b2).addcmul_(g, g, value=1-b2)
//   w = w + (-lr/bc1 * m) / (sqrt(v)/sqrt(bc2) + eps)
// PyTorch's CPU kernels use fused multiply-adds for add(alpha=) and addcmul;
// fmaf reproduces them. Callers are compiled without implicit contraction
// (-ffp-contract=off on the host, -fmad=false for the CUDA kernel), so the
// CPU and CUDA updates agree bit for bit.
struct AdamConstants {
  float beta1 = 0.9f, one_minus_beta1 = 0.1f;
  float beta2 = 0.999f, one_minus_beta2 = 0.001f;
  float decay_factor = 1.0f;   // AdamW: 1 - lr*wd (1 = no decay)
  float l2 = 0.0f;             // Adam: wd added to the gradient (0 = none)
  float neg_step_size = 0.0f;  // -lr / (1 - beta1^step)
  float bc2_sqrt = 1.0f;       // sqrt(1 - beta2^step)
  float eps = 1e-8f;
  // Global-norm clipping's coefficient, applied to the gradient as the
  // update reads it (1 = no clipping): the same float product as scaling
  // the gradient first, without a pass of its own.
  float grad_scale = 1.0f;
};

PST_HD void adam_update_element(float& w, float& m, float& v, float g, const AdamConstants& k) {
  g = g * k.grad_scale;
  g = fmaf(w, k.l2, g);
  w = w * k.decay_factor;
  m = fmaf(g, k.one_minus_beta1, m * k.beta1);
  v = fmaf(k.one_minus_beta2 * g, g, v * k.beta2);
  const float denom = sqrtf(v) / k.bc2_sqrt + k.eps;
  w = w + (k.neg_step_size * m) / denom;
}

// adam_update_element over n host floats (OpenMP threads for large n).
// Defined in model/backend/cpu/cpu_optimizer.cc, compiled with -ffp-contract=off.
void adam_update(float* w, float* m, float* v, const float* g, int64_t n, const AdamConstants& k);
// The same with the weights read from w and the updated ones written to out
// (out == w is the in-place update): the same values, without a pass that
// copies the weights elsewhere afterwards.
void adam_update(float* out, const float* w, float* m, float* v, const float* g, int64_t n, const AdamConstants& k);

// The sum of squares of n host floats in fp64, and whether any of them (or
// the sum) is not finite: the statistics of global-norm clipping.
double sum_squares(const float* x, int64_t n, bool* nonfinite);
// out = x[0] * weight[0] + x[1] * weight[1] + ... (k >= 1 host arrays of n
// floats, each product rounded and added in that order), and its sum of
// squares as sum_squares(out) gives it, in one pass over memory.
double weighted_sum(float* out, const float* const* x, const float* weight, int k, int64_t n, bool* nonfinite);
// The same over pieces laid end to end (a server's owned ranges, each where
// it lies): piece p has n[p] values, its k terms at x[p * k + j], its sum
// written to out[p]. With k = 1 and out null, the terms are only read (their
// sum of squares; weight unused). Each piece is taken in blocks of its own,
// the blocks' sums added in piece order.
double weighted_sum(float* const* out, const float* const* x, const float* weight, int k, const int64_t* n,
                    size_t pieces, bool* nonfinite);

// The factor of global-norm clipping (torch.nn.utils.clip_grad_norm_):
// min(1, max_norm / (norm + 1e-6)); 1 when max_norm is 0 (clipping off).
inline double clip_coefficient(double norm, double max_norm) {
  if (max_norm <= 0.0) return 1.0;
  return fmin(1.0, max_norm / (norm + 1e-6));
}

}  // namespace pst
