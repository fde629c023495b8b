// Kernels of the CUDA backend. The arithmetic of each element is the shared
// PST_HD function of model/elementwise.h that the CPU backend also calls;
// reductions (LayerNorm statistics, column sums, softmax, cross-entropy) run
// in a fixed order so results are deterministic.
#include <cub/cub.cuh>

#include <algorithm>
#include <cfloat>

#include "core/status.h"
#include "model/backend.h"
#include "model/backend/cuda/cuda_kernels.h"

namespace pst::cuda {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, int64_t{1} << 20));
}

// Grid-stride loop over [0, n).
#define PST_FOR_EACH(i, n)                                                               \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum (blockDim.x a multiple of 32, at most 1024); every thread
// gets the result. The tree is fixed, so the result depends only on the inputs.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T part[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  v = lane < warps ? part[lane] : T(0);
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Block-wide maximum with the smallest index among equal maxima (the first
// argmax, as the CPU backend's scan finds).
__device__ void block_max_arg(float& v, int64_t& arg) {
  __shared__ float pv[32];
  __shared__ int64_t pa[32];
  auto merge = [](float& a, int64_t& ai, float b, int64_t bi) {
    if (b > a || (b == a && bi < ai)) {
      a = b;
      ai = bi;
    }
  };
  for (int o = 16; o > 0; o >>= 1)
    merge(v, arg, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, arg, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) {
    pv[warp] = v;
    pa[warp] = arg;
  }
  __syncthreads();
  v = lane < warps ? pv[lane] : -FLT_MAX;
  arg = lane < warps ? pa[lane] : INT64_MAX;
  for (int o = 16; o > 0; o >>= 1)
    merge(v, arg, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, arg, o));
}

// ---- element-wise -----------------------------------------------------------

__global__ void fill_kernel(float* x, int64_t n, float value) { PST_FOR_EACH(i, n) x[i] = value; }
__global__ void add_kernel(float* y, const float* x, int64_t n) { PST_FOR_EACH(i, n) y[i] += x[i]; }
__global__ void axpy_kernel(float* y, float a, const float* x, int64_t n) { PST_FOR_EACH(i, n) y[i] += a * x[i]; }
__global__ void scale_kernel(float* y, float a, int64_t n) { PST_FOR_EACH(i, n) y[i] *= a; }
__global__ void add_bias_kernel(float* y, const float* b, int64_t n, int64_t cols) {
  PST_FOR_EACH(i, n) y[i] += b[i % cols];
}
// y(B, T*C) += pos(T*C) for every b.
__global__ void add_positions_kernel(float* y, const float* pos, int64_t n, int64_t TC) {
  PST_FOR_EACH(i, n) y[i] += pos[i % TC];
}

template <Activation A>
__device__ float act(float x) {
  if constexpr (A == Activation::kRelu)
    return relu(x);
  else if constexpr (A == Activation::kGelu)
    return gelu(x);
  else
    return gelu_tanh(x);
}
template <Activation A>
__device__ float act_grad(float x) {
  if constexpr (A == Activation::kRelu)
    return relu_grad(x);
  else if constexpr (A == Activation::kGelu)
    return gelu_grad(x);
  else
    return gelu_tanh_grad(x);
}
template <Activation A>
__global__ void activation_forward_kernel(float* y, const float* x, int64_t n) {
  PST_FOR_EACH(i, n) y[i] = act<A>(x[i]);
}
template <Activation A>
__global__ void activation_backward_kernel(float* dx, const float* dy, const float* x, int64_t n) {
  PST_FOR_EACH(i, n) dx[i] = dy[i] * act_grad<A>(x[i]);
}

__global__ void dropout_kernel(float* y, const float* x, int64_t n, float p, uint64_t seed, uint64_t stream,
                               int64_t offset) {
  const float s = 1.0f / (1.0f - p);
  PST_FOR_EACH(i, n) {
    const bool keep = dropout_keep(seed, stream, static_cast<uint64_t>(offset + i), p);
    y[i] = keep ? x[i] * s : 0.0f;
  }
}

// ---- column reductions ------------------------------------------------------

