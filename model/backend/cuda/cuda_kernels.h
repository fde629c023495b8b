// Launchers of the CUDA backend's kernels. Each mirrors the Backend function
// of the same name (model/backend.h) and queues its work on `stream`; all
// pointers are device pointers. Scratch buffers are passed in by the caller
// (CudaBackend owns and sizes them), so no launcher allocates.
//
// Reductions run in a fixed order, so every kernel here is deterministic:
// the same inputs give the same bits on every run.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "model/backend.h"

namespace pst::cuda {

void fill(float* x, int64_t n, float value, cudaStream_t stream);
void add(float* y, const float* x, int64_t n, cudaStream_t stream);
void axpy(float* y, float a, const float* x, int64_t n, cudaStream_t stream);
void scale(float* y, float a, int64_t n, cudaStream_t stream);
void add_bias(float* y, const float* b, int64_t rows, int64_t cols, cudaStream_t stream);
void add_positions(float* y, const float* pos, int64_t B, int64_t T, int64_t C, cudaStream_t stream);

// Rows of a column reduction handled by one block of partial sums.
constexpr int64_t kColumnChunkRows = 128;
// Floats of scratch that the column reductions below need.
inline size_t column_scratch(int64_t rows, int64_t cols) {
  return static_cast<size_t>((rows + kColumnChunkRows - 1) / kColumnChunkRows * cols);
}
// out(cols) += column sums of x(rows, cols).
void column_sums(float* out, const float* x, int64_t rows, int64_t cols, float* scratch, cudaStream_t stream);

void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b, int64_t rows,
                       int64_t C, float eps, cudaStream_t stream);
void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                        const float* mean, const float* rstd, int64_t rows, int64_t C, float* scratch,
                        cudaStream_t stream);

void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t rows, int64_t C, float eps,
                     cudaStream_t stream);
void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                      int64_t rows, int64_t C, float* scratch, cudaStream_t stream);
void rope(float* x, int64_t ld, int64_t B, int64_t T, int64_t heads, int64_t D, const float* cos, const float* sin,
          int64_t first, bool inverse, cudaStream_t stream);
void swiglu_forward(float* y, const float* x, int64_t rows, int64_t F, cudaStream_t stream);
void swiglu_backward(float* dx, const float* dy, const float* x, int64_t rows, int64_t F, cudaStream_t stream);

void activation_forward(Activation a, float* y, const float* x, int64_t n, cudaStream_t stream);
void activation_backward(Activation a, float* dx, const float* dy, const float* x, int64_t n, cudaStream_t stream);

// y[i] = keep(offset + i) ? x[i] / (1 - p) : 0 with the Philox stream of `key`
// (the CPU backend's numbers, element for element). p == 0 is a copy.
void dropout(float* y, const float* x, int64_t n, float p, DropoutKey key, int64_t offset, cudaStream_t stream);

void embedding_forward(float* y, const int32_t* ids, const float* table, int64_t n, int64_t C, float scale,
                       cudaStream_t stream);

// Scratch of the sort that groups equal ids in embedding_backward.
struct EmbeddingSortScratch {
  int32_t* keys_out = nullptr;   // n
  int32_t* order_in = nullptr;   // n
  int32_t* order_out = nullptr;  // n
  void* temp = nullptr;
  size_t temp_bytes = 0;
};
// Bytes of cub temporary storage the sort of n ids needs.
size_t embedding_sort_temp_bytes(int64_t n);
// dtable[ids[i]] += dy[i] * scale, adding the rows of one id in order of i,
// as the CPU backend does (so both give the same bits).
void embedding_backward(float* dtable, const int32_t* ids, const float* dy, int64_t n, int64_t C, float scale,
                        const EmbeddingSortScratch& s, cudaStream_t stream);

// Attention, the parts between the cuBLAS products. scores holds
// scale * Q K^T for every (b, h) in the probs layout (B, H, Tq, Tk); this
// masks keys j >= key_len[b] (and j > i when causal), takes the softmax in
// place (masked entries 0) and, when p > 0, writes the dropped-out copy.
void attention_softmax(const AttentionDims& d, const int32_t* key_len, float* probs, float* dropped, float p,
                       DropoutKey key, cudaStream_t stream);
// g holds dO V^T (the gradient of the dropped probabilities); this takes it
// back through dropout and the softmax: g = P * (g' - sum(g' * P)).
void attention_softmax_backward(const AttentionDims& d, const float* probs, float* g, float p, DropoutKey key,
                                cudaStream_t stream);

// Per-row results of cross_entropy, reduced on the device.
struct CrossEntropyScratch {
  double* row_loss = nullptr;        // N
  int32_t* row_correct = nullptr;    // N
  double* total_loss = nullptr;      // 1
  int64_t* total_correct = nullptr;  // 1
};
void cross_entropy(const float* logits, const int32_t* targets, int64_t N, int64_t V, float smoothing, float grad_scale,
                   float* dlogits, const CrossEntropyScratch& s, cudaStream_t stream);

void argmax(const float* x, int64_t N, int64_t V, int32_t* out, cudaStream_t stream);

// Blocks of the first pass of sum_squares (its scratch holds this many
// doubles and ints).
constexpr int kSumSquaresBlocks = 512;
// result[0] = sum of x^2 in fp64, *bad = 1 if some element is not finite. A
// fixed grid and tree, so the sum is deterministic.
void sum_squares(const float* x, int64_t n, double* partial, int* partial_bad, double* result, int* bad,
                 cudaStream_t stream);

// One fused Adam/AdamW step over n elements (ps/adam.h's element function).
void adam_update(float* w, float* m, float* v, const float* g, int64_t n, const AdamConstants& k, cudaStream_t stream);

}  // namespace pst::cuda
