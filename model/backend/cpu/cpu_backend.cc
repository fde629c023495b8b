// The CPU backend: OpenBLAS sgemm for every matrix product (with
// train.blas = "onednn", oneDNN's float32 products where they gain, and
// with train.matmul = "bf16" its bf16 products for Backend::gemm's:
// onednn_gemm.h), OpenMP for the rest. OpenBLAS and oneDNN run single-threaded;
// parallelism comes from splitting the output of large products across OpenMP
// threads and from parallel loops over rows, heads and elements, so no two
// thread pools compete for the 2 cores.
//
// Results do not depend on the number of threads, bit for bit: every
// reduction is cut into blocks whose boundaries follow from the shapes alone
// (never from the thread count), each block is summed in index order by one
// thread, and the blocks' partial results are combined in block order.
// Threads only decide who computes a block, not what it computes.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <utility>
#include <vector>

#include "core/status.h"
#include "model/backend.h"
#include "model/backend/cpu/onednn_gemm.h"

namespace pst {
namespace {

// Products below this many multiply-adds are one sgemm call.
constexpr double kParallelGemmFlops = 2e6;
// Larger products are cut along their larger output dimension into blocks
// of at least kGemmMinBlock rows (or columns), at most kGemmMaxBlocks of
// them, of equal size up to a multiple of kGemmAlign. Smaller blocks cost
// OpenBLAS efficiency; fewer leave cores idle.
constexpr int64_t kGemmMinBlock = 128;
constexpr int64_t kGemmMaxBlocks = 8;
constexpr int64_t kGemmAlign = 16;
// Rows per block of the layer-norm parameter gradients.
constexpr int64_t kRowBlock = 32;

// The open GEMM log (start_gemm_log): off, one relaxed load a product.
std::atomic<bool> gemm_logging{false};
std::mutex gemm_log_mu;
std::vector<GemmRecord> gemm_log;

// Runs product(), recording its shape and time while the log is open.
template <typename F>
void logged_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, bool per_thread, F product) {
  if (!gemm_logging.load(std::memory_order_relaxed)) {
    product();
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  product();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::lock_guard<std::mutex> lock(gemm_log_mu);
  gemm_log.push_back({ta, tb, M, N, K, per_thread, seconds});
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(int threads, bool bf16, CpuBlas blas)
      : bf16_(bf16), fp32_(blas == CpuBlas::kOneDnn ? onednn_or_openblas : sgemm) {
    if (threads > 0) omp_set_num_threads(threads);
    openblas_set_num_threads(1);
  }

  const char* name() const override { return "cpu"; }

  void* allocate(size_t bytes) override {
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, std::max<size_t>(rounded, 64));
    PST_CHECK_MSG(p != nullptr, "cpu backend: out of memory allocating {} bytes", bytes);
    std::memset(p, 0, rounded);
    return p;
  }
  void deallocate(void* p) override { std::free(p); }
  void* allocate_host(size_t bytes) override {
    void* p = std::aligned_alloc(64, std::max<size_t>((bytes + 63) / 64 * 64, 64));
    PST_CHECK_MSG(p != nullptr, "cpu backend: out of memory allocating {} host bytes", bytes);
    return p;
  }
  void deallocate_host(void* p) override { std::free(p); }
  bool host_memory() const override { return true; }
  void upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }

  void fill(float* x, int64_t n, float value) override {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) x[i] = value;
  }
  void copy(float* dst, const float* src, int64_t n) override {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
  }
  void copy_rows(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols) override {
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(dst + r * ld_dst, src + r * ld_src, static_cast<size_t>(cols) * sizeof(float));
  }
  void add(float* y, const float* x, int64_t n) override {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
  }
  void axpy(float* y, float a, const float* x, int64_t n) override {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
  }
  void scale(float* y, float a, int64_t n) override {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) y[i] *= a;
  }

  void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
            int64_t ldb, float beta, float* C, int64_t ldc) override {
    if (M == 0 || N == 0) return;
    logged_gemm(ta, tb, M, N, K, omp_in_parallel() != 0, [&] {
      if (bf16_ && K > 0)
        rounded_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
      else
        blocked(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, fp32_);
    });
  }

  // gemm() in bf16: both operands rounded once, then cut into blocks as in
  // fp32, each block one single-threaded oneDNN product.
  static void rounded_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    thread_local std::vector<uint16_t> a16, b16;
    const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
    // Grown, never shrunk: resizing a vector up zeroes the values it adds,
    // even within its capacity, a pass over memory the rounding overwrites
    // (1.3% of a bf16 g2p-modern step's main thread when the sizes alternated).
    if (a16.size() < static_cast<size_t>(a_rows * a_cols)) a16.resize(static_cast<size_t>(a_rows * a_cols));
    if (b16.size() < static_cast<size_t>(b_rows * b_cols)) b16.resize(static_cast<size_t>(b_rows * b_cols));
    round_to_bf16(A, a_rows, a_cols, lda, a16.data());
    round_to_bf16(B, b_rows, b_cols, ldb, b16.data());
    blocked(ta, tb, M, N, K, alpha, a16.data(), a_cols, b16.data(), b_cols, beta, C, ldc, bf16_gemm);
  }

  // A large product cut into blocks, product() once per block (sgemm, or
  // bf16_gemm on rounded operands).
  template <typename T, typename F>
  static void blocked(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const T* A, int64_t lda,
                      const T* B, int64_t ldb, float beta, float* C, int64_t ldc, F product) {
    const double flops = static_cast<double>(M) * N * K;
    if (flops < kParallelGemmFlops) {
      product(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
      return;
    }
    // The blocks depend on the shape only: OpenBLAS may choose another kernel
    // for another block size, so a split that followed the thread count
    // would change the rounding with it.
    const bool split_rows = M >= N;
    const int64_t extent = split_rows ? M : N;
    const int64_t blocks = std::clamp<int64_t>(extent / kGemmMinBlock, 1, kGemmMaxBlocks);
    auto edge = [&](int64_t b) { return b == blocks ? extent : extent * b / blocks / kGemmAlign * kGemmAlign; };
#pragma omp parallel for schedule(static) if (blocks > 1 && !omp_in_parallel())
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t begin = edge(blk), end = edge(blk + 1);
      if (split_rows) {
        const T* a = ta ? A + begin : A + begin * lda;
        product(ta, tb, end - begin, N, K, alpha, a, lda, B, ldb, beta, C + begin * ldc, ldc);
      } else {
        const T* b = tb ? B + begin * ldb : B + begin;
        product(ta, tb, M, end - begin, K, alpha, A, lda, b, ldb, beta, C + begin, ldc);
      }
    }
  }

  void add_bias(float* y, const float* b, int64_t rows, int64_t cols) override {
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
    for (int64_t r = 0; r < rows; ++r) {
      float* yr = y + r * cols;
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) yr[c] += b[c];
    }
  }

  void bias_grad(float* db, const float* dy, int64_t rows, int64_t cols) override {
    // Columns are independent, so threads take column blocks and each sums its
    // rows in order: the result does not depend on the thread count.
    constexpr int64_t kBlock = 64;
    const int64_t blocks = (cols + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t c0 = blk * kBlock, c1 = std::min(cols, c0 + kBlock);
      float acc[kBlock] = {};
      for (int64_t r = 0; r < rows; ++r) {
        const float* d = dy + r * cols;
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) acc[c - c0] += d[c];
      }
      for (int64_t c = c0; c < c1; ++c) db[c] += acc[c - c0];
    }
  }

  void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b,
                         int64_t rows, int64_t C, float eps) override {
#pragma omp parallel for schedule(static) if (rows * C > 32768)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * C;
      float* yr = y + r * C;
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t c = 0; c < C; ++c) sum += xr[c];
      const float m = sum / static_cast<float>(C);
      float var = 0.0f;