// Column sums in two passes: blocks of (32 columns x kColumnChunkRows rows)
// write partial sums, then one thread per column adds the chunks in order.
constexpr int kColTile = 32, kRowLanes = 8;

struct PlainValue {
  const float* x;
  int64_t cols;
  __device__ float operator()(int64_t r, int64_t c) const { return x[r * cols + c]; }
};
// dy * xhat, the summand of LayerNorm's weight gradient.
struct NormalisedProduct {
  const float* dy;
  const float* x;
  const float* mean;
  const float* rstd;
  int64_t cols;
  __device__ float operator()(int64_t r, int64_t c) const {
    const int64_t i = r * cols + c;
    return dy[i] * ((x[i] - mean[r]) * rstd[r]);
  }
};

template <typename F>
__global__ void column_partial_kernel(F f, int64_t rows, int64_t cols, float* partial) {
  __shared__ float sh[kRowLanes][kColTile];
  const int64_t c = blockIdx.x * static_cast<int64_t>(kColTile) + threadIdx.x;
  const int64_t r0 = blockIdx.y * kColumnChunkRows;
  const int64_t r1 = min(rows, r0 + kColumnChunkRows);
  float acc = 0.0f;
  if (c < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes) acc += f(r, c);
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float s = 0.0f;
    for (int k = 0; k < kRowLanes; ++k) s += sh[k][threadIdx.x];
    partial[blockIdx.y * cols + c] = s;
  }
}

__global__ void column_finish_kernel(float* out, const float* partial, int64_t chunks, int64_t cols) {
  PST_FOR_EACH(c, cols) {
    float s = 0.0f;
    for (int64_t k = 0; k < chunks; ++k) s += partial[k * cols + c];
    out[c] += s;
  }
}

template <typename F>
void column_reduce(float* out, F f, int64_t rows, int64_t cols, float* scratch, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  const int64_t chunks = (rows + kColumnChunkRows - 1) / kColumnChunkRows;
  const dim3 grid(static_cast<unsigned>((cols + kColTile - 1) / kColTile), static_cast<unsigned>(chunks));
  column_partial_kernel<<<grid, dim3(kColTile, kRowLanes), 0, stream>>>(f, rows, cols, scratch);
  column_finish_kernel<<<grid_for(cols), kThreads, 0, stream>>>(out, scratch, chunks, cols);
}

// ---- LayerNorm: one warp per row -------------------------------------------

constexpr int kRowsPerBlock = 8;

__global__ void layernorm_forward_kernel(float* y, float* mean, float* rstd, const float* x, const float* w,
                                         const float* b, int64_t rows, int64_t C, float eps) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.y;
  if (r >= rows) return;
  const float* xr = x + r * C;
  float s = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += 32) s += xr[c];
  const float m = warp_sum(s) / static_cast<float>(C);
  float v = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += 32) {
    const float d = xr[c] - m;
    v += d * d;
  }
  const float rs = 1.0f / sqrtf(warp_sum(v) / static_cast<float>(C) + eps);
  float* yr = y + r * C;
  for (int64_t c = threadIdx.x; c < C; c += 32) yr[c] = (xr[c] - m) * rs * w[c] + b[c];
  if (threadIdx.x == 0) {
    mean[r] = m;
    rstd[r] = rs;
  }
}

__global__ void layernorm_backward_kernel(float* dx, const float* dy, const float* x, const float* w, const float* mean,
                                          const float* rstd, int64_t rows, int64_t C) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.y;
  if (r >= rows) return;
  const float* xr = x + r * C;
  const float* dyr = dy + r * C;
  const float m = mean[r], s = rstd[r];
  float sum_g = 0.0f, sum_gx = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += 32) {
    const float g = dyr[c] * w[c];
    sum_g += g;
    sum_gx += g * ((xr[c] - m) * s);
  }
  const float mg = warp_sum(sum_g) / static_cast<float>(C);
  const float mgx = warp_sum(sum_gx) / static_cast<float>(C);
  float* dxr = dx + r * C;
  for (int64_t c = threadIdx.x; c < C; c += 32) dxr[c] = s * (dyr[c] * w[c] - mg - ((xr[c] - m) * s) * mgx);
}

