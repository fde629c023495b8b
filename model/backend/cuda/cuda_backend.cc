// The CUDA backend: cuBLAS (cublasGemmEx, cublasGemmStridedBatchedEx) for
// every matrix product, the kernels of cuda_kernels.cu for the rest, all on
// one stream. It mirrors the CPU backend function for function; attention is
// the same algorithm (scores, masked softmax with dropout, weighted sum) with
// the per-(b, h) products batched over b.
//
// Memory: allocate() is cudaMalloc. The scratch buffers below grow to the
// largest shape seen and are then reused, so a training step after the first
// allocates nothing.
//
// cuBLAS is loaded (dlopen) when the first backend is made, not linked:
// libcublas and libcublasLt spend 0.3-0.4 s initialising in every process
// that links them, which every pst command and test process paid, on
// machines without a GPU too. The CUDA runtime is linked; it costs nothing
// at start.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "core/status.h"
#include "model/backend.h"
#include "model/backend/cuda/cuda_kernels.h"

#define PST_CUDA_CHECK(expr)                                                                      \
  do {                                                                                            \
    const cudaError_t pst_err_ = (expr);                                                          \
    PST_CHECK_MSG(pst_err_ == cudaSuccess, "{} failed: {}", #expr, cudaGetErrorString(pst_err_)); \
  } while (0)

#define PST_CUBLAS_CHECK(expr)                                                                                \
  do {                                                                                                        \
    const cublasStatus_t pst_st_ = (expr);                                                                    \
    PST_CHECK_MSG(pst_st_ == CUBLAS_STATUS_SUCCESS, "{} failed: {}", #expr, cublas().status_string(pst_st_)); \
  } while (0)

namespace pst {
namespace {

// The cuBLAS functions the backend calls, from the library loaded at run
// time (the signatures of cublas_api.h).
struct Cublas {
  cublasStatus_t (*create)(cublasHandle_t*) = nullptr;
  cublasStatus_t (*destroy)(cublasHandle_t) = nullptr;
  cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t) = nullptr;
  cublasStatus_t (*gemm)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*, const void*,
                         cudaDataType, int, const void*, cudaDataType, int, const void*, void*, cudaDataType, int,
                         cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
  cublasStatus_t (*gemm_strided_batched)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                         const void*, const void*, cudaDataType, int, long long, const void*,
                                         cudaDataType, int, long long, const void*, void*, cudaDataType, int, long long,
                                         int, cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
  const char* (*status_string)(cublasStatus_t) = nullptr;
  std::string error;  // why the library or one of its functions is missing; empty when loaded
};

// Loads cuBLAS of the major version this file was compiled against, by the
// dynamic linker's search (ld.so.cache, LD_LIBRARY_PATH) and then from the
// toolkit's library directory found at configure time; once per process.
const Cublas& cublas() {
  static const Cublas loaded = [] {
    Cublas c;
    const std::string name = fmt::format("libcublas.so.{}", CUBLAS_VER_MAJOR);
    void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const std::string first = dlerror();
      const std::string path = std::string(PST_CUBLAS_DIR) + "/" + name;
      lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!lib) {
        c.error = fmt::format(
            "cannot load cuBLAS: {}; nor {}: {} (install CUDA's cuBLAS {}, or name its directory "
            "in LD_LIBRARY_PATH)",
            first, path, dlerror(), CUBLAS_VER_MAJOR);
        return c;
      }
    }
    const auto find = [&](auto& f, const char* symbol) {
      f = reinterpret_cast<std::remove_reference_t<decltype(f)>>(dlsym(lib, symbol));
      if (!f && c.error.empty()) c.error = fmt::format("{} has no function {}", name, symbol);
    };
    // Each function is named once: its symbol, and the declaration in
    // cublas_api.h that the member's type must match exactly (an overload
    // of that type, or this does not compile).
#define PST_CUBLAS_FIND(member, function)                                                 \
  static_assert(sizeof(static_cast<decltype(Cublas::member)>(&function)) > 0, #function); \
  find(c.member, #function)
    PST_CUBLAS_FIND(create, cublasCreate_v2);
    PST_CUBLAS_FIND(destroy, cublasDestroy_v2);
    PST_CUBLAS_FIND(set_stream, cublasSetStream_v2);
    PST_CUBLAS_FIND(gemm, cublasGemmEx);
    PST_CUBLAS_FIND(gemm_strided_batched, cublasGemmStridedBatchedEx);
    PST_CUBLAS_FIND(status_string, cublasGetStatusString);
#undef PST_CUBLAS_FIND
    return c;
  }();
  return loaded;
}

// A device buffer that only grows.
class Scratch {
 public:
  ~Scratch() {
    if (p_) cudaFree(p_);
  }
  template <typename T>
  T* get(size_t count) {
    const size_t bytes = std::max<size_t>(count * sizeof(T), 256);
    if (bytes > bytes_) {
      if (p_) PST_CUDA_CHECK(cudaFree(p_));
      p_ = nullptr;
      PST_CUDA_CHECK(cudaMalloc(&p_, bytes));
      bytes_ = bytes;
    }
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

cublasComputeType_t compute_type(MatmulPrecision p) {
  switch (p) {
    case MatmulPrecision::kTf32: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case MatmulPrecision::kBf16: return CUBLAS_COMPUTE_32F_FAST_16BF;
    case MatmulPrecision::kFp32: break;
  }
  return CUBLAS_COMPUTE_32F;
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaOptions& o) : options_(o), compute_(compute_type(o.matmul)) {
    PST_CUDA_CHECK(cudaSetDevice(o.device));
    PST_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    PST_CUBLAS_CHECK(cublas().create(&blas_));
    PST_CUBLAS_CHECK(cublas().set_stream(blas_, stream_));
    PST_CUDA_CHECK(cudaMallocHost(&result_, sizeof(HostResult)));
    // Each reduction writes only its fields; the copy back reads them all.
    PST_CUDA_CHECK(cudaMemsetAsync(device_result(), 0, sizeof(HostResult), stream_));
  }
  ~CudaBackend() override {
    cudaStreamSynchronize(stream_);
    cudaFreeHost(result_);
    cublas().destroy(blas_);
    cudaStreamDestroy(stream_);
  }

  const char* name() const override { return "cuda"; }

  std::optional<DeviceMemory> device_memory() const override {
    size_t free = 0, total = 0;
    if (cudaSetDevice(options_.device) != cudaSuccess || cudaMemGetInfo(&free, &total) != cudaSuccess)
      return std::nullopt;
    return DeviceMemory{static_cast<int64_t>(total - free), static_cast<int64_t>(total), options_.device};
  }

  void* allocate(size_t bytes) override {
    void* p = nullptr;
    const size_t rounded = std::max<size_t>((bytes + 63) / 64 * 64, 64);
    const cudaError_t err = cudaMalloc(&p, rounded);
    PST_CHECK_MSG(err == cudaSuccess, "cuda backend: cannot allocate {} bytes on device {}: {}", bytes, options_.device,
                  cudaGetErrorString(err));
    PST_CUDA_CHECK(cudaMemsetAsync(p, 0, rounded, stream_));
    return p;
  }
  void deallocate(void* p) override {
    if (p) PST_CUDA_CHECK(cudaFree(p));
  }
  void* allocate_host(size_t bytes) override {
    void* p = nullptr;
    const cudaError_t err = cudaMallocHost(&p, std::max<size_t>(bytes, 64));
    PST_CHECK_MSG(err == cudaSuccess, "cuda backend: cannot allocate {} pinned host bytes: {}", bytes,
                  cudaGetErrorString(err));
    return p;
  }
  void deallocate_host(void* p) override {
    if (p) PST_CUDA_CHECK(cudaFreeHost(p));
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    PST_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    PST_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void download(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    PST_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    PST_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void synchronize() override { PST_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

  void fill(float* x, int64_t n, float value) override { cuda::fill(x, n, value, stream_); }
  void copy(float* dst, const float* src, int64_t n) override {
    if (n > 0 && dst != src)
      PST_CUDA_CHECK(
          cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
  }
  void copy_rows(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols) override {
    if (rows > 0 && cols > 0)
      PST_CUDA_CHECK(cudaMemcpy2DAsync(
          dst, static_cast<size_t>(ld_dst) * sizeof(float), src, static_cast<size_t>(ld_src) * sizeof(float),
          static_cast<size_t>(cols) * sizeof(float), static_cast<size_t>(rows), cudaMemcpyDeviceToDevice, stream_));
  }
  void add(float* y, const float* x, int64_t n) override { cuda::add(y, x, n, stream_); }
  void axpy(float* y, float a, const float* x, int64_t n) override { cuda::axpy(y, a, x, n, stream_); }
  void scale(float* y, float a, int64_t n) override { cuda::scale(y, a, n, stream_); }

  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, so
  // cuBLAS gets B first and the dimensions swapped.
  void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
            int64_t ldb, float beta, float* C, int64_t ldc) override {
    if (M == 0 || N == 0) return;
    PST_CUBLAS_CHECK(cublas().gemm(blas_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha, B, CUDA_R_32F,
                                   static_cast<int>(ldb), A, CUDA_R_32F, static_cast<int>(lda), &beta, C, CUDA_R_32F,
                                   static_cast<int>(ldc), compute_, CUBLAS_GEMM_DEFAULT));
  }

  void add_bias(float* y, const float* b, int64_t rows, int64_t cols) override {
    cuda::add_bias(y, b, rows, cols, stream_);
  }
  void bias_grad(float* db, const float* dy, int64_t rows, int64_t cols) override {
    cuda::column_sums(db, dy, rows, cols, column_scratch_.get<float>(cuda::column_scratch(rows, cols)), stream_);
  }

  void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b,
                         int64_t rows, int64_t C, float eps) override {
    cuda::layernorm_forward(y, mean, rstd, x, w, b, rows, C, eps, stream_);
  }
  void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                          const float* mean, const float* rstd, int64_t rows, int64_t C) override {
    cuda::layernorm_backward(dx, dw, db, dy, x, w, mean, rstd, rows, C,
                             column_scratch_.get<float>(cuda::column_scratch(rows, C)), stream_);
  }

  void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t rows, int64_t C,
                       float eps) override {
    cuda::rmsnorm_forward(y, rstd, x, w, rows, C, eps, stream_);
  }
  void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                        int64_t rows, int64_t C) override {
    cuda::rmsnorm_backward(dx, dw, dy, x, w, rstd, rows, C, column_scratch_.get<float>(cuda::column_scratch(rows, C)),
                           stream_);
  }
  void rope(float* x, int64_t ld, int64_t B, int64_t T, int64_t heads, int64_t D, const float* cos, const float* sin,
            int64_t first, bool inverse) override {
    cuda::rope(x, ld, B, T, heads, D, cos, sin, first, inverse, stream_);
  }
  void swiglu_forward(float* y, const float* x, int64_t rows, int64_t F) override {
    cuda::swiglu_forward(y, x, rows, F, stream_);
  }
  void swiglu_backward(float* dx, const float* dy, const float* x, int64_t rows, int64_t F) override {
    cuda::swiglu_backward(dx, dy, x, rows, F, stream_);
  }

  void activation_forward(Activation a, float* y, const float* x, int64_t n) override {
    cuda::activation_forward(a, y, x, n, stream_);
  }
  void activation_backward(Activation a, float* dx, const float* dy, const float* x, int64_t n) override {
    cuda::activation_backward(a, dx, dy, x, n, stream_);
  }

  void dropout_forward(float* y, const float* x, int64_t n, float p, DropoutKey key) override {
    cuda::dropout(y, x, n, p, key, 0, stream_);
  }
  void dropout_backward(float* dx, const float* dy, int64_t n, float p, DropoutKey key) override {
    cuda::dropout(dx, dy, n, p, key, 0, stream_);
  }

  void embedding_forward(float* y, const int32_t* ids, const float* table, int64_t n, int64_t C, float scale) override {
    cuda::embedding_forward(y, ids, table, n, C, scale, stream_);
  }
  void embedding_backward(float* dtable, const int32_t* ids, const float* dy, int64_t n, int64_t C,
                          float scale) override {
    if (n == 0) return;
    cuda::EmbeddingSortScratch s;
    const size_t n_ = static_cast<size_t>(n);
    int32_t* ints = sort_ints_.get<int32_t>(3 * n_);
    s.keys_out = ints;
    s.order_in = ints + n_;
    s.order_out = ints + 2 * n_;
    s.temp_bytes = cuda::embedding_sort_temp_bytes(n);
    s.temp = sort_temp_.get<char>(s.temp_bytes);
    cuda::embedding_backward(dtable, ids, dy, n, C, scale, s, stream_);
  }
  void add_positions(float* y, const float* pos, int64_t B, int64_t T, int64_t C) override {
    cuda::add_positions(y, pos, B, T, C, stream_);
  }
  void positions_backward(float* dpos, const float* dy, int64_t B, int64_t T, int64_t C) override {
    cuda::column_sums(dpos, dy, B, T * C, column_scratch_.get<float>(cuda::column_scratch(B, T * C)), stream_);
  }

  void attention_forward(const AttentionDims& d, const float* q, const float* k, const float* v, const int32_t* key_len,
                         float* probs, float* out, float p, DropoutKey key) override {
    if (d.B == 0 || d.Tq == 0) return;
    const int64_t TT = d.Tq * d.Tk, HTT = d.H * TT;
    for (int64_t h = 0; h < d.H; ++h)
      gemm_batched(false, true, d.Tq, d.Tk, d.D, d.scale, q + h * d.D, d.ldq, d.Tq * d.ldq, k + d.k_at(0, h), d.ldk,
                   d.k_batch(), 0.0f, probs + h * TT, d.Tk, HTT, d.B);
    float* dropped = p > 0.0f ? attn_dropped_.get<float>(static_cast<size_t>(d.B * HTT)) : nullptr;
    cuda::attention_softmax(d, key_len, probs, dropped, p, key, stream_);
    const float* used = dropped ? dropped : probs;
    for (int64_t h = 0; h < d.H; ++h)
      gemm_batched(false, false, d.Tq, d.D, d.Tk, 1.0f, used + h * TT, d.Tk, HTT, v + d.v_at(0, h), d.ldv, d.v_batch(),
                   0.0f, out + h * d.D, d.ldo, d.Tq * d.ldo, d.B);
  }

  void attention_backward(const AttentionDims& d, const float* q, const float* k, const float* v,
                          const int32_t* /*key_len: masked probabilities are already 0*/, const float* probs,
                          const float* dout, float* dq, float* dk, float* dv, float p, DropoutKey key) override {
    if (d.B == 0 || d.Tq == 0) return;
    const int64_t TT = d.Tq * d.Tk, HTT = d.H * TT, n = d.B * HTT;
    const float* used = probs;
    if (p > 0.0f) {
      float* dropped = attn_dropped_.get<float>(static_cast<size_t>(n));
      cuda::dropout(dropped, probs, n, p, key, 0, stream_);
      used = dropped;
    }
    float* g = attn_grad_.get<float>(static_cast<size_t>(n));
    // A key/value head shared by a group of query heads gets their gradients
    // added in order of h (the products run one after another on the stream).
    auto first_of_group = [&](int64_t h) { return h % d.group() == 0 ? 0.0f : 1.0f; };
    for (int64_t h = 0; h < d.H; ++h) {
      // dV (+)= P_dropped^T dO; dP_dropped = dO V^T
      gemm_batched(true, false, d.Tk, d.D, d.Tq, 1.0f, used + h * TT, d.Tk, HTT, dout + h * d.D, d.ldo, d.Tq * d.ldo,
                   first_of_group(h), dv + d.v_at(0, h), d.ldv, d.v_batch(), d.B);
      gemm_batched(false, true, d.Tq, d.Tk, d.D, 1.0f, dout + h * d.D, d.ldo, d.Tq * d.ldo, v + d.v_at(0, h), d.ldv,
                   d.v_batch(), 0.0f, g + h * TT, d.Tk, HTT, d.B);
    }
    cuda::attention_softmax_backward(d, probs, g, p, key, stream_);
    for (int64_t h = 0; h < d.H; ++h) {
      // dQ = scale dS K; dK (+)= scale dS^T Q
      gemm_batched(false, false, d.Tq, d.D, d.Tk, d.scale, g + h * TT, d.Tk, HTT, k + d.k_at(0, h), d.ldk, d.k_batch(),
                   0.0f, dq + h * d.D, d.ldq, d.Tq * d.ldq, d.B);
      gemm_batched(true, false, d.Tk, d.D, d.Tq, d.scale, g + h * TT, d.Tk, HTT, q + h * d.D, d.ldq, d.Tq * d.ldq,
                   first_of_group(h), dk + d.k_at(0, h), d.ldk, d.k_batch(), d.B);
    }
  }

  double cross_entropy(const float* logits, const int32_t* targets, int64_t N, int64_t V, float smoothing,
                       float grad_scale, float* dlogits, int64_t* correct) override {
    cuda::CrossEntropyScratch s;
    const size_t rows = static_cast<size_t>(std::max<int64_t>(N, 1));
    char* base = ce_scratch_.get<char>(rows * (sizeof(double) + sizeof(int32_t)) + 64);
    s.row_loss = reinterpret_cast<double*>(base);
    s.row_correct = reinterpret_cast<int32_t*>(base + rows * sizeof(double));
    s.total_loss = &device_result()->loss;
    s.total_correct = &device_result()->correct;
    cuda::cross_entropy(logits, targets, N, V, smoothing, grad_scale, dlogits, s, stream_);
    PST_CUDA_CHECK(cudaMemcpyAsync(result_, device_result(), sizeof(HostResult), cudaMemcpyDeviceToHost, stream_));
    PST_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (correct) *correct = result_->correct;
    return result_->loss;
  }

  void argmax(const float* x, int64_t N, int64_t V, int32_t* out) override { cuda::argmax(x, N, V, out, stream_); }

  void adam_update(float* w, float* m, float* v, const float* g, int64_t n, const AdamConstants& k) override {
    cuda::adam_update(w, m, v, g, n, k, stream_);
  }
  double sum_squares(const float* x, int64_t n, bool* nonfinite) override {
    constexpr size_t kBlocks = cuda::kSumSquaresBlocks;
    char* base = sum_scratch_.get<char>(kBlocks * (sizeof(double) + sizeof(int)));
    auto* partial = reinterpret_cast<double*>(base);
    auto* partial_bad = reinterpret_cast<int*>(base + kBlocks * sizeof(double));
    cuda::sum_squares(x, n, partial, partial_bad, &device_result()->loss, &device_result()->flag, stream_);
    PST_CUDA_CHECK(cudaMemcpyAsync(result_, device_result(), sizeof(HostResult), cudaMemcpyDeviceToHost, stream_));
    PST_CUDA_CHECK(cudaStreamSynchronize(stream_));
    *nonfinite = result_->flag != 0;
    return result_->loss;
  }

 private:
  // Scalars that reductions return to the host.
  struct HostResult {
    double loss;  // cross-entropy sum, or sum of squares
    int64_t correct;
    int flag;  // sum_squares: some element not finite
  };

  HostResult* device_result() { return result_device_.get<HostResult>(1); }

  // Row-major strided-batched product: C_i = alpha op(A_i) op(B_i) + beta C_i.
  void gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                    int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta, float* C, int64_t ldc,
                    int64_t stride_c, int64_t batch) {
    if (M == 0 || N == 0 || batch == 0) return;
    PST_CUBLAS_CHECK(cublas().gemm_strided_batched(
        blas_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M),
        static_cast<int>(K), &alpha, B, CUDA_R_32F, static_cast<int>(ldb), stride_b, A, CUDA_R_32F,
        static_cast<int>(lda), stride_a, &beta, C, CUDA_R_32F, static_cast<int>(ldc), stride_c, static_cast<int>(batch),
        compute_, CUBLAS_GEMM_DEFAULT));
  }

  CudaOptions options_;
  cublasComputeType_t compute_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  HostResult* result_ = nullptr;  // pinned
  Scratch result_device_, sum_scratch_, column_scratch_, sort_ints_, sort_temp_, attn_dropped_, attn_grad_, ce_scratch_;
};

}  // namespace

