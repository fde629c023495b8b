// The CPU backend's bf16 products (train.matmul = "bf16"): products against
// an fp64 sum of the operands rounded by core/bf16.h (whose rounding
// tests/core/bf16_test.cc checks), and a whole pass against the same pass in
// fp32.
// The products need a CPU with bf16 instructions; without them the tests
// that run products skip, naming what the CPU has.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "core/bf16.h"
#include "model/backend.h"
#include "model/backend/cpu/onednn_gemm.h"
#include "model/transformer.h"
#include "tests/model/fixtures.h"
#include "tests/test_util.h"

namespace pst {
namespace {

using Vec = std::vector<float>;

class Bf16ProductTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!cpu_bf16_products(&why)) GTEST_SKIP() << why;
    auto be = make_cpu_backend(2, MatmulPrecision::kBf16);
    ASSERT_TRUE(be.ok()) << be.status().to_string();
    bf16_ = std::move(*be);
    fp32_ = make_cpu_backend(2);
  }
  std::unique_ptr<Backend> bf16_, fp32_;
};

float rounded(float x) { return from_bf16(to_bf16(x)); }

struct Shape {
  int64_t M, N, K;
};

// Every transposition, with alpha and beta and operands wider than the
// product (leading dimensions beyond the columns used), on a product below
// the blocking threshold, one cut into row blocks and one into column blocks.
TEST_F(Bf16ProductTest, ProductsEqualAnFp64SumOfTheRoundedOperands) {
  for (Shape sh : {Shape{20, 30, 40}, Shape{700, 300, 256}, Shape{64, 1500, 96}}) {
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const int64_t M = sh.M, N = sh.N, K = sh.K;
        const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 7;
        const Vec A = testing::random_vec(static_cast<size_t>((ta ? K : M) * lda), 11);
        const Vec B = testing::random_vec(static_cast<size_t>((tb ? N : K) * ldb), 12);
        const Vec C0 = testing::random_vec(static_cast<size_t>(M * ldc), 13);
        const float alpha = 0.7f, beta = 0.3f;
        Vec got = C0, in32 = C0;
        bf16_->gemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, got.data(), ldc);
        fp32_->gemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, in32.data(), ldc);
        double worst = 0;
        int64_t differ_from_fp32 = 0;
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) {
            double sum = 0, mag = 0;
            for (int64_t k = 0; k < K; ++k) {
              const double a = rounded(ta ? A[k * lda + i] : A[i * lda + k]);
              const double b = rounded(tb ? B[j * ldb + k] : B[k * ldb + j]);
              sum += a * b;
              mag += std::fabs(a * b);
            }
            const double want = alpha * sum + beta * C0[i * ldc + j];
            // fp32 sums of K terms: a few ulps of the sum of magnitudes.
            const double err = std::fabs(got[i * ldc + j] - want) / (alpha * mag + std::fabs(beta * C0[i * ldc + j]));
            worst = std::max(worst, err);
            differ_from_fp32 += got[i * ldc + j] != in32[i * ldc + j];
          }
        EXPECT_LT(worst, 1e-5) << M << "x" << N << "x" << K << " ta " << ta << " tb " << tb;
        // The operands really were rounded: most results differ from fp32's.
        EXPECT_GT(differ_from_fp32, M * N / 2) << M << "x" << N << "x" << K << " ta " << ta << " tb " << tb;
        // Only C's M x N part is written; the columns past N keep their values.
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = N; j < ldc; ++j) ASSERT_EQ(got[i * ldc + j], C0[i * ldc + j]);
      }
  }
}

// A long sum with a small output: one block, which oneDNN would split over
// K among the threads it may use, changing the rounding with their number.
TEST_F(Bf16ProductTest, ALongSumIsBitwiseEqualForAnyThreadCount) {
  const int64_t M = 16, N = 16, K = 60000;
  const Vec A = testing::random_vec(static_cast<size_t>(M * K), 21), B = testing::random_vec(N * K, 22);
  Vec one(M * N);
  auto be1 = make_cpu_backend(1, MatmulPrecision::kBf16);
  ASSERT_TRUE(be1.ok());
  (*be1)->gemm(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, one.data(), N);
  for (int threads : {2, 3, 4}) {
    auto be = make_cpu_backend(threads, MatmulPrecision::kBf16);
    ASSERT_TRUE(be.ok());
    Vec got(M * N);
    (*be)->gemm(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, got.data(), N);
    EXPECT_EQ(std::memcmp(got.data(), one.data(), got.size() * sizeof(float)), 0) << threads << " threads";
  }
  omp_set_num_threads(2);
}

TEST_F(Bf16ProductTest, EmptySumScalesC) {
  Vec c = {1.0f, -2.0f, 4.0f, 8.0f};
  const float none = 0;
  bf16_->gemm(false, false, 2, 2, 0, 1.0f, &none, 1, &none, 2, 0.5f, c.data(), 2);
  EXPECT_EQ(c, (Vec{0.5f, -1.0f, 2.0f, 4.0f}));
}

// The set-up products kept are at most 1,024 (the least recently used go):
// 1,100 shapes leave 1,024, and a shape made again after it went computes
// the same product.
TEST_F(Bf16ProductTest, TheSetUpProductsKeptAreBounded) {
  const int64_t N = 3, K = 5;
  const std::vector<uint16_t> B(static_cast<size_t>(K * N), to_bf16(0.5f));
  auto product = [&](int64_t M) {
    std::vector<uint16_t> A(static_cast<size_t>(M * K));
    for (size_t i = 0; i < A.size(); ++i) A[i] = to_bf16(static_cast<float>(i % 7) - 3.0f);
    Vec C(static_cast<size_t>(M * N));
    bf16_gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);
    return C;
  };
  const Vec first = product(1);
  for (int64_t M = 2; M <= 1100; ++M) (void)product(M);
  EXPECT_EQ(onednn_cached_products(), 1024u);
  EXPECT_EQ(product(1), first);  // made again: the shape M = 1 had gone
  // Row 0 of A is (-3, -2, -1, 0, 1): its sum times 0.5.
  EXPECT_EQ(first, (Vec{-2.5f, -2.5f, -2.5f}));
}

// A training pass of g2p-modern's blocks in bf16 stays close to the same
// pass in fp32: the loss within 0.5%, every gradient within 5% of the
// largest (bf16 keeps 8 bits of each operand: 0.4% per rounding).
TEST_F(Bf16ProductTest, APassStaysCloseToFp32) {
  std::vector<float> g16, g32;
  const double l16 = testing::modern_blocks_pass(bf16_.get(), &g16),
               l32 = testing::modern_blocks_pass(fp32_.get(), &g32);
  EXPECT_NEAR(l16, l32, 5e-3 * l32);
  EXPECT_NE(l16, l32);  // bf16 was in use
  double scale = 0;
  for (float x : g32) scale = std::max(scale, std::fabs(static_cast<double>(x)));
  EXPECT_TRUE(testing::all_close(g16.data(), g32.data(), g32.size(), 5e-2 * scale, 0, "bf16 gradients"));
}

}  // namespace
}  // namespace pst