// ---- RMSNorm: one warp per row ---------------------------------------------

__global__ void rmsnorm_forward_kernel(float* y, float* rstd, const float* x, const float* w, int64_t rows, int64_t C,
                                       float eps) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.y;
  if (r >= rows) return;
  const float* xr = x + r * C;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += 32) ss += xr[c] * xr[c];
  const float rs = 1.0f / sqrtf(warp_sum(ss) / static_cast<float>(C) + eps);
  float* yr = y + r * C;
  for (int64_t c = threadIdx.x; c < C; c += 32) yr[c] = xr[c] * rs * w[c];
  if (threadIdx.x == 0) rstd[r] = rs;
}

__global__ void rmsnorm_backward_kernel(float* dx, const float* dy, const float* x, const float* w, const float* rstd,
                                        int64_t rows, int64_t C) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.y;
  if (r >= rows) return;
  const float* xr = x + r * C;
  const float* dyr = dy + r * C;
  const float s = rstd[r];
  float sum_gx = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += 32) sum_gx += dyr[c] * w[c] * (xr[c] * s);
  const float mgx = warp_sum(sum_gx) / static_cast<float>(C);
  float* dxr = dx + r * C;
  for (int64_t c = threadIdx.x; c < C; c += 32) dxr[c] = s * (dyr[c] * w[c] - xr[c] * s * mgx);
}

// dy * x * rstd, the summand of RMSNorm's weight gradient.
struct RmsProduct {
  const float* dy;
  const float* x;
  const float* rstd;
  int64_t cols;
  __device__ float operator()(int64_t r, int64_t c) const {
    const int64_t i = r * cols + c;
    return dy[i] * (x[i] * rstd[r]);
  }
};

// ---- rotary positions and SwiGLU ---------------------------------------------

// One thread per (row, head, pair).
__global__ void rope_kernel(float* x, int64_t ld, int64_t T, int64_t heads, int64_t half, const float* cos,
                            const float* sin, int64_t first, bool inverse, int64_t n) {
  PST_FOR_EACH(idx, n) {
    const int64_t i = idx % half, h = (idx / half) % heads, r = idx / (half * heads);
    const int64_t at = (first + r % T) * half + i;
    float* head = x + r * ld + h * 2 * half;
    rotate_pair(head[i], head[i + half], cos[at], sin[at], inverse);
  }
}

__global__ void swiglu_forward_kernel(float* y, const float* x, int64_t F, int64_t n) {
  PST_FOR_EACH(idx, n) {
    const int64_t r = idx / F, j = idx % F;
    const float* g = x + r * 2 * F;
    y[idx] = silu(g[j]) * g[F + j];
  }
}

__global__ void swiglu_backward_kernel(float* dx, const float* dy, const float* x, int64_t F, int64_t n) {
  PST_FOR_EACH(idx, n) {
    const int64_t r = idx / F, j = idx % F;
    const float* g = x + r * 2 * F;
    dx[r * 2 * F + j] = dy[idx] * g[F + j] * silu_grad(g[j]);
    dx[r * 2 * F + F + j] = dy[idx] * silu(g[j]);
  }
}

// ---- embeddings -------------------------------------------------------------

__global__ void embedding_forward_kernel(float* y, const int32_t* ids, const float* table, int64_t n, int64_t C,
                                         float scale) {
  PST_FOR_EACH(i, n * C) {
    const int64_t row = i / C, c = i % C;
    y[i] = table[static_cast<int64_t>(ids[row]) * C + c] * scale;
  }
}

__global__ void iota_kernel(int32_t* out, int64_t n) { PST_FOR_EACH(i, n) out[i] = static_cast<int32_t>(i); }

// One block per sorted position; the first position of each run of equal ids
// adds that run's rows (in order of their original index: the sort is stable).
__global__ void embedding_backward_kernel(float* dtable, const int32_t* keys, const int32_t* order, const float* dy,
                                          int64_t n, int64_t C, float scale) {
  const int64_t i = blockIdx.x;
  if (i > 0 && keys[i] == keys[i - 1]) return;
  const int32_t id = keys[i];
  float* row = dtable + static_cast<int64_t>(id) * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = row[c];
    for (int64_t j = i; j < n && keys[j] == id; ++j) acc += dy[static_cast<int64_t>(order[j]) * C + c] * scale;
    row[c] = acc;
  }
}