bool cuda_compiled() { return true; }

int cuda_device_count(std::string* why) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (why) *why = fmt::format("cudaGetDeviceCount: {}", cudaGetErrorString(err));
    cudaGetLastError();
    return 0;
  }
  if (n == 0 && why) *why = "cudaGetDeviceCount found no device";
  return n;
}

bool cuda_blas_loaded(std::string* why) {
  const Cublas& c = cublas();
  if (c.error.empty()) return true;
  if (why) *why = c.error;
  return false;
}

Result<std::unique_ptr<Backend>> make_cuda_backend(const CudaOptions& options) {
  std::string why;
  const int count = cuda_device_count(&why);
  if (count == 0) return failed_precondition("cuda: no CUDA device ({})", why);
  if (options.device < 0 || options.device >= count)
    return failed_precondition("cuda:{}: device index out of range (0..{})", options.device, count - 1);
  cudaDeviceProp prop{};
  const cudaError_t err = cudaGetDeviceProperties(&prop, options.device);
  if (err != cudaSuccess)
    return failed_precondition("cuda:{}: cudaGetDeviceProperties: {}", options.device, cudaGetErrorString(err));
  if (!cuda_blas_loaded(&why)) return failed_precondition("cuda:{}: {}", options.device, why);
  spdlog::info("CUDA device {}: {} (sm_{}{}, {} SMs, {:.1f} GiB), matrix products in {}", options.device, prop.name,
               prop.major, prop.minor, prop.multiProcessorCount, static_cast<double>(prop.totalGlobalMem) / (1 << 30),
               to_string(options.matmul));
  return std::unique_ptr<Backend>(std::make_unique<CudaBackend>(options));
}

}  // namespace pst
