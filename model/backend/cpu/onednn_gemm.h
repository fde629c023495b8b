// oneDNN's matrix products on the CPU, used by the CPU backend only
// (model/backend/cpu/cpu_backend.cc):
//  - bf16 (train.matmul = "bf16"): operands rounded to bf16 (round to
//    nearest, ties to even), products accumulated and written in fp32, on
//    CPUs with bf16 instructions (AVX512_BF16 or AMX; backend.h's
//    cpu_bf16_products says whether this CPU has them);
//  - fp32 (train.blas = "onednn"): oneDNN's float32 kernels in place of
//    OpenBLAS's sgemm.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pst {

// Rounds a rows x cols matrix with leading dimension ld to bf16 as
// core/bf16.h's to_bf16 does, written densely (leading dimension cols).
// Parallel over rows unless called inside a parallel region.
void round_to_bf16(const float* x, int64_t rows, int64_t cols, int64_t ld, uint16_t* out);

// C = alpha op(A) op(B) + beta C on bf16 operands, on the calling thread
// only, whatever the OpenMP settings, so the rounding depends on the shape
// alone. A is M x K (stored K x M when ta), B is K x N (N x K when tb), C is
// M x N with leading dimension ldc. Thread-safe.
void bf16_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The same on float32 operands, for K >= 1. oneDNN 2.6 runs a product whose
// sum is both scaled (alpha != 1) and added to C (beta != 0) in a reference
// kernel (DNNL_VERBOSE names it ref:any; 27 ms for a 256 x 64 x 64 product
// on a Zen 4), and a small product costs more in its set-up per call
// (finding the product, wrapping the operands) than OpenBLAS takes for the
// whole of it: onednn_fast_sgemm() says which products gain (1M
// multiply-adds or more: g2p-modern's step, whose attention products are
// small, ran 0.97x OpenBLAS's with every other product in oneDNN and 1.06x
// with this bound).
void onednn_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
inline bool onednn_fast_sgemm(int64_t M, int64_t N, int64_t K, float alpha, float beta) {
  return K > 0 && (alpha == 1.0f || beta == 0.0f) &&
         static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K) >= 1e6;
}
// The float32 products onednn_sgemm() has run in this process.
int64_t onednn_sgemm_calls();

// The set-up products kept for reuse (one per shape and scaling, at most
// 1,024: the least recently used go first).
size_t onednn_cached_products();

}  // namespace pst
