#include "model/backend/cpu/onednn_gemm.h"

#include <omp.h>

#include <atomic>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <oneapi/dnnl/dnnl_version.h>
#include <oneapi/dnnl/dnnl.hpp>

#include "core/bf16.h"
#include "core/status.h"
#include "model/backend.h"

namespace pst {
namespace {

// OpenMP's thread budget of the calling thread set to 1 for a scope. oneDNN
// plans a product's work split for the threads it may use when the product
// is set up, and may then split the sum over K among them; with one thread
// the split, and so the rounding, follows from the shape alone.
class OneThread {
 public:
  OneThread() : saved_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~OneThread() { omp_set_num_threads(saved_); }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;

 private:
  int saved_;
};

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// A set-up product per shape: oneDNN compiles its kernels for the shape, so
// they are made once and kept (a job's shapes are few: its batch lengths).
// At most kCachedProducts are kept, the least recently used going first, as
// oneDNN's own primitive cache does (1,024 by default), so that a job whose
// shapes keep changing does not grow without bound.
struct ProductKey {
  bool ta, tb;
  int64_t M, N, K, lda, ldb, ldc;
  float alpha, beta;
  bool f32;  // float32 operands; otherwise bf16
  auto tie() const { return std::tie(ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, f32); }
  bool operator<(const ProductKey& o) const { return tie() < o.tie(); }
};
struct Product {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
};
constexpr size_t kCachedProducts = 1024;

// Guarded by products_mu. A product in use stays alive (shared) after it
// leaves the cache.
std::mutex products_mu;
struct Cached {
  std::shared_ptr<const Product> product;
  std::list<ProductKey>::iterator used;  // its place in `recent`
};
std::map<ProductKey, Cached> products;
std::list<ProductKey> recent;  // most recently used first

std::shared_ptr<const Product> product_for(const ProductKey& k) {
  {
    std::lock_guard<std::mutex> lock(products_mu);
    if (auto it = products.find(k); it != products.end()) {
      recent.splice(recent.begin(), recent, it->second.used);
      return it->second.product;
    }
  }
  using dt = dnnl::memory::data_type;
  const dt in = k.f32 ? dt::f32 : dt::bf16;
  const dnnl::memory::desc a({k.M, k.K}, in, k.ta ? dnnl::memory::dims{1, k.lda} : dnnl::memory::dims{k.lda, 1});
  const dnnl::memory::desc b({k.K, k.N}, in, k.tb ? dnnl::memory::dims{1, k.ldb} : dnnl::memory::dims{k.ldb, 1});
  const dnnl::memory::desc c({k.M, k.N}, dt::f32, dnnl::memory::dims{k.ldc, 1});
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // each thread brings its own
  // alpha op(A) op(B) + beta C: a linear map of the sum, then C's old value.
  dnnl::post_ops ops;
  if (k.alpha != 1.0f) {
#if DNNL_VERSION_MAJOR >= 3
    ops.append_eltwise(dnnl::algorithm::eltwise_linear, k.alpha, 0.0f);
#else
    ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_linear, k.alpha, 0.0f);
#endif
  }
  if (k.beta != 0.0f) ops.append_sum(k.beta);
  attr.set_post_ops(ops);
  auto made = std::make_shared<Product>();
  try {
    const OneThread one;
#if DNNL_VERSION_MAJOR >= 3  // Ubuntu 24.04's 3.1
    made->pd = dnnl::matmul::primitive_desc(cpu_engine(), a, b, c, attr);
#else  // Debian 12's 2.6
    made->pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), attr, cpu_engine());
#endif
    made->primitive = dnnl::matmul(made->pd);
  } catch (const dnnl::error& e) {
    PST_CHECK_MSG(false, "oneDNN could not set up a {} product {}x{}x{}: {}", k.f32 ? "float32" : "bf16", k.M, k.N, k.K,
                  e.what());
  }
  std::lock_guard<std::mutex> lock(products_mu);
  // Another thread may have made the same one meanwhile; the first is kept.
  if (auto it = products.find(k); it != products.end()) return it->second.product;
  if (products.size() >= kCachedProducts) {
    products.erase(recent.back());
    recent.pop_back();
  }
  recent.push_front(k);
  products.emplace(k, Cached{made, recent.begin()});
  return made;
}

}  // namespace

void round_to_bf16(const float* x, int64_t rows, int64_t cols, int64_t ld, uint16_t* out) {
#pragma omp parallel for schedule(static) if (rows * cols > 65536 && !omp_in_parallel())
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ld;
    uint16_t* o = out + r * cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) o[c] = to_bf16(xr[c]);
  }
}

bool cpu_bf16_products(std::string* why) {
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const auto bf16 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16);
  if ((isa & bf16) == bf16) return true;
  if (why) {
    std::string name = fmt::format("0x{:x}", isa);
    for (auto [known, text] : {std::pair{dnnl::cpu_isa::sse41, "SSE4.1"},
                               {dnnl::cpu_isa::avx, "AVX"},
                               {dnnl::cpu_isa::avx2, "AVX2"},
                               {dnnl::cpu_isa::avx2_vnni, "AVX2 with VNNI"},
                               {dnnl::cpu_isa::avx512_core, "AVX-512"},
                               {dnnl::cpu_isa::avx512_core_vnni, "AVX-512 with VNNI"}})
      if (isa == static_cast<unsigned>(known)) name = text;
    *why = fmt::format(
        "oneDNN {}.{} finds no bf16 instructions on this CPU (it finds {}; bf16 products need "
        "AVX512_BF16 or AMX)",
        dnnl_version()->major, dnnl_version()->minor, name);
  }
  return false;
}

namespace {

std::atomic<int64_t> sgemm_calls{0};  // onednn_sgemm_calls()

// A product of either kind on the calling thread (onednn_gemm.h).
void onednn_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const void* A, int64_t lda,
                 const void* B, int64_t ldb, float beta, float* C, int64_t ldc, bool f32) {
  const std::shared_ptr<const Product> held = product_for({ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, f32});
  const Product& p = *held;
  thread_local dnnl::stream stream(cpu_engine());
  thread_local std::vector<uint8_t> scratch;
  const dnnl::memory::desc scratch_desc = p.pd.scratchpad_desc();
  if (scratch.size() < scratch_desc.get_size()) scratch.resize(scratch_desc.get_size());
  const dnnl::engine& engine = cpu_engine();
  // oneDNN takes non-const handles; it only reads the operands.
  dnnl::memory a(p.pd.src_desc(), engine, const_cast<void*>(A));
  dnnl::memory b(p.pd.weights_desc(), engine, const_cast<void*>(B));
  dnnl::memory c(p.pd.dst_desc(), engine, C);
  dnnl::memory s(scratch_desc, engine, scratch.data());
  const OneThread one;
  p.primitive.execute(stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}, {DNNL_ARG_SCRATCHPAD, s}});
  stream.wait();
}

}  // namespace

void bf16_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  onednn_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, /*f32=*/false);
}

void onednn_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  sgemm_calls.fetch_add(1, std::memory_order_relaxed);
  onednn_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, /*f32=*/true);
}

int64_t onednn_sgemm_calls() { return sgemm_calls.load(std::memory_order_relaxed); }

size_t onednn_cached_products() {
  std::lock_guard<std::mutex> lock(products_mu);
  return products.size();
}

}  // namespace pst
