// The Backend interface: every numeric kernel the Transformer needs. Pointers
// are device pointers of the backend that allocated them (host memory for the
// CPU backend). Matrices are row-major. Functions that say "accumulates" add
// into their output (parameter gradients); the others overwrite it.
//
// Thread safety: a Backend is used by one training loop at a time; its
// kernels parallelise internally.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
#include "model/elementwise.h"

namespace pst {

// Shapes of one multi-head attention call. q is (B, Tq, ldq) with head h at
// columns [h*D, (h+1)*D); k and v are (B, Tk, ldk/ldv) likewise; out is
// (B, Tq, ldo). probs is (B, H, Tq, Tk), the softmax before dropout, saved
// for the backward pass.
struct AttentionDims {
  int64_t B = 0, H = 0, Tq = 0, Tk = 0, D = 0;
  int64_t ldq = 0, ldk = 0, ldv = 0, ldo = 0;
  bool causal = false;  // query i sees keys j <= i
  float scale = 1.0f;   // usually 1/sqrt(D)
  // Floats from one batch row's keys (and values) to the next; 0: Tk * ldk
  // (and Tk * ldv), rows one after another. A decoding cache interleaves
  // rows by position: ldk spans a position of every row, the stride is one row's.
  int64_t kv_batch_stride = 0;
  // Key/value heads (grouped-query attention): query head h reads key and
  // value head h / (H / kv_heads). 0: H.
  int64_t kv_heads = 0;

  int64_t group() const { return kv_heads > 0 ? H / kv_heads : 1; }

  int64_t k_batch() const { return kv_batch_stride ? kv_batch_stride : Tk * ldk; }
  int64_t v_batch() const { return kv_batch_stride ? kv_batch_stride : Tk * ldv; }
  // Where head h of batch row b starts in q (and dq), k, v, out (and dout),
  // and probs.
  int64_t q_at(int64_t b, int64_t h) const { return b * Tq * ldq + h * D; }
  // k_at and v_at take a query head.
  int64_t k_at(int64_t b, int64_t h) const { return b * k_batch() + h / group() * D; }
  int64_t v_at(int64_t b, int64_t h) const { return b * v_batch() + h / group() * D; }
  int64_t out_at(int64_t b, int64_t h) const { return b * Tq * ldo + h * D; }
  int64_t probs_at(int64_t b, int64_t h) const { return (b * H + h) * Tq * Tk; }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // Device memory. allocate() returns zeroed memory, aligned to 64 bytes.
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* p) = 0;
  // True when that memory is the host's (the CPU backend): code on the host
  // may read and write it in place, with no upload or download.
  virtual bool host_memory() const { return false; }
  // Host memory for transfers to and from the device: page-locked on CUDA,
  // so copies run at full bus speed. Not zeroed.
  virtual void* allocate_host(size_t bytes) = 0;
  virtual void deallocate_host(void* p) = 0;
  // Copies between host and device memory. Both are complete when they
  // return: the host buffer may be reused and the data is in place.
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;
  // Waits until every queued kernel has finished (for timing; the CPU
  // backend's kernels finish before they return).
  virtual void synchronize() {}
  // The device's memory in use (by every process) and its size, for the
  // GPU memory metrics; nothing for the CPU. Call from the thread that
  // computes.
  struct DeviceMemory {
    int64_t used_bytes = 0, total_bytes = 0;
    int device = 0;
  };
  virtual std::optional<DeviceMemory> device_memory() const { return std::nullopt; }

  virtual void fill(float* x, int64_t n, float value) = 0;
  virtual void copy(float* dst, const float* src, int64_t n) = 0;
  // dst row r = src row r for r < rows, cols floats each; rows start
  // ld_dst and ld_src floats apart (a strided copy, e.g. into a cache).
  virtual void copy_rows(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows, int64_t cols) = 0;
  // y += x
  virtual void add(float* y, const float* x, int64_t n) = 0;
  // y += a * x
  virtual void axpy(float* y, float a, const float* x, int64_t n) = 0;
  // y *= a
  virtual void scale(float* y, float a, int64_t n) = 0;

