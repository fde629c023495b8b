// The CPU backend's log of matrix products (model/backend.h), which
// bench/train_throughput replays as plain sgemm calls for the GEMM share: it
// names each product as its caller asked for it, marks the attention's
// per-head products, leaves the results unchanged, and is silent when closed.
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "model/backend.h"

namespace pst {
namespace {

// C = op(A) op(B) in double, the oracle for a logged product.
std::vector<double> naive(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const std::vector<float>& A,
                          const std::vector<float>& B) {
  std::vector<double> C(static_cast<size_t>(M * N), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k)
        s += static_cast<double>(A[static_cast<size_t>(ta ? k * M + i : i * K + k)]) *
             static_cast<double>(B[static_cast<size_t>(tb ? j * K + k : k * N + j)]);
      C[static_cast<size_t>(i * N + j)] = s;
    }
  return C;
}

std::vector<float> values(int64_t n, float scale) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = scale * static_cast<float>((i * 37) % 23 - 11);
  return v;
}

TEST(GemmLogTest, RecordsEachProductAsAskedAndTheAttentionsPerHead) {
  auto be = make_cpu_backend(2);
  // A product large enough to be cut into blocks, and a small one.
  const int64_t M = 300, N = 200, K = 64;
  const std::vector<float> A = values(M * K, 0.01f), B = values(K * N, 0.02f);
  std::vector<float> C(static_cast<size_t>(M * N));
  const std::vector<float> a = values(3 * 5, 0.1f), b = values(7 * 3, 0.1f);
  std::vector<float> c(5 * 7);
  // Attention of 2 rows x 3 heads, 10 queries and keys of 8 values, no mask:
  // one block of queries per head, two products each.
  AttentionDims d;
  d.B = 2, d.H = 3, d.Tq = 10, d.Tk = 10, d.D = 8;
  d.ldq = d.ldk = d.ldv = d.ldo = d.H * d.D;
  d.scale = 0.35f;
  const std::vector<float> q = values(d.B * d.Tq * d.ldq, 0.05f), kv = values(d.B * d.Tk * d.ldk, 0.04f);
  std::vector<float> probs(static_cast<size_t>(d.B * d.H * d.Tq * d.Tk)), out(q.size());
  const std::vector<int32_t> key_len(static_cast<size_t>(d.B), 10);

  start_gemm_log();
  be->gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);
  be->gemm(true, true, 5, 7, 3, 1.0f, a.data(), 5, b.data(), 3, 0.0f, c.data(), 7);
  be->attention_forward(d, q.data(), kv.data(), kv.data(), key_len.data(), probs.data(), out.data(), 0.0f,
                        DropoutKey{});
  const std::vector<GemmRecord> log = stop_gemm_log();

  ASSERT_EQ(log.size(), 2u + 2u * static_cast<size_t>(d.B * d.H));
  EXPECT_FALSE(log[0].per_thread);
  EXPECT_EQ(log[0].M, M);  // whole, not the blocks it ran in
  EXPECT_EQ(log[0].N, N);
  EXPECT_EQ(log[0].K, K);
  EXPECT_FALSE(log[0].ta || log[0].tb);
  EXPECT_TRUE(log[1].ta && log[1].tb && !log[1].per_thread);
  EXPECT_EQ(log[1].M, 5);
  EXPECT_EQ(log[1].N, 7);
  EXPECT_EQ(log[1].K, 3);
  int scores = 0, mixes = 0;
  for (size_t i = 2; i < log.size(); ++i) {
    const GemmRecord& r = log[i];
    EXPECT_TRUE(r.per_thread);
    EXPECT_GE(r.seconds, 0.0);
    if (!r.ta && r.tb && r.M == 10 && r.N == 10 && r.K == 8) ++scores;  // Q K^T
    if (!r.ta && !r.tb && r.M == 10 && r.N == 8 && r.K == 10) ++mixes;  // P V
  }
  EXPECT_EQ(scores, d.B * d.H);
  EXPECT_EQ(mixes, d.B * d.H);

  // The logged products computed what they were asked.
  const std::vector<double> want = naive(false, false, M, N, K, A, B);
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(C[i], want[i], 1e-4 * (1 + std::fabs(want[i]))) << i;
  const std::vector<double> small = naive(true, true, 5, 7, 3, a, b);
  for (size_t i = 0; i < small.size(); ++i) ASSERT_NEAR(c[i], small[i], 1e-5) << i;

  // Closed, it records nothing.
  be->gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);
  EXPECT_TRUE(stop_gemm_log().empty());
  start_gemm_log();
  EXPECT_TRUE(stop_gemm_log().empty());  // a new log starts empty
}

}  // namespace
}  // namespace pst
