// bf16 matrix products on the CPU (train.matmul = "bf16"): operands rounded
// to bf16 (round to nearest, ties to even), products accumulated and written
// in fp32, by oneDNN's matmul on CPUs with bf16 instructions (AVX512_BF16 or
// AMX). Used by the CPU backend only (model/backend/cpu/cpu_backend.cc);
// backend.h's cpu_bf16_products says whether this CPU has them.
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

// The set-up products kept for reuse (one per shape and scaling, at most
// 1,024: the least recently used go first).
size_t bf16_cached_products();

}  // namespace pst