  // C(M,N) = alpha * op(A) * op(B) + beta * C, row-major; op(A) is (M,K),
  // op(B) is (K,N); lda/ldb/ldc are the row strides of the stored matrices.
  virtual void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                    int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) = 0;
  // y(rows, cols) += b(cols) broadcast over rows.
  virtual void add_bias(float* y, const float* b, int64_t rows, int64_t cols) = 0;
  // db(cols) += column sums of dy(rows, cols). Accumulates.
  virtual void bias_grad(float* db, const float* dy, int64_t rows, int64_t cols) = 0;

  // y = (x - mean) * rstd * w + b per row; saves mean and rstd (rows).
  virtual void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b,
                                 int64_t rows, int64_t C, float eps) = 0;
  // Writes dx; accumulates dw and db.
  virtual void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                                  const float* mean, const float* rstd, int64_t rows, int64_t C) = 0;

  // RMSNorm (Zhang and Sennrich 2019): y = x * rstd * w per row, with
  // rstd = 1 / sqrt(mean(x^2) + eps) saved (rows).
  virtual void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t rows, int64_t C,
                               float eps) = 0;
  // Writes dx; accumulates dw.
  virtual void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                                const float* rstd, int64_t rows, int64_t C) = 0;

  // Rotary position embedding, in place, on `heads` heads of D floats at the
  // start of each of B*T rows (ld floats apart); row b*T + t is at position
  // first + t. Head columns i and i + D/2 form a pair turned by the angle
  // whose cosine and sine are cos[p * D/2 + i] and sin[p * D/2 + i]; inverse
  // turns back (the backward pass).
  virtual void rope(float* x, int64_t ld, int64_t B, int64_t T, int64_t heads, int64_t D, const float* cos,
                    const float* sin, int64_t first, bool inverse) = 0;

  // SwiGLU: y(rows, F) = silu(x[:, :F]) * x[:, F:] for x(rows, 2F).
  virtual void swiglu_forward(float* y, const float* x, int64_t rows, int64_t F) = 0;
  // dx(rows, 2F) from dy(rows, F); dx must not overlap dy.
  virtual void swiglu_backward(float* dx, const float* dy, const float* x, int64_t rows, int64_t F) = 0;

  // Element-wise activations (not kSwiGLU, which is swiglu_forward's).
  virtual void activation_forward(Activation a, float* y, const float* x, int64_t n) = 0;
  // dx = dy * act'(x).
  virtual void activation_backward(Activation a, float* dx, const float* dy, const float* x, int64_t n) = 0;

  // In place is allowed (y == x, dx == dy). p == 0 is a copy.
  virtual void dropout_forward(float* y, const float* x, int64_t n, float p, DropoutKey key) = 0;
  virtual void dropout_backward(float* dx, const float* dy, int64_t n, float p, DropoutKey key) = 0;

  // y(n, C) = table[ids] * scale.
  virtual void embedding_forward(float* y, const int32_t* ids, const float* table, int64_t n, int64_t C,
                                 float scale) = 0;
  // dtable[ids] += dy * scale. Accumulates.
  virtual void embedding_backward(float* dtable, const int32_t* ids, const float* dy, int64_t n, int64_t C,
                                  float scale) = 0;
  // y(B, T, C) += pos(T, C) for every b.
  virtual void add_positions(float* y, const float* pos, int64_t B, int64_t T, int64_t C) = 0;
  // dpos(T, C) += sum over b of dy(b, T, C). Accumulates.
  virtual void positions_backward(float* dpos, const float* dy, int64_t B, int64_t T, int64_t C) = 0;

  // Multi-head scaled dot-product attention with key padding (keys j >=
  // key_len[b] masked) and an optional causal mask; dropout p on the
  // probabilities. Writes probs and out.
  virtual void attention_forward(const AttentionDims& d, const float* q, const float* k, const float* v,
                                 const int32_t* key_len, float* probs, float* out, float p, DropoutKey key) = 0;
  // Writes dq, dk, dv (same layouts as q, k, v); the key and value heads that
  // several query heads share get the sum of their gradients.
  virtual void attention_backward(const AttentionDims& d, const float* q, const float* k, const float* v,
                                  const int32_t* key_len, const float* probs, const float* dout, float* dq, float* dk,
                                  float* dv, float p, DropoutKey key) = 0;

  // Cross-entropy with label smoothing over logits (N, V). Rows whose target is
  // negative are ignored. Returns the summed loss over counted rows (fp64) and
  // writes dlogits = grad_scale * (softmax - smoothed one-hot), 0 on ignored
  // rows. dlogits may alias logits. If correct is not null it receives the
  // number of counted rows whose argmax equals the target.
  virtual double cross_entropy(const float* logits, const int32_t* targets, int64_t N, int64_t V, float smoothing,
                               float grad_scale, float* dlogits, int64_t* correct) = 0;

  // Row-wise argmax of x(N, V) into out(N) (device memory); the first index
  // among equal maxima.
  virtual void argmax(const float* x, int64_t N, int64_t V, int32_t* out) = 0;

  // One fused Adam/AdamW step over n elements of weights w, moments m and v
  // and gradient g (model/elementwise.h's adam_update_element, the same bits
  // on every backend).
  virtual void adam_update(float* w, float* m, float* v, const float* g, int64_t n, const AdamConstants& k) = 0;
  // Sum of squares of x(n) in fp64 (a fixed order: deterministic), and
  // whether any element is inf or NaN: the statistics of global-norm clipping.
  virtual double sum_squares(const float* x, int64_t n, bool* nonfinite) = 0;
};

