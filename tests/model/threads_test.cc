// The determinism contract of the CPU backend: a forward and backward pass,
// and the squared norm the servers clip with, give the same bits with 1, 2,
// 3 or 4 threads. The model is large enough that every parallel path runs
// (matrix products cut into blocks, layer-norm gradients summed by blocks,
// loss rows, sum_squares blocks); with a split that followed the thread
// count, OpenBLAS's rounding changed with it.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "core/philox.h"
#include "model/backend.h"
#include "model/elementwise.h"
#include "model/transformer.h"
#include "tests/model/fixtures.h"

namespace pst {
namespace {

struct PassResult {
  double loss = 0;
  std::vector<float> grads;
};

PassResult pass(int threads, const Batch& batch, int32_t vocab, MatmulPrecision matmul = MatmulPrecision::kFp32,
                CpuBlas blas = CpuBlas::kOpenBlas) {
  auto made = make_cpu_backend(threads, matmul, blas);
  PST_CHECK(made.ok());
  std::unique_ptr<Backend> be = std::move(*made);
  ModelConfig cfg = testing::tiny_model(ModelKind::kEncoderDecoder, NormPlacement::kPre);
  cfg.d_model = 128;
  cfg.heads = 4;
  cfg.ffn_dim = 512;
  cfg.max_len = 32;
  cfg.dropout = cfg.attention_dropout = 0.1f;
  Transformer model(cfg, vocab, vocab, be.get());
  model.init_weights(3);
  ForwardOptions opt;
  opt.train = true;
  opt.grad_scale = 1.0f / static_cast<float>(batch.tokens());
  opt.label_smoothing = 0.1f;
  opt.seed = 5;
  model.zero_grads();
  PassResult r;
  r.loss = model.forward(batch, opt).loss_sum;
  model.backward();
  r.grads.resize(static_cast<size_t>(model.num_params()));
  model.get_grads(r.grads.data());
  return r;
}

// A pass with 2, 3 and 4 threads gives the bits of a pass with 1.
void expect_same_for_any_thread_count(MatmulPrecision matmul, CpuBlas blas = CpuBlas::kOpenBlas) {
  const int32_t vocab = 40;
  // 96 x 24 target rows: products of 2304 rows, cut into blocks.
  const Batch batch = testing::random_batch(96, 20, 24, vocab, 11);
  const PassResult one = pass(1, batch, vocab, matmul, blas);
  for (int threads : {2, 3, 4}) {
    const PassResult r = pass(threads, batch, vocab, matmul, blas);
    EXPECT_EQ(std::memcmp(&r.loss, &one.loss, sizeof(double)), 0)
        << threads << " threads: loss " << r.loss << ", 1 thread " << one.loss;
    ASSERT_EQ(r.grads.size(), one.grads.size());
    int shown = 0;
    for (size_t i = 0; i < r.grads.size() && shown < 5; ++i)
      if (std::memcmp(&r.grads[i], &one.grads[i], sizeof(float)) != 0) {
        ADD_FAILURE() << threads << " threads: gradient " << i << " is " << r.grads[i] << ", with 1 thread "
                      << one.grads[i];
        ++shown;
      }
  }
  omp_set_num_threads(1);
}

TEST(ThreadsTest, ForwardAndBackwardAreBitwiseEqualForAnyThreadCount) {
  expect_same_for_any_thread_count(MatmulPrecision::kFp32);
}

// The same contract with bf16 products (oneDNN's, one thread per block).
TEST(ThreadsTest, Bf16ProductsAreBitwiseEqualForAnyThreadCount) {
  std::string why;
  if (!cpu_bf16_products(&why)) GTEST_SKIP() << why;
  expect_same_for_any_thread_count(MatmulPrecision::kBf16);
}

// The same contract with oneDNN's float32 products (train.blas = "onednn").
TEST(ThreadsTest, OneDnnProductsAreBitwiseEqualForAnyThreadCount) {
  expect_same_for_any_thread_count(MatmulPrecision::kFp32, CpuBlas::kOneDnn);
}

TEST(ThreadsTest, SumSquaresIsBitwiseEqualForAnyThreadCountAndMatchesTheSum) {
  std::vector<float> x(3'000'001);
  const Philox rng(9, 1);
  for (size_t i = 0; i < x.size(); ++i) x[i] = uniform01(rng.block(i).v[0]) * 2.0f - 1.0f;
  long double exact = 0;
  for (float v : x) exact += static_cast<long double>(v) * v;
  omp_set_num_threads(1);
  bool bad = true;
  const double one = sum_squares(x.data(), static_cast<int64_t>(x.size()), &bad);
  EXPECT_FALSE(bad);
  EXPECT_NEAR(one, static_cast<double>(exact), 1e-12 * static_cast<double>(exact));
  for (int threads : {2, 3, 4}) {
    omp_set_num_threads(threads);
    const double got = sum_squares(x.data(), static_cast<int64_t>(x.size()), &bad);
    EXPECT_EQ(std::memcmp(&got, &one, sizeof(double)), 0) << threads << " threads: " << got << " against " << one;
  }
  omp_set_num_threads(1);
}

}  // namespace
}  // namespace pst