// ---- attention --------------------------------------------------------------

// One warp per row (b, h, i) of the (B, H, Tq, Tk) probabilities; the row's
// first element is element r * Tk of the tensor, which is also its place in
// the dropout stream.
__global__ void attention_softmax_kernel(int64_t rows, int64_t H, int64_t Tq, int64_t Tk, bool causal,
                                         const int32_t* key_len, float* probs, float* dropped, float p, uint64_t seed,
                                         uint64_t stream) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.y;
  if (r >= rows) return;
  const int64_t b = r / (H * Tq), i = r % Tq;
  const int64_t len = min(max(static_cast<int64_t>(key_len[b]), int64_t{0}), Tk);
  const int64_t visible = causal ? min(len, i + 1) : len;
  float* row = probs + r * Tk;
  float mx = -FLT_MAX;
  for (int64_t j = threadIdx.x; j < visible; j += 32) mx = fmaxf(mx, row[j]);
  mx = warp_max(mx);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < visible; j += 32) {
    const float e = exp_approx(row[j] - mx);
    row[j] = e;
    sum += e;
  }
  sum = warp_sum(sum);
  const float inv = visible > 0 ? 1.0f / sum : 0.0f;
  const float s = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
  for (int64_t j = threadIdx.x; j < Tk; j += 32) {
    const float v = j < visible ? row[j] * inv : 0.0f;
    row[j] = v;
    if (p > 0.0f) {
      const uint64_t at = static_cast<uint64_t>(r * Tk + j);
      dropped[r * Tk + j] = dropout_keep(seed, stream, at, p) ? v * s : 0.0f;
    }
  }
}

__global__ void attention_softmax_backward_kernel(int64_t rows, int64_t Tk, const float* probs, float* g, float p,
                                                  uint64_t seed, uint64_t stream) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.y;
  if (r >= rows) return;
  const float* pr = probs + r * Tk;
  float* gr = g + r * Tk;
  const float s = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
  float dot = 0.0f;
  for (int64_t j = threadIdx.x; j < Tk; j += 32) {
    float v = gr[j];
    if (p > 0.0f) v = dropout_keep(seed, stream, static_cast<uint64_t>(r * Tk + j), p) ? v * s : 0.0f;
    gr[j] = v;
    dot += v * pr[j];
  }
  dot = warp_sum(dot);
  for (int64_t j = threadIdx.x; j < Tk; j += 32) gr[j] = pr[j] * (gr[j] - dot);
}

// ---- cross-entropy and argmax: one block per row ----------------------------

__global__ void cross_entropy_kernel(const float* logits, const int32_t* targets, int64_t V, float smoothing,
                                     float grad_scale, float* dlogits, double* row_loss, int32_t* row_correct) {
  const int64_t i = blockIdx.x;
  const float* x = logits + i * V;
  float* g = dlogits ? dlogits + i * V : nullptr;
  const int32_t t = targets[i];
  if (t < 0) {
    if (g)
      for (int64_t c = threadIdx.x; c < V; c += blockDim.x) g[c] = 0.0f;
    if (threadIdx.x == 0) {
      row_loss[i] = 0.0;
      row_correct[i] = 0;
    }
    return;
  }
  const float xt = x[t];  // read before any thread overwrites x (dlogits may alias logits)
  float mx = -FLT_MAX;
  int64_t arg = INT64_MAX;
  for (int64_t c = threadIdx.x; c < V; c += blockDim.x)
    if (x[c] > mx) {
      mx = x[c];
      arg = c;
    }
  block_max_arg(mx, arg);
  double sum = 0.0, sum_logits = 0.0;
  for (int64_t c = threadIdx.x; c < V; c += blockDim.x) {
    sum += exp(static_cast<double>(x[c] - mx));
    sum_logits += x[c];
  }
  sum = block_sum(sum);
  sum_logits = block_sum(sum_logits);
  if (threadIdx.x == 0) {
    const double lse = mx + log(sum);
    const double nll = lse - xt;
    const double smooth = lse - sum_logits / static_cast<double>(V);
    row_loss[i] = (1.0 - smoothing) * nll + smoothing * smooth;
    row_correct[i] = arg == t ? 1 : 0;
  }
  if (g) {
    const float inv = static_cast<float>(1.0 / sum);
    const float off = smoothing / static_cast<float>(V);
    for (int64_t c = threadIdx.x; c < V; c += blockDim.x) {
      const float prob = expf(x[c] - mx) * inv;
      g[c] = grad_scale * (prob - off - (c == t ? 1.0f - smoothing : 0.0f));
    }
  }
}