// n floats of Backend::allocate_host memory (pinned on CUDA), released on
// destruction: the buffers that weights and gradients cross the bus through.
class HostBuffer {
 public:
  HostBuffer(Backend* be, size_t n) : be_(be), p_(static_cast<float*>(be->allocate_host(n * sizeof(float)))), n_(n) {}
  ~HostBuffer() { be_->deallocate_host(p_); }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  float* data() { return p_; }
  size_t size() const { return n_; }

 private:
  Backend* be_;
  float* p_;
  size_t n_;
};

// Options of the CUDA backend.
struct CudaOptions {
  int device = 0;  // CUDA device index
  MatmulPrecision matmul = MatmulPrecision::kFp32;
};

// The CPU backend (OpenBLAS + OpenMP), in fp32. threads = 0 uses all cores.
std::unique_ptr<Backend> make_cpu_backend(int threads);
// The CPU backend with Backend::gemm's products in `matmul`'s precision:
// bf16 runs them on bf16-rounded operands with fp32 sums (oneDNN), and fails
// on a CPU without bf16 instructions, naming what it has; tf32, which CPUs do
// not have, computes in fp32. The attention's per-head products stay fp32.
// blas: the library of its float32 products (train.blas).
Result<std::unique_ptr<Backend>> make_cpu_backend(int threads, MatmulPrecision matmul,
                                                  CpuBlas blas = CpuBlas::kOpenBlas);
// True when this CPU runs bf16 products with its own instructions
// (AVX512_BF16 or AMX, as oneDNN finds them; DNNL_MAX_CPU_ISA in the
// environment can hide them); otherwise false with the reason in *why.
bool cpu_bf16_products(std::string* why = nullptr);

// The matrix products the CPU backend runs while a log is open, for
// bench/train_throughput's GEMM share: each as its caller asked for it
// (Backend::gemm's shape, before the backend cuts it into blocks), or, for
// the attention's products of one head (run one per thread inside a
// parallel loop), per_thread. seconds: the product's wall time (a
// per-thread one: on its own thread).
struct GemmRecord {
  bool ta = false, tb = false;
  int64_t M = 0, N = 0, K = 0;
  bool per_thread = false;
  double seconds = 0;
};
void start_gemm_log();
std::vector<GemmRecord> stop_gemm_log();

// True when this build has the CUDA backend (nvcc was found at configure time).
bool cuda_compiled();
// The number of CUDA devices; 0 when the build has no CUDA backend or when
// cudaGetDeviceCount fails for any reason (no driver, no device,
// CUDA_VISIBLE_DEVICES=""), with the reason in *why when why is not null.
int cuda_device_count(std::string* why = nullptr);
// True when this build's CUDA backend finds cuBLAS, which it loads when the
// first backend is made rather than linking it (its libraries take 0.3 s
// to initialise in every process that links them), with every function it
// calls; otherwise false with the reason in *why. Needs no device.
bool cuda_blas_loaded(std::string* why = nullptr);
// The CUDA backend on one device; an error when CUDA is not compiled in,
// the device does not exist or cuBLAS cannot be loaded.
Result<std::unique_ptr<Backend>> make_cuda_backend(const CudaOptions& options);

// This process's rank among the job's processes on its host, as its
// launcher tells it: OMPI_COMM_WORLD_LOCAL_RANK (mpirun), SLURM_LOCALID
// (srun), LOCAL_RANK (torchrun, Kubernetes operators), MPI_LOCALRANKID
// (MPICH), the first that is set; `source` names it. Absent: none is set
// (a process started on its own, or the only one on its host).
struct LocalRank {
  int rank = 0;
  std::string source;
};
std::optional<LocalRank> local_rank_from_env();

// The CUDA device of a process with local rank `local` on a host that shows
// it `count` devices: the local rank modulo the count, so the processes of
// a host spread over its GPUs (device 0 without a local rank).
int local_device(const std::optional<LocalRank>& local, int count);

// Picks a backend for train.device: "cuda:N" fails where CUDA is not
// compiled in or device N is absent; "cuda" takes the local rank's device
// (local_device) and fails without one; "auto" takes the local rank's device
// when there is a device, else the CPU with a log line saying why. The
// choice and what it was made from are logged.
Result<std::unique_ptr<Backend>> make_backend(const DeviceSpec& device, MatmulPrecision matmul, int threads,
                                              CpuBlas blas = CpuBlas::kOpenBlas);

}  // namespace pst
