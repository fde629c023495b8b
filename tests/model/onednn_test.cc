// The CPU backend with train.blas = "onednn": its float32 products against
// an fp64 sum of the operands, each kind of product in the library that
// runs it (oneDNN's float32 calls are counted), the same bits for any
// thread count, and a whole training pass against the same pass through
// OpenBLAS.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "model/backend.h"
#include "model/backend/cpu/onednn_gemm.h"
#include "model/transformer.h"
#include "tests/model/fixtures.h"
#include "tests/test_util.h"

namespace pst {
namespace {

using Vec = std::vector<float>;

std::unique_ptr<Backend> onednn_backend(int threads) {
  auto be = make_cpu_backend(threads, MatmulPrecision::kFp32, CpuBlas::kOneDnn);
  PST_CHECK(be.ok());
  return std::move(*be);
}

struct Shape {
  int64_t M, N, K;
};

// Every transposition, with and without alpha and beta, operands wider than
// the product, on a product below the blocking threshold, one cut into row
// blocks and one into column blocks. A product whose sum is both scaled and
// added to C runs in OpenBLAS (onednn_gemm.h), and so does one of fewer than
// 1M multiply-adds (the first shape); the others run in oneDNN (the larger
// shapes' blocks each hold more than 1M).
TEST(OneDnnFp32Test, ProductsEqualAnFp64Sum) {
  const std::unique_ptr<Backend> be = onednn_backend(2);
  for (Shape sh : {Shape{20, 30, 40}, Shape{700, 300, 256}, Shape{64, 1500, 96}})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (auto [alpha, beta] : {std::pair{1.0f, 0.0f}, {0.7f, 0.0f}, {1.0f, 0.3f}, {0.7f, 0.3f}}) {
          const int64_t M = sh.M, N = sh.N, K = sh.K;
          const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 7;
          const Vec A = testing::random_vec(static_cast<size_t>((ta ? K : M) * lda), 11);
          const Vec B = testing::random_vec(static_cast<size_t>((tb ? N : K) * ldb), 12);
          const Vec C0 = testing::random_vec(static_cast<size_t>(M * ldc), 13);
          Vec got = C0;
          const int64_t calls_before = onednn_sgemm_calls();
          be->gemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, got.data(), ldc);
          const bool in_onednn = onednn_sgemm_calls() > calls_before;
          const bool large = M * N * K > 1'000'000;
          EXPECT_EQ(in_onednn, large && (alpha == 1.0f || beta == 0.0f))
              << M << "x" << N << "x" << K << " ta " << ta << " tb " << tb << " alpha " << alpha << " beta " << beta;
          double worst = 0;
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
              double sum = 0, mag = 0;
              for (int64_t k = 0; k < K; ++k) {
                const double a = ta ? A[k * lda + i] : A[i * lda + k];
                const double b = tb ? B[j * ldb + k] : B[k * ldb + j];
                sum += a * b;
                mag += std::fabs(a * b);
              }
              const double want = alpha * sum + beta * C0[i * ldc + j];
              const double err = std::fabs(got[i * ldc + j] - want) / (alpha * mag + std::fabs(beta * C0[i * ldc + j]));
              worst = std::max(worst, err);
            }
          EXPECT_LT(worst, 1e-5) << M << "x" << N << "x" << K << " ta " << ta << " tb " << tb;
          // Only C's M x N part is written.
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = N; j < ldc; ++j) ASSERT_EQ(got[i * ldc + j], C0[i * ldc + j]);
        }
}

TEST(OneDnnFp32Test, EmptySumScalesC) {
  const std::unique_ptr<Backend> be = onednn_backend(1);
  Vec c = {1.0f, -2.0f, 4.0f, 8.0f};
  const float none = 0;
  be->gemm(false, false, 2, 2, 0, 1.0f, &none, 1, &none, 2, 0.5f, c.data(), 2);
  EXPECT_EQ(c, (Vec{0.5f, -1.0f, 2.0f, 4.0f}));
}

// A long sum with a small output: one block, which oneDNN would split over K
// among the threads it may use, changing the rounding with their number.
TEST(OneDnnFp32Test, ALongSumIsBitwiseEqualForAnyThreadCount) {
  const int64_t M = 16, N = 16, K = 60000;
  const Vec A = testing::random_vec(static_cast<size_t>(M * K), 21), B = testing::random_vec(N * K, 22);
  Vec one(M * N);
  onednn_backend(1)->gemm(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, one.data(), N);
  for (int threads : {2, 3, 4}) {
    Vec got(M * N);
    onednn_backend(threads)->gemm(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, got.data(), N);
    EXPECT_EQ(std::memcmp(got.data(), one.data(), got.size() * sizeof(float)), 0) << threads << " threads";
  }
  omp_set_num_threads(2);
}

// A training pass (g2p-modern's blocks, attention included) with oneDNN's
// products stays within float32 rounding of the same pass with OpenBLAS's,
// and oneDNN ran some of its products (counted: whether the bits differ
// depends on the CPU's kernels; with OpenBLAS's SkylakeX ones this pass
// gave the same bits through both libraries).
TEST(OneDnnFp32Test, APassMatchesOpenBlasToRounding) {
  const std::unique_ptr<Backend> onednn = onednn_backend(2), openblas = make_cpu_backend(2);
  std::vector<float> gd, gb;
  const int64_t before = onednn_sgemm_calls();
  const double ld = testing::modern_blocks_pass(onednn.get(), &gd);
  const int64_t in_onednn = onednn_sgemm_calls() - before;
  const double lb = testing::modern_blocks_pass(openblas.get(), &gb);
  EXPECT_GT(in_onednn, 0) << "oneDNN ran none of the pass's products";
  EXPECT_EQ(onednn_sgemm_calls() - before, in_onednn) << "the OpenBLAS backend called oneDNN";
  EXPECT_NEAR(ld, lb, 1e-5 * lb);
  double scale = 0;
  for (float x : gb) scale = std::max(scale, std::fabs(static_cast<double>(x)));
  EXPECT_TRUE(testing::all_close(gd.data(), gb.data(), gb.size(), 1e-4 * scale, 0, "oneDNN gradients"));
}

}  // namespace
}  // namespace pst