__global__ void cross_entropy_total_kernel(const double* row_loss, const int32_t* row_correct, int64_t N, double* total,
                                           int64_t* correct) {
  double s = 0.0;
  long long k = 0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    s += row_loss[i];
    k += row_correct[i];
  }
  s = block_sum(s);
  k = block_sum(k);
  if (threadIdx.x == 0) {
    *total = s;
    *correct = k;
  }
}

__global__ void argmax_kernel(const float* x, int64_t V, int32_t* out) {
  const float* r = x + blockIdx.x * V;
  float mx = -FLT_MAX;
  int64_t arg = INT64_MAX;
  for (int64_t c = threadIdx.x; c < V; c += blockDim.x)
    if (r[c] > mx) {
      mx = r[c];
      arg = c;
    }
  block_max_arg(mx, arg);
  if (threadIdx.x == 0) out[blockIdx.x] = static_cast<int32_t>(arg == INT64_MAX ? 0 : arg);
}

__global__ void sum_squares_partial_kernel(const float* x, int64_t n, double* partial, int* partial_bad) {
  double s = 0.0;
  int bad = 0;
  PST_FOR_EACH(i, n) {
    const float v = x[i];
    s += static_cast<double>(v) * v;
    bad |= isfinite(v) ? 0 : 1;
  }
  s = block_sum(s);
  bad = block_sum(bad);
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = s;
    partial_bad[blockIdx.x] = bad;
  }
}

__global__ void sum_squares_final_kernel(const double* partial, const int* partial_bad, int blocks, double* result,
                                         int* bad) {
  double s = 0.0;
  int b = 0;
  for (int i = threadIdx.x; i < blocks; i += blockDim.x) {
    s += partial[i];
    b += partial_bad[i];
  }
  s = block_sum(s);
  b = block_sum(b);
  if (threadIdx.x == 0) {
    *result = s;
    *bad = (b != 0 || !isfinite(s)) ? 1 : 0;
  }
}

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock); }

}  // namespace

void fill(float* x, int64_t n, float value, cudaStream_t stream) {
  if (n > 0) fill_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, n, value);
}
void add(float* y, const float* x, int64_t n, cudaStream_t stream) {
  if (n > 0) add_kernel<<<grid_for(n), kThreads, 0, stream>>>(y, x, n);
}
void axpy(float* y, float a, const float* x, int64_t n, cudaStream_t stream) {
  if (n > 0) axpy_kernel<<<grid_for(n), kThreads, 0, stream>>>(y, a, x, n);
}
void scale(float* y, float a, int64_t n, cudaStream_t stream) {
  if (n > 0) scale_kernel<<<grid_for(n), kThreads, 0, stream>>>(y, a, n);
}
void add_bias(float* y, const float* b, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows * cols > 0) add_bias_kernel<<<grid_for(rows * cols), kThreads, 0, stream>>>(y, b, rows * cols, cols);
}
void add_positions(float* y, const float* pos, int64_t B, int64_t T, int64_t C, cudaStream_t stream) {
  const int64_t n = B * T * C;
  if (n > 0) add_positions_kernel<<<grid_for(n), kThreads, 0, stream>>>(y, pos, n, T * C);
}

void column_sums(float* out, const float* x, int64_t rows, int64_t cols, float* scratch, cudaStream_t stream) {
  column_reduce(out, PlainValue{x, cols}, rows, cols, scratch, stream);
}