#pragma omp simd reduction(+ : var)
      for (int64_t c = 0; c < C; ++c) var += (xr[c] - m) * (xr[c] - m);
      var /= static_cast<float>(C);
      const float s = 1.0f / std::sqrt(var + eps);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m) * s * w[c] + b[c];
      mean[r] = m;
      rstd[r] = s;
    }
  }

  void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                          const float* mean, const float* rstd, int64_t rows, int64_t C) override {
    // dx row by row; dw and db summed over blocks of kRowBlock rows, then
    // over the blocks in order.
    const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
    std::vector<float> partial(static_cast<size_t>(blocks) * 2 * C, 0.0f);
#pragma omp parallel for schedule(static) if (rows * C > 32768)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      float* pdw = partial.data() + static_cast<size_t>(blk) * 2 * C;
      float* pdb = pdw + C;
      for (int64_t r = blk * kRowBlock; r < std::min(rows, (blk + 1) * kRowBlock); ++r) {
        const float* xr = x + r * C;
        const float* dyr = dy + r * C;
        float* dxr = dx + r * C;
        const float m = mean[r], s = rstd[r];
        float sum_g = 0.0f, sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
        for (int64_t c = 0; c < C; ++c) {
          const float xhat = (xr[c] - m) * s;
          const float g = dyr[c] * w[c];
          sum_g += g;
          sum_gx += g * xhat;
          pdw[c] += dyr[c] * xhat;
          pdb[c] += dyr[c];
        }
        const float mg = sum_g / static_cast<float>(C), mgx = sum_gx / static_cast<float>(C);
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const float xhat = (xr[c] - m) * s;
          dxr[c] = s * (dyr[c] * w[c] - mg - xhat * mgx);
        }
      }
    }
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const float* pdw = partial.data() + static_cast<size_t>(blk) * 2 * C;
      for (int64_t c = 0; c < C; ++c) {
        dw[c] += pdw[c];
        db[c] += pdw[C + c];
      }
    }
  }

  void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t rows, int64_t C,
                       float eps) override {
#pragma omp parallel for schedule(static) if (rows * C > 32768)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * C;
      float* yr = y + r * C;
      float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
      for (int64_t c = 0; c < C; ++c) ss += xr[c] * xr[c];
      const float s = 1.0f / std::sqrt(ss / static_cast<float>(C) + eps);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * s * w[c];
      rstd[r] = s;
    }
  }

  void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                        int64_t rows, int64_t C) override {
    // As layernorm_backward: dx row by row, dw over blocks of rows in order.
    // dx = s * (dy*w - xhat * mean(dy*w*xhat)) with xhat = x * s.
    const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
    std::vector<float> partial(static_cast<size_t>(blocks) * C, 0.0f);
#pragma omp parallel for schedule(static) if (rows * C > 32768)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      float* pdw = partial.data() + static_cast<size_t>(blk) * C;
      for (int64_t r = blk * kRowBlock; r < std::min(rows, (blk + 1) * kRowBlock); ++r) {
        const float* xr = x + r * C;
        const float* dyr = dy + r * C;
        float* dxr = dx + r * C;
        const float s = rstd[r];
        float sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_gx)
        for (int64_t c = 0; c < C; ++c) {
          const float xhat = xr[c] * s;
          sum_gx += dyr[c] * w[c] * xhat;
          pdw[c] += dyr[c] * xhat;
        }
        const float mgx = sum_gx / static_cast<float>(C);
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dxr[c] = s * (dyr[c] * w[c] - xr[c] * s * mgx);
      }
    }
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const float* pdw = partial.data() + static_cast<size_t>(blk) * C;
      for (int64_t c = 0; c < C; ++c) dw[c] += pdw[c];
    }
  }

  void rope(float* x, int64_t ld, int64_t B, int64_t T, int64_t heads, int64_t D, const float* cos, const float* sin,
            int64_t first, bool inverse) override {
    const int64_t half = D / 2;
#pragma omp parallel for schedule(static) if (B * T * heads * D > 65536)
    for (int64_t r = 0; r < B * T; ++r) {
      const int64_t at = (first + r % T) * half;
      for (int64_t h = 0; h < heads; ++h) {
        float* head = x + r * ld + h * D;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) rotate_pair(head[i], head[i + half], cos[at + i], sin[at + i], inverse);
      }
    }
  }

  void swiglu_forward(float* y, const float* x, int64_t rows, int64_t F) override {
#pragma omp parallel for schedule(static) if (rows * F > 32768)
    for (int64_t r = 0; r < rows; ++r) {
      const float* g = x + r * 2 * F;
      float* yr = y + r * F;
#pragma omp simd
      for (int64_t j = 0; j < F; ++j) yr[j] = silu(g[j]) * g[F + j];
    }
  }

  void swiglu_backward(float* dx, const float* dy, const float* x, int64_t rows, int64_t F) override {
#pragma omp parallel for schedule(static) if (rows * F > 32768)
    for (int64_t r = 0; r < rows; ++r) {
      const float* g = x + r * 2 * F;
      const float* dyr = dy + r * F;
      float* dxr = dx + r * 2 * F;
#pragma omp simd
      for (int64_t j = 0; j < F; ++j) {
        dxr[j] = dyr[j] * g[F + j] * silu_grad(g[j]);
        dxr[F + j] = dyr[j] * silu(g[j]);
      }
    }
  }

  void activation_forward(Activation a, float* y, const float* x, int64_t n) override {
    switch (a) {
      case Activation::kSwiGLU:
        PST_CHECK_MSG(false, "swiglu is swiglu_forward's, not an element-wise activation");
        break;
      case Activation::kRelu:
#pragma omp parallel for simd schedule(static) if (n > 32768)
        for (int64_t i = 0; i < n; ++i) y[i] = relu(x[i]);
        break;
      case Activation::kGelu:
#pragma omp parallel for simd schedule(static) if (n > 32768)
        for (int64_t i = 0; i < n; ++i) y[i] = gelu(x[i]);
        break;
      case Activation::kGeluTanh:
#pragma omp parallel for simd schedule(static) if (n > 32768)
        for (int64_t i = 0; i < n; ++i) y[i] = gelu_tanh(x[i]);
        break;
    }
  }

  void activation_backward(Activation a, float* dx, const float* dy, const float* x, int64_t n) override {
    switch (a) {
      case Activation::kSwiGLU:
        PST_CHECK_MSG(false, "swiglu is swiglu_backward's, not an element-wise activation");
        break;
      case Activation::kRelu:
#pragma omp parallel for simd schedule(static) if (n > 32768)
        for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * relu_grad(x[i]);
        break;
      case Activation::kGelu:
#pragma omp parallel for simd schedule(static) if (n > 32768)
        for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * gelu_grad(x[i]);
        break;
      case Activation::kGeluTanh:
#pragma omp parallel for simd schedule(static) if (n > 32768)
        for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * gelu_tanh_grad(x[i]);
        break;
    }
  }

  void dropout_forward(float* y, const float* x, int64_t n, float p, DropoutKey key) override {
    apply_dropout(y, x, n, p, key, 0);
  }
  void dropout_backward(float* dx, const float* dy, int64_t n, float p, DropoutKey key) override {
    apply_dropout(dx, dy, n, p, key, 0);
  }

  void embedding_forward(float* y, const int32_t* ids, const float* table, int64_t n, int64_t C, float scale) override {
#pragma omp parallel for schedule(static) if (n * C > 65536)
    for (int64_t i = 0; i < n; ++i) {
      const float* row = table + static_cast<int64_t>(ids[i]) * C;
      float* yr = y + i * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = row[c] * scale;
    }
  }

  void embedding_backward(float* dtable, const int32_t* ids, const float* dy, int64_t n, int64_t C,
                          float scale) override {
    // Threads own column ranges so that rows with the same id never race.
    const int threads = omp_get_max_threads();
#pragma omp parallel num_threads(threads) if (n * C > 65536)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t c0 = C * t / nt, c1 = C * (t + 1) / nt;
      for (int64_t i = 0; i < n; ++i) {
        float* row = dtable + static_cast<int64_t>(ids[i]) * C;
        const float* d = dy + i * C;
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) row[c] += d[c] * scale;
      }
    }
  }

  void add_positions(float* y, const float* pos, int64_t B, int64_t T, int64_t C) override {
#pragma omp parallel for collapse(2) schedule(static) if (B * T * C > 65536)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < T; ++t) {
        float* yr = y + (b * T + t) * C;
        const float* pr = pos + t * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) yr[c] += pr[c];
      }
    }
  }

  void positions_backward(float* dpos, const float* dy, int64_t B, int64_t T, int64_t C) override {
#pragma omp parallel for schedule(static) if (B * T * C > 65536)
    for (int64_t t = 0; t < T; ++t) {
      float* pr = dpos + t * C;
      for (int64_t b = 0; b < B; ++b) {
        const float* d = dy + (b * T + t) * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) pr[c] += d[c];
      }
    }
  }

  // Attention works on blocks of query rows. A block only needs the keys its
  // rows can see: all unpadded keys, or with the causal mask the keys up to
  // its last row, so padded and future keys cost no arithmetic. Dropout masks
  // are indexed by the element's place in the full (B, H, Tq, Tk) tensor.
  static constexpr int64_t kQueryBlock = 64;

  struct QueryBlock {
    int64_t i0, i1, keys;
  };

  static std::vector<QueryBlock> query_blocks(const AttentionDims& d, int64_t len) {
    std::vector<QueryBlock> blocks;
    const int64_t step = d.causal ? kQueryBlock : d.Tq;
    for (int64_t i0 = 0; i0 < d.Tq; i0 += step) {
      const int64_t i1 = std::min(d.Tq, i0 + step);
      blocks.push_back({i0, i1, d.causal ? std::min(len, i1) : len});
    }
    return blocks;
  }

  void attention_forward(const AttentionDims& d, const float* q, const float* k, const float* v, const int32_t* key_len,
                         float* probs, float* out, float p, DropoutKey key) override {
    const int64_t block = d.Tq * d.Tk;
#pragma omp parallel
    {
      std::vector<float> dropped(p > 0.0f ? static_cast<size_t>(block) : 0);
#pragma omp for collapse(2) schedule(static)
      for (int64_t b = 0; b < d.B; ++b) {
        for (int64_t h = 0; h < d.H; ++h) {
          const float* qb = q + d.q_at(b, h);
          const float* kb = k + d.k_at(b, h);
          const float* vb = v + d.v_at(b, h);
          float* ob = out + d.out_at(b, h);
          const int64_t offset = d.probs_at(b, h);
          float* P = probs + offset;
          const int64_t len = std::clamp<int64_t>(key_len[b], 0, d.Tk);
          for (const QueryBlock& qb_ : query_blocks(d, len)) {
            const int64_t rows = qb_.i1 - qb_.i0;
            float* Pb = P + qb_.i0 * d.Tk;
            if (qb_.keys == 0) {  // every key padded: no attention, zero output
              std::fill(Pb, Pb + rows * d.Tk, 0.0f);
              for (int64_t i = qb_.i0; i < qb_.i1; ++i) std::fill(ob + i * d.ldo, ob + i * d.ldo + d.D, 0.0f);
              continue;
            }
            head_sgemm(false, true, rows, qb_.keys, d.D, d.scale, qb + qb_.i0 * d.ldq, d.ldq, kb, d.ldk, 0.0f, Pb,
                       d.Tk);
            for (int64_t i = qb_.i0; i < qb_.i1; ++i) {
              const int64_t visible = d.causal ? std::min(len, i + 1) : len;
              softmax_row(P + i * d.Tk, visible, d.Tk);
            }
            const float* used = Pb;
            if (p > 0.0f) {
              apply_dropout(dropped.data(), Pb, rows * d.Tk, p, key, offset + qb_.i0 * d.Tk);
              used = dropped.data();
            }
            head_sgemm(false, false, rows, d.D, qb_.keys, 1.0f, used, d.Tk, vb, d.ldv, 0.0f, ob + qb_.i0 * d.ldo,
                       d.ldo);
          }
        }
      }
    }
  }

  void attention_backward(const AttentionDims& d, const float* q, const float* k, const float* v,
                          const int32_t* key_len, const float* probs, const float* dout, float* dq, float* dk,
                          float* dv, float p, DropoutKey key) override {
    const int64_t block = d.Tq * d.Tk;
#pragma omp parallel
    {
      std::vector<float> dP(static_cast<size_t>(block));
      std::vector<float> dropped(p > 0.0f ? static_cast<size_t>(block) : 0);
      // One task per key/value head: its query heads add into its dK and dV
      // in order.
      const int64_t group = d.group(), kv_heads = d.H / group;
#pragma omp for collapse(2) schedule(static)
      for (int64_t b = 0; b < d.B; ++b) {
        for (int64_t kvh = 0; kvh < kv_heads; ++kvh) {
          const int64_t len = std::clamp<int64_t>(key_len[b], 0, d.Tk);
          const float* kb = k + d.k_at(b, kvh * group);
          const float* vb = v + d.v_at(b, kvh * group);
          float* dkb = dk + d.k_at(b, kvh * group);
          float* dvb = dv + d.v_at(b, kvh * group);
          // dK and dV accumulate over query blocks and heads; keys no block sees get 0.
          for (int64_t j = 0; j < d.Tk; ++j) {
            std::fill(dkb + j * d.ldk, dkb + j * d.ldk + d.D, 0.0f);
            std::fill(dvb + j * d.ldv, dvb + j * d.ldv + d.D, 0.0f);
          }
          for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
            const float* qb = q + d.q_at(b, h);
            const float* dob = dout + d.out_at(b, h);
            float* dqb = dq + d.q_at(b, h);
            const int64_t offset = d.probs_at(b, h);
            const float* P = probs + offset;
            for (const QueryBlock& qb_ : query_blocks(d, len)) {
              const int64_t rows = qb_.i1 - qb_.i0, nk = qb_.keys;
              const float* Pb = P + qb_.i0 * d.Tk;
              if (nk == 0) {
                for (int64_t i = qb_.i0; i < qb_.i1; ++i) std::fill(dqb + i * d.ldq, dqb + i * d.ldq + d.D, 0.0f);
                continue;
              }
              const float* used = Pb;
              if (p > 0.0f) {
                apply_dropout(dropped.data(), Pb, rows * d.Tk, p, key, offset + qb_.i0 * d.Tk);
                used = dropped.data();
              }
              const float* dO = dob + qb_.i0 * d.ldo;
              // dV += P_dropped^T dO
              head_sgemm(true, false, nk, d.D, rows, 1.0f, used, d.Tk, dO, d.ldo, 1.0f, dvb, d.ldv);
              // dP_dropped = dO V^T, then back through dropout
              float* g = dP.data();
              head_sgemm(false, true, rows, nk, d.D, 1.0f, dO, d.ldo, vb, d.ldv, 0.0f, g, d.Tk);
              if (p > 0.0f) apply_dropout(g, g, rows * d.Tk, p, key, offset + qb_.i0 * d.Tk);
              // softmax backward: dS = P * (dP - sum(dP * P)); entries past nk are 0
              for (int64_t r = 0; r < rows; ++r) {
                const float* pr = Pb + r * d.Tk;
                float* gr = g + r * d.Tk;
                float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                for (int64_t j = 0; j < nk; ++j) dot += gr[j] * pr[j];
#pragma omp simd
                for (int64_t j = 0; j < nk; ++j) gr[j] = pr[j] * (gr[j] - dot);
              }
              // dQ = scale * dS K ; dK += scale * dS^T Q
              head_sgemm(false, false, rows, d.D, nk, d.scale, g, d.Tk, kb, d.ldk, 0.0f, dqb + qb_.i0 * d.ldq, d.ldq);
              head_sgemm(true, false, nk, d.D, rows, d.scale, g, d.Tk, qb + qb_.i0 * d.ldq, d.ldq, 1.0f, dkb, d.ldk);
            }
          }
        }
      }
    }
  }

  double cross_entropy(const float* logits, const int32_t* targets, int64_t N, int64_t V, float smoothing,
                       float grad_scale, float* dlogits, int64_t* correct) override {
    // Each row's loss lands in its own slot and the slots are added in order.
    std::vector<double> row_loss(static_cast<size_t>(N), 0.0);
    int64_t right = 0;
#pragma omp parallel for schedule(static) reduction(+ : right) if (N * V > 32768)
    for (int64_t i = 0; i < N; ++i) {
      const float* x = logits + i * V;
      float* g = dlogits ? dlogits + i * V : nullptr;
      const int32_t t = targets[i];
      if (t < 0) {
        if (g) std::fill(g, g + V, 0.0f);
        continue;
      }
      float mx = -std::numeric_limits<float>::infinity();
      int64_t arg = 0;
      for (int64_t c = 0; c < V; ++c) {
        if (x[c] > mx) {
          mx = x[c];
          arg = c;
        }
      }
      double sum = 0.0, sum_logits = 0.0;
      for (int64_t c = 0; c < V; ++c) {
        sum += std::exp(static_cast<double>(x[c] - mx));
        sum_logits += x[c];
      }
      const double lse = mx + std::log(sum);
      const double nll = lse - x[t];
      const double smooth = lse - sum_logits / static_cast<double>(V);
      row_loss[static_cast<size_t>(i)] = (1.0 - smoothing) * nll + smoothing * smooth;
      right += (arg == t) ? 1 : 0;
      if (g) {
        const float inv = static_cast<float>(1.0 / sum);
        const float off = smoothing / static_cast<float>(V);
        for (int64_t c = 0; c < V; ++c) {
          const float prob = std::exp(x[c] - mx) * inv;
          g[c] = grad_scale * (prob - off - (c == t ? 1.0f - smoothing : 0.0f));
        }
      }
    }
    if (correct) *correct = right;
    double total = 0.0;
    for (double l : row_loss) total += l;
    return total;
  }

  void argmax(const float* x, int64_t N, int64_t V, int32_t* out) override {
    for (int64_t i = 0; i < N; ++i) {
      const float* r = x + i * V;
      out[i] = static_cast<int32_t>(std::max_element(r, r + V) - r);
    }
  }

  void adam_update(float* w, float* m, float* v, const float* g, int64_t n, const AdamConstants& k) override {
    pst::adam_update(w, m, v, g, n, k);
  }
  double sum_squares(const float* x, int64_t n, bool* nonfinite) override { return pst::sum_squares(x, n, nonfinite); }

 private:
  bool bf16_;  // Backend::gemm's products in bf16
  // The float32 products' library (train.blas): sgemm or onednn_or_openblas.
  using Fp32Product = void (*)(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                               int64_t, float, float*, int64_t);
  Fp32Product fp32_;

  static void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                    const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<blasint>(M),
                static_cast<blasint>(N), static_cast<blasint>(K), alpha, A, static_cast<blasint>(lda), B,
                static_cast<blasint>(ldb), beta, C, static_cast<blasint>(ldc));
  }
  // train.blas = "onednn": oneDNN's product, or OpenBLAS's for those that
  // oneDNN would run in its slow reference kernel and small ones
  // (onednn_gemm.h). Which one follows from the product's shape and scalars
  // (a block's, for a product cut into blocks), never from the threads.
  static void onednn_or_openblas(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    if (onednn_fast_sgemm(M, N, K, alpha, beta)) {
      onednn_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    } else {
      sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    }
  }
  // A product of one attention head, on the calling thread.
  void head_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc) const {
    logged_gemm(ta, tb, M, N, K, true, [&] { fp32_(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc); });
  }

  // Softmax over the first `visible` entries of a row; the rest become 0.
  static void softmax_row(float* row, int64_t visible, int64_t n) {
    if (visible <= 0) {
      std::fill(row, row + n, 0.0f);
      return;
    }
    float mx = row[0];
    for (int64_t j = 1; j < visible; ++j) mx = std::max(mx, row[j]);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < visible; ++j) {
      row[j] = exp_approx(row[j] - mx);
      sum += row[j];
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t j = 0; j < visible; ++j) row[j] *= inv;
    std::fill(row + visible, row + n, 0.0f);
  }

  // y[i] = keep(offset + i) ? x[i] / (1 - p) : 0. Draws one Philox block per
  // four elements, the blocks of 1,024 elements at a time (Philox::blocks,
  // in AVX-512 registers where the CPU has them), then the mask of those
  // elements.
  static void apply_dropout(float* y, const float* x, int64_t n, float p, DropoutKey key, int64_t offset) {
    if (p <= 0.0f) {
      if (y != x) std::memcpy(y, x, static_cast<size_t>(n) * sizeof(float));
      return;
    }
    constexpr int64_t kChunk = 1024;
    const float s = 1.0f / (1.0f - p);
    const Philox rng(key.seed, key.stream);
#pragma omp parallel for schedule(static) if (n > 65536 && !omp_in_parallel())
    for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
      const int64_t i1 = std::min(n, i0 + kChunk);
      // Element i draws word (offset + i) & 3 of block (offset + i) >> 2:
      // words[(offset + i) - 4 * first].
      const uint64_t first = static_cast<uint64_t>(offset + i0) >> 2;
      const uint64_t last = static_cast<uint64_t>(offset + i1 - 1) >> 2;
      uint32_t words[4 * (kChunk / 4 + 1)];
      rng.blocks(first, static_cast<int64_t>(last - first + 1), words);
      const uint32_t* w = words + (static_cast<uint64_t>(offset + i0) - 4 * first);
#pragma omp simd
      for (int64_t i = i0; i < i1; ++i) y[i] = uniform01(w[i - i0]) >= p ? x[i] * s : 0.0f;
    }
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int threads) {
  return std::make_unique<CpuBackend>(threads, false, CpuBlas::kOpenBlas);
}

Result<std::unique_ptr<Backend>> make_cpu_backend(int threads, MatmulPrecision matmul, CpuBlas blas) {
  const bool bf16 = matmul == MatmulPrecision::kBf16;
  std::string why;
  if (bf16 && !cpu_bf16_products(&why))
    return failed_precondition("train.matmul = \"bf16\" on the CPU: {}; use fp32 (the default)", why);
  return std::unique_ptr<Backend>(std::make_unique<CpuBackend>(threads, bf16, blas));
}

void start_gemm_log() {
  std::lock_guard<std::mutex> lock(gemm_log_mu);
  gemm_log.clear();
  gemm_logging.store(true);
}

std::vector<GemmRecord> stop_gemm_log() {
  gemm_logging.store(false);
  std::lock_guard<std::mutex> lock(gemm_log_mu);
  return std::exchange(gemm_log, {});
}

}  // namespace pst
