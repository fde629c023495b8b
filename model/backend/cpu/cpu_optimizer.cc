// The host loops of the optimizer's element-wise math (model/elementwise.h),
// shared by the CPU backend and the server's host path.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/parallel.h"
#include "model/elementwise.h"

namespace pst {

void adam_update(float* w, float* m, float* v, const float* g, int64_t n, const AdamConstants& k) {
  adam_update(w, w, m, v, g, n, k);
}

namespace {

// Below this many values a loop runs on the calling thread alone, outside
// any OpenMP region (core/parallel.h says why).
constexpr int64_t kParallelValues = 65536;

}  // namespace

void adam_update(float* out, const float* w, float* m, float* v, const float* g, int64_t n, const AdamConstants& k) {
  elementwise(n, kParallelValues, [&](int64_t i) {
    float wi = w[i];
    adam_update_element(wi, m[i], v[i], g[i], k);
    out[i] = wi;
  });
}

namespace {

// Blocks of a fixed size summed in order, then the blocks' sums in order:
// the sum of squares does not depend on the number of threads.
constexpr int64_t kBlock = 4096;

// The sum of squares of x[begin, end) in fp64; bad |= 1 for a value that is
// not finite.
double block_sum_squares(const float* x, int64_t begin, int64_t end, int& bad) {
  double sum = 0.0;
  int b = 0;
#pragma omp simd reduction(+ : sum) reduction(| : b)
  for (int64_t i = begin; i < end; ++i) {
    const double v = x[i];
    sum += v * v;
    b |= std::isfinite(x[i]) ? 0 : 1;
  }
  bad |= b;
  return sum;
}

// What block_sum_squares' per-block sums add up to, and whether it is finite.
double total(const std::vector<double>& partial, int bad, bool* nonfinite) {
  double sum = 0.0;
  for (double p : partial) sum += p;
  *nonfinite = bad != 0 || !std::isfinite(sum);
  return sum;
}

}  // namespace

double sum_squares(const float* x, int64_t n, bool* nonfinite) {
  const float* one = x;
  return weighted_sum(nullptr, &one, nullptr, 1, &n, 1, nonfinite);
}

double weighted_sum(float* out, const float* const* x, const float* weight, int k, int64_t n, bool* nonfinite) {
  return weighted_sum(&out, x, weight, k, &n, 1, nonfinite);
}

double weighted_sum(float* const* out, const float* const* x, const float* weight, int k, const int64_t* n,
                    size_t pieces, bool* nonfinite) {
  // Each piece in blocks of its own, the blocks in piece order.
  struct Block {
    size_t piece;
    int64_t begin, end;
  };
  std::vector<Block> blocks;
  int64_t values = 0;
  for (size_t p = 0; p < pieces; ++p) {
    for (int64_t b = 0; b < n[p]; b += kBlock) blocks.push_back({p, b, std::min(n[p], b + kBlock)});
    values += n[p];
  }
  std::vector<double> partial(blocks.size(), 0.0);
  const auto sum_block = [&](int64_t b, int& bad) {
    const Block& bl = blocks[static_cast<size_t>(b)];
    const float* const* terms = x + bl.piece * static_cast<size_t>(k);
    float* o = out == nullptr ? nullptr : out[bl.piece];
    if (o == nullptr) {  // one term, read as it is
      partial[static_cast<size_t>(b)] = block_sum_squares(terms[0], bl.begin, bl.end, bad);
      return;
    }
    // Each term over the block while it is in cache, then its squares.
    const float* x0 = terms[0];
    const float w0 = weight[0];
#pragma omp simd
    for (int64_t i = bl.begin; i < bl.end; ++i) o[i] = x0[i] * w0;
    for (int j = 1; j < k; ++j) {
      const float* xj = terms[j];
      const float wj = weight[j];
#pragma omp simd
      for (int64_t i = bl.begin; i < bl.end; ++i) o[i] += xj[i] * wj;
    }
    partial[static_cast<size_t>(b)] = block_sum_squares(o, bl.begin, bl.end, bad);
  };
  int bad = 0;
  const int64_t count = static_cast<int64_t>(blocks.size());
  // Split over the threads only when large, as elementwise() does; a loop
  // of blocks, with a reduction of its own.
  if (values > kParallelValues) {
#pragma omp parallel for schedule(static) reduction(| : bad)
    for (int64_t b = 0; b < count; ++b) sum_block(b, bad);
  } else {
    for (int64_t b = 0; b < count; ++b) sum_block(b, bad);
  }
  return total(partial, bad, nonfinite);
}

}  // namespace pst