void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b, int64_t rows,
                       int64_t C, float eps, cudaStream_t stream) {
  if (rows == 0) return;
  layernorm_forward_kernel<<<row_blocks(rows), dim3(32, kRowsPerBlock), 0, stream>>>(y, mean, rstd, x, w, b, rows, C,
                                                                                     eps);
}

void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                        const float* mean, const float* rstd, int64_t rows, int64_t C, float* scratch,
                        cudaStream_t stream) {
  if (rows == 0) return;
  layernorm_backward_kernel<<<row_blocks(rows), dim3(32, kRowsPerBlock), 0, stream>>>(dx, dy, x, w, mean, rstd, rows,
                                                                                      C);
  column_reduce(dw, NormalisedProduct{dy, x, mean, rstd, C}, rows, C, scratch, stream);
  column_reduce(db, PlainValue{dy, C}, rows, C, scratch, stream);
}

void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t rows, int64_t C, float eps,
                     cudaStream_t stream) {
  if (rows == 0) return;
  rmsnorm_forward_kernel<<<row_blocks(rows), dim3(32, kRowsPerBlock), 0, stream>>>(y, rstd, x, w, rows, C, eps);
}

void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                      int64_t rows, int64_t C, float* scratch, cudaStream_t stream) {
  if (rows == 0) return;
  rmsnorm_backward_kernel<<<row_blocks(rows), dim3(32, kRowsPerBlock), 0, stream>>>(dx, dy, x, w, rstd, rows, C);
  column_reduce(dw, RmsProduct{dy, x, rstd, C}, rows, C, scratch, stream);
}

void rope(float* x, int64_t ld, int64_t B, int64_t T, int64_t heads, int64_t D, const float* cos, const float* sin,
          int64_t first, bool inverse, cudaStream_t stream) {
  const int64_t n = B * T * heads * (D / 2);
  if (n > 0) rope_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, ld, T, heads, D / 2, cos, sin, first, inverse, n);
}

void swiglu_forward(float* y, const float* x, int64_t rows, int64_t F, cudaStream_t stream) {
  if (rows * F > 0) swiglu_forward_kernel<<<grid_for(rows * F), kThreads, 0, stream>>>(y, x, F, rows * F);
}

void swiglu_backward(float* dx, const float* dy, const float* x, int64_t rows, int64_t F, cudaStream_t stream) {
  if (rows * F > 0) swiglu_backward_kernel<<<grid_for(rows * F), kThreads, 0, stream>>>(dx, dy, x, F, rows * F);
}

void activation_forward(Activation a, float* y, const float* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  switch (a) {
    case Activation::kRelu:
      activation_forward_kernel<Activation::kRelu><<<grid_for(n), kThreads, 0, stream>>>(y, x, n);
      break;
    case Activation::kGelu:
      activation_forward_kernel<Activation::kGelu><<<grid_for(n), kThreads, 0, stream>>>(y, x, n);
      break;
    case Activation::kGeluTanh:
      activation_forward_kernel<Activation::kGeluTanh><<<grid_for(n), kThreads, 0, stream>>>(y, x, n);
      break;
    case Activation::kSwiGLU: PST_CHECK_MSG(false, "swiglu is swiglu_forward's, not an element-wise activation");
  }
}

void activation_backward(Activation a, float* dx, const float* dy, const float* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  switch (a) {
    case Activation::kRelu:
      activation_backward_kernel<Activation::kRelu><<<grid_for(n), kThreads, 0, stream>>>(dx, dy, x, n);
      break;
    case Activation::kGelu:
      activation_backward_kernel<Activation::kGelu><<<grid_for(n), kThreads, 0, stream>>>(dx, dy, x, n);
      break;
    case Activation::kGeluTanh:
      activation_backward_kernel<Activation::kGeluTanh><<<grid_for(n), kThreads, 0, stream>>>(dx, dy, x, n);
      break;
    case Activation::kSwiGLU: PST_CHECK_MSG(false, "swiglu is swiglu_backward's, not an element-wise activation");
  }
}

void dropout(float* y, const float* x, int64_t n, float p, DropoutKey key, int64_t offset, cudaStream_t stream) {
  if (n == 0) return;
  if (p <= 0.0f) {
    if (y != x) cudaMemcpyAsync(y, x, static_cast<size_t>(n) * sizeof(float), cudaMemcpyDeviceToDevice, stream);
    return;
  }
  dropout_kernel<<<grid_for(n), kThreads, 0, stream>>>(y, x, n, p, key.seed, key.stream, offset);
}

void embedding_forward(float* y, const int32_t* ids, const float* table, int64_t n, int64_t C, float scale,
                       cudaStream_t stream) {
  if (n * C > 0) embedding_forward_kernel<<<grid_for(n * C), kThreads, 0, stream>>>(y, ids, table, n, C, scale);
}

size_t embedding_sort_temp_bytes(int64_t n) {
  size_t bytes = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
                                  static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
                                  static_cast<int>(n));
  return bytes;
}

void embedding_backward(float* dtable, const int32_t* ids, const float* dy, int64_t n, int64_t C, float scale,
                        const EmbeddingSortScratch& s, cudaStream_t stream) {
  if (n == 0 || C == 0) return;
  iota_kernel<<<grid_for(n), kThreads, 0, stream>>>(s.order_in, n);
  size_t bytes = s.temp_bytes;
  cub::DeviceRadixSort::SortPairs(s.temp, bytes, ids, s.keys_out, s.order_in, s.order_out, static_cast<int>(n), 0,
                                  static_cast<int>(sizeof(int32_t) * 8), stream);
  const int threads = static_cast<int>(std::min<int64_t>(256, (C + 31) / 32 * 32));
  embedding_backward_kernel<<<static_cast<unsigned>(n), threads, 0, stream>>>(dtable, s.keys_out, s.order_out, dy, n, C,
                                                                              scale);
}

void attention_softmax(const AttentionDims& d, const int32_t* key_len, float* probs, float* dropped, float p,
                       DropoutKey key, cudaStream_t stream) {
  const int64_t rows = d.B * d.H * d.Tq;
  if (rows == 0) return;
  attention_softmax_kernel<<<row_blocks(rows), dim3(32, kRowsPerBlock), 0, stream>>>(
      rows, d.H, d.Tq, d.Tk, d.causal, key_len, probs, dropped, p, key.seed, key.stream);
}

void attention_softmax_backward(const AttentionDims& d, const float* probs, float* g, float p, DropoutKey key,
                                cudaStream_t stream) {
  const int64_t rows = d.B * d.H * d.Tq;
  if (rows == 0) return;
  attention_softmax_backward_kernel<<<row_blocks(rows), dim3(32, kRowsPerBlock), 0, stream>>>(rows, d.Tk, probs, g, p,
                                                                                              key.seed, key.stream);
}

void cross_entropy(const float* logits, const int32_t* targets, int64_t N, int64_t V, float smoothing, float grad_scale,
                   float* dlogits, const CrossEntropyScratch& s, cudaStream_t stream) {
  if (N > 0)
    cross_entropy_kernel<<<static_cast<unsigned>(N), kThreads, 0, stream>>>(logits, targets, V, smoothing, grad_scale,
                                                                            dlogits, s.row_loss, s.row_correct);
  cross_entropy_total_kernel<<<1, 1024, 0, stream>>>(s.row_loss, s.row_correct, N, s.total_loss, s.total_correct);
}

void sum_squares(const float* x, int64_t n, double* partial, int* partial_bad, double* result, int* bad,
                 cudaStream_t stream) {
  sum_squares_partial_kernel<<<kSumSquaresBlocks, kThreads, 0, stream>>>(x, n, partial, partial_bad);
  sum_squares_final_kernel<<<1, kThreads, 0, stream>>>(partial, partial_bad, kSumSquaresBlocks, result, bad);
}

void argmax(const float* x, int64_t N, int64_t V, int32_t* out, cudaStream_t stream) {
  if (N > 0) argmax_kernel<<<static_cast<unsigned>(N), kThreads, 0, stream>>>(x, V, out);
}

}  // namespace pst::cuda
