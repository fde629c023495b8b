// Finite-difference checks of every backward kernel and of whole models:
// central differences of L = sum(r * y) for a fixed random r, computed in
// fp64 over the fp32 outputs, against the analytic gradient. They run on the
// backend PST_TEST_DEVICE names (tests/test_backend.h); kernel arguments go
// through device copies (Mirror), so the same code checks CPU and CUDA.
#include <bit>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "model/backend.h"
#include "model/transformer.h"
#include "tests/model/fixtures.h"
#include "tests/test_backend.h"
#include "tests/test_util.h"

namespace pst {
namespace {

using Vec = std::vector<float>;

using testing::random_vec;

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// Checks d/dx_i sum(r * f(x)) against grad[i] for every i (or every
// stride-th), with central differences of step h.
void check_gradient(const std::string& what, Vec& x, const Vec& grad, const std::function<double()>& loss,
                    float h = 1e-2f, double rtol = 1e-2, double atol = 2e-3, size_t stride = 1) {
  int bad = 0;
  for (size_t i = 0; i < x.size(); i += stride) {
    const float saved = x[i];
    x[i] = saved + h;
    const double up = loss();
    x[i] = saved - h;
    const double down = loss();
    x[i] = saved;
    const double fd = (up - down) / (2.0 * h);
    if (std::abs(fd - grad[i]) > atol + rtol * std::abs(fd) && bad++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: analytic " << grad[i] << " finite difference " << fd;
  }
}

class GradcheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    be_ = testing::test_backend();
    if (!be_) GTEST_SKIP() << "PST_TEST_DEVICE=cuda but no CUDA device is present";
    dev_ = std::make_unique<testing::Mirror>(be_.get());
  }
  void TearDown() override { dev_.reset(); }
  std::unique_ptr<Backend> be_;
  std::unique_ptr<testing::Mirror> dev_;
};

TEST_F(GradcheckTest, LayerNorm) {
  const int64_t rows = 5, C = 12;
  Vec x = random_vec(rows * C, 1, 2.0f), w = random_vec(C, 2), b = random_vec(C, 3);
  const Vec r = random_vec(rows * C, 4);
  Vec y(rows * C), mean(rows), rstd(rows);
  testing::Mirror& d = *dev_;
  auto loss = [&] {
    be_->layernorm_forward(d.in(y), d.in(mean), d.in(rstd), d.in(x), d.in(w), d.in(b), rows, C, 1e-5f);
    d.back(y);
    return dot(r, y);
  };
  loss();
  d.back(mean);
  d.back(rstd);
  Vec dx(rows * C), dw(C, 0.0f), db(C, 0.0f);
  be_->layernorm_backward(d.in(dx), d.in(dw), d.in(db), d.in(r), d.in(x), d.in(w), d.in(mean), d.in(rstd), rows, C);
  d.back(dx);
  d.back(dw);
  d.back(db);
  check_gradient("layernorm dx", x, dx, loss);
  check_gradient("layernorm dw", w, dw, loss);
  check_gradient("layernorm db", b, db, loss);
  // dw, db accumulate.
  Vec dw2 = dw;
  be_->layernorm_backward(d.in(dx), d.in(dw2), d.in(db), d.in(r), d.in(x), d.in(w), d.in(mean), d.in(rstd), rows, C);
  d.back(dw2);
  for (int64_t c = 0; c < C; ++c) EXPECT_FLOAT_EQ(dw2[c], 2 * dw[c]);
}

TEST_F(GradcheckTest, Activations) {
  for (Activation a : {Activation::kRelu, Activation::kGelu, Activation::kGeluTanh}) {
    Vec x = random_vec(64, 5, 2.0f);
    for (auto& v : x)
      if (std::abs(v) < 0.05f) v += 0.1f;  // keep ReLU away from its kink
    const Vec r = random_vec(64, 6);
    Vec y(64), dx(64);
    testing::Mirror d(be_.get());
    auto loss = [&] {
      be_->activation_forward(a, d.in(y), d.in(x), 64);
      d.back(y);
      return dot(r, y);
    };
    be_->activation_backward(a, d.in(dx), d.in(r), d.in(x), 64);
    d.back(dx);
    check_gradient(std::string("activation ") + to_string(a), x, dx, loss, 1e-3f);
  }
  // Values against the closed forms.
  Vec x{-1.5f, 0.3f, 2.0f}, y(3);
  testing::Mirror& d = *dev_;
  be_->activation_forward(Activation::kGelu, d.in(y), d.in(x), 3);
  d.back(y);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(y[i], 0.5 * x[i] * (1 + std::erf(x[i] / std::sqrt(2.0))), 1e-6);
  be_->activation_forward(Activation::kGeluTanh, d.in(y), d.in(x), 3);
  d.back(y);
  for (int i = 0; i < 3; ++i)
    EXPECT_NEAR(y[i], 0.5 * x[i] * (1 + std::tanh(std::sqrt(2 / M_PI) * (x[i] + 0.044715 * std::pow(x[i], 3)))), 1e-6);
}

struct AttnCase {
  bool causal;
  bool cross;
  float dropout;
  int64_t T = 4;  // query length; > 64 spans several query blocks of the CPU kernel
  int64_t H = 2;
  int64_t kv_heads = 0;  // grouped-query attention when below H
};

class AttentionGradTest : public GradcheckTest, public ::testing::WithParamInterface<AttnCase> {};

TEST_P(AttentionGradTest, MatchesFiniteDifferences) {
  const AttnCase c = GetParam();
  AttentionDims d;
  d.B = 2;
  d.H = c.H;
  d.kv_heads = c.kv_heads;
  d.D = 3;
  d.Tq = c.T;
  d.Tk = c.cross ? c.T + 1 : c.T;
  d.causal = c.causal;
  d.scale = 1.0f / std::sqrt(3.0f);
  const int64_t C = d.H * d.D, KV = (c.kv_heads > 0 ? c.kv_heads : c.H) * d.D;
  // Strided layouts as in the model: q in a (Tq, C + 2KV) row for self-attention.
  d.ldq = c.cross ? C : C + 2 * KV;
  d.ldk = d.ldv = c.cross ? 2 * KV : C + 2 * KV;
  d.ldo = C;
  Vec q = random_vec(d.B * d.Tq * d.ldq, 7), kv = c.cross ? random_vec(d.B * d.Tk * d.ldk, 8) : Vec();
  Vec& kbuf = c.cross ? kv : q;
  const int64_t koff = c.cross ? 0 : C, voff = c.cross ? KV : C + KV;
  // Row 1 has two padded keys; with the causal mask they are the last two.
  const std::vector<int32_t> key_len{static_cast<int32_t>(d.Tk), static_cast<int32_t>(d.Tk - 2)};
  const DropoutKey key = DropoutKey::make(3, 1, 0, 9);
  const Vec r = random_vec(d.B * d.Tq * C, 9);
  Vec probs(d.B * d.H * d.Tq * d.Tk), out(d.B * d.Tq * C);
  testing::Mirror& m = *dev_;
  auto loss = [&] {
    const float* qd = m.in(q);
    const float* kd = c.cross ? m.in(kv) : qd;
    be_->attention_forward(d, qd, kd + koff, kd + voff, m.in(key_len), m.in(probs), m.in(out), c.dropout, key);
    m.back(out);
    return dot(r, out);
  };
  loss();
  m.back(probs);
  // Masked keys get zero probability.
  for (int64_t h = 0; h < d.H; ++h)
    for (int64_t i = 0; i < d.Tq; ++i)
      for (int64_t j = 0; j < d.Tk; ++j) {
        const float p = probs[((1 * d.H + h) * d.Tq + i) * d.Tk + j];
        if (j >= key_len[1] || (c.causal && j > i)) {
          EXPECT_EQ(p, 0.0f);
        }
      }
  Vec dq(q.size(), 0.0f), dkv(kbuf.size(), 0.0f);
  {
    const float* qd = m.in(q);
    const float* kd = c.cross ? m.in(kv) : qd;
    float* dkvd = m.in(dkv);
    be_->attention_backward(d, qd, kd + koff, kd + voff, m.in(key_len), m.in(probs), m.in(r), c.cross ? m.in(dq) : dkvd,
                            dkvd + koff, dkvd + voff, c.dropout, key);
    m.back(dq);
    m.back(dkv);
  }
  const size_t stride = c.T > 8 ? 7 : 1;
  if (c.cross) {
    check_gradient("attention dq", q, dq, loss, 1e-2f, 1e-2, 2e-3, stride);
    check_gradient("attention dk,dv", kv, dkv, loss, 1e-2f, 1e-2, 2e-3, stride);
  } else {
    check_gradient("attention dqkv", q, dkv, loss, 1e-2f, 1e-2, 2e-3, stride);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, AttentionGradTest,
                         ::testing::Values(AttnCase{false, false, 0.0f}, AttnCase{true, false, 0.0f},
                                           AttnCase{false, true, 0.0f}, AttnCase{true, false, 0.3f},
                                           AttnCase{false, true, 0.5f}, AttnCase{true, false, 0.2f, 130},
                                           AttnCase{false, true, 0.0f, 70}, AttnCase{true, false, 0.2f, 4, 4, 2},
                                           AttnCase{false, true, 0.3f, 4, 4, 1},
                                           AttnCase{true, false, 0.0f, 70, 6, 3}));

// Grouped-query attention is multi-head attention whose key and value heads
// are repeated: the same outputs as an ungrouped call on the repeated
// copies, and key/value gradients that are the sums over each group.
TEST_F(GradcheckTest, GroupedQueryAttentionEqualsRepeatedHeads) {
  AttentionDims g;
  g.B = 2;
  g.H = 4;
  g.kv_heads = 2;
  g.D = 3;
  g.Tq = 5;
  g.Tk = 6;
  g.scale = 0.5f;
  const int64_t C = g.H * g.D, KV = g.kv_heads * g.D;
  g.ldq = g.ldo = C;
  g.ldk = g.ldv = KV;
  AttentionDims full = g;
  full.kv_heads = 0;
  full.ldk = full.ldv = C;
  const Vec q = random_vec(g.B * g.Tq * C, 31), k = random_vec(g.B * g.Tk * KV, 32),
            v = random_vec(g.B * g.Tk * KV, 33);
  Vec k_rep(g.B * g.Tk * C), v_rep(g.B * g.Tk * C);
  for (int64_t row = 0; row < g.B * g.Tk; ++row)
    for (int64_t h = 0; h < g.H; ++h)
      for (int64_t i = 0; i < g.D; ++i) {
        k_rep[row * C + h * g.D + i] = k[row * KV + (h / 2) * g.D + i];
        v_rep[row * C + h * g.D + i] = v[row * KV + (h / 2) * g.D + i];
      }
  const std::vector<int32_t> key_len{6, 4};
  const Vec dout = random_vec(g.B * g.Tq * C, 34);
  const DropoutKey key = DropoutKey::make(1, 2, 3, 4);
  testing::Mirror& m = *dev_;
  Vec probs(g.B * g.H * g.Tq * g.Tk), out(g.B * g.Tq * C), probs_r(probs.size()), out_r(out.size());
  Vec dq(q.size()), dk(k.size()), dv(v.size()), dq_r(q.size()), dk_r(k_rep.size()), dv_r(v_rep.size());
  be_->attention_forward(g, m.in(q), m.in(k), m.in(v), m.in(key_len), m.in(probs), m.in(out), 0.25f, key);
  be_->attention_backward(g, m.in(q), m.in(k), m.in(v), m.in(key_len), m.in(probs), m.in(dout), m.in(dq), m.in(dk),
                          m.in(dv), 0.25f, key);
  for (Vec* x : {&probs, &out, &dq, &dk, &dv}) m.back(*x);
  be_->attention_forward(full, m.in(q), m.in(k_rep), m.in(v_rep), m.in(key_len), m.in(probs_r), m.in(out_r), 0.25f,
                         key);
  be_->attention_backward(full, m.in(q), m.in(k_rep), m.in(v_rep), m.in(key_len), m.in(probs_r), m.in(dout), m.in(dq_r),
                          m.in(dk_r), m.in(dv_r), 0.25f, key);
  for (Vec* x : {&probs_r, &out_r, &dq_r, &dk_r, &dv_r}) m.back(*x);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], out_r[i], 1e-6) << "out " << i;
  for (size_t i = 0; i < dq.size(); ++i) ASSERT_NEAR(dq[i], dq_r[i], 1e-6) << "dq " << i;
  for (int64_t row = 0; row < g.B * g.Tk; ++row)
    for (int64_t j = 0; j < KV; ++j) {
      const int64_t h0 = j / g.D * 2, i = j % g.D;
      const double sk = dk_r[row * C + h0 * g.D + i] + dk_r[row * C + (h0 + 1) * g.D + i];
      const double sv = dv_r[row * C + h0 * g.D + i] + dv_r[row * C + (h0 + 1) * g.D + i];
      ASSERT_NEAR(dk[row * KV + j], sk, 1e-6) << "dk " << row << "," << j;
      ASSERT_NEAR(dv[row * KV + j], sv, 1e-6) << "dv " << row << "," << j;
    }
}

TEST_F(GradcheckTest, RmsNorm) {
  const int64_t rows = 5, C = 12;
  Vec x = random_vec(rows * C, 41, 2.0f), w = random_vec(C, 42);
  const Vec r = random_vec(rows * C, 43);
  Vec y(rows * C), rstd(rows);
  testing::Mirror& d = *dev_;
  auto loss = [&] {
    be_->rmsnorm_forward(d.in(y), d.in(rstd), d.in(x), d.in(w), rows, C, 1e-5f);
    d.back(y);
    return dot(r, y);
  };
  loss();
  d.back(rstd);
  // Values against the formula, in double.
  for (int64_t i = 0; i < rows; ++i) {
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += static_cast<double>(x[i * C + c]) * x[i * C + c];
    const double s = 1.0 / std::sqrt(ss / C + 1e-5);
    EXPECT_NEAR(rstd[i], s, 1e-5 * s);
    for (int64_t c = 0; c < C; ++c) EXPECT_NEAR(y[i * C + c], x[i * C + c] * s * w[c], 1e-5);
  }
  Vec dx(rows * C), dw(C, 0.0f);
  be_->rmsnorm_backward(d.in(dx), d.in(dw), d.in(r), d.in(x), d.in(w), d.in(rstd), rows, C);
  d.back(dx);
  d.back(dw);
  check_gradient("rmsnorm dx", x, dx, loss);
  check_gradient("rmsnorm dw", w, dw, loss);
  Vec dw2 = dw;  // dw accumulates
  be_->rmsnorm_backward(d.in(dx), d.in(dw2), d.in(r), d.in(x), d.in(w), d.in(rstd), rows, C);
  d.back(dw2);
  for (int64_t c = 0; c < C; ++c) EXPECT_FLOAT_EQ(dw2[c], 2 * dw[c]);
}

TEST_F(GradcheckTest, SwiGLU) {
  const int64_t rows = 3, F = 5;
  Vec x = random_vec(rows * 2 * F, 51, 3.0f);
  const Vec r = random_vec(rows * F, 52);
  Vec y(rows * F);
  testing::Mirror& d = *dev_;
  auto loss = [&] {
    be_->swiglu_forward(d.in(y), d.in(x), rows, F);
    d.back(y);
    return dot(r, y);
  };
  loss();
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < F; ++j) {
      const double g = x[i * 2 * F + j], u = x[i * 2 * F + F + j];
      EXPECT_NEAR(y[i * F + j], g / (1 + std::exp(-g)) * u, 1e-5 * (1 + std::abs(g * u)));
    }
  Vec dx(rows * 2 * F);
  be_->swiglu_backward(d.in(dx), d.in(r), d.in(x), rows, F);
  d.back(dx);
  check_gradient("swiglu", x, dx, loss, 1e-3f);
}

// Rotary positions: the rotation against the formula in double, the
// inverse undoing it, and the property they exist for: a query at p and a
// key at p' have a dot product that depends on p - p' only.
TEST_F(GradcheckTest, RotaryPositions) {
  const int64_t B = 2, T = 5, heads = 3, D = 6, ld = heads * D + 4, max_len = 16;
  const double theta = 100.0;
  const RopeTables tab = rope_tables(max_len, D, theta);
  const Vec x = random_vec(B * T * ld, 61);
  Vec y = x;
  testing::Mirror& d = *dev_;
  float* yd = d.in(y);
  const float* cosd = d.in(tab.cos);
  const float* sind = d.in(tab.sin);
  be_->rope(yd, ld, B, T, heads, D, cosd, sind, 3, false);
  d.back(y);
  for (int64_t row = 0; row < B * T; ++row) {
    const double p = static_cast<double>(3 + row % T);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < D / 2; ++i) {
        const double a = p * std::pow(theta, -2.0 * i / D);
        const double x1 = x[row * ld + h * D + i], x2 = x[row * ld + h * D + i + D / 2];
        EXPECT_NEAR(y[row * ld + h * D + i], x1 * std::cos(a) - x2 * std::sin(a), 1e-5);
        EXPECT_NEAR(y[row * ld + h * D + i + D / 2], x2 * std::cos(a) + x1 * std::sin(a), 1e-5);
      }
    for (int64_t c = heads * D; c < ld; ++c) EXPECT_EQ(y[row * ld + c], x[row * ld + c]);  // past the heads
  }
  be_->rope(yd, ld, B, T, heads, D, cosd, sind, 3, true);
  d.back(y);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], x[i], 1e-5);
  // The same vector pair at positions (p, p') = (2, 0), (7, 5), (11, 9).
  const Vec q = random_vec(D, 62), k = random_vec(D, 63);
  std::vector<double> dots;
  for (int64_t p : {2, 7, 11}) {
    Vec qp = q, kp = k;
    be_->rope(d.in(qp), D, 1, 1, 1, D, cosd, sind, p, false);
    d.back(qp);
    be_->rope(d.in(kp), D, 1, 1, 1, D, cosd, sind, p - 2, false);
    d.back(kp);
    dots.push_back(dot(qp, kp));
  }
  EXPECT_NEAR(dots[1], dots[0], 1e-5);
  EXPECT_NEAR(dots[2], dots[0], 1e-5);
  EXPECT_GT(std::abs(dots[0] - dot(q, k)), 1e-3);  // and it is not the unrotated product
}

TEST_F(GradcheckTest, CrossEntropyWithSmoothingAndIgnoredRows) {
  const int64_t N = 4, V = 7;
  Vec logits = random_vec(N * V, 10, 2.0f);
  const std::vector<int32_t> targets{3, kIgnoreTarget, 0, 6};
  for (float smoothing : {0.0f, 0.1f}) {
    Vec g(N * V);
    testing::Mirror& d = *dev_;
    auto loss = [&] {
      return be_->cross_entropy(d.in(logits), d.in(targets), N, V, smoothing, 1.0f, nullptr, nullptr);
    };
    be_->cross_entropy(d.in(logits), d.in(targets), N, V, smoothing, 1.0f, d.in(g), nullptr);
    d.back(g);
    check_gradient("cross entropy", logits, g, loss, 1e-2f);
    for (int64_t v = 0; v < V; ++v) EXPECT_EQ(g[1 * V + v], 0.0f);
    // The value against the formula: (1-e) * nll + e * mean(-log p).
    double expect = 0;
    for (int64_t i = 0; i < N; ++i) {
      if (targets[i] < 0) continue;
      double z = 0;
      for (int64_t v = 0; v < V; ++v) z += std::exp(static_cast<double>(logits[i * V + v]));
      double mean_nll = 0;
      for (int64_t v = 0; v < V; ++v) mean_nll += std::log(z) - logits[i * V + v];
      expect += (1 - smoothing) * (std::log(z) - logits[i * V + targets[i]]) + smoothing * mean_nll / V;
    }
    EXPECT_NEAR(loss(), expect, 1e-5 * std::abs(expect));
  }
}

TEST_F(GradcheckTest, EmbeddingPositionsAndDropout) {
  const int64_t V = 6, C = 4, B = 2, T = 3;
  Vec table = random_vec(V * C, 11), pos = random_vec(T * C, 12);
  const std::vector<int32_t> ids{1, 5, 1, 0, 2, 5};  // repeated ids accumulate
  const Vec r = random_vec(B * T * C, 13);
  const DropoutKey key = DropoutKey::make(1, 2, 3, 4);
  Vec y(B * T * C);
  testing::Mirror& d = *dev_;
  auto loss = [&] {
    float* yd = d.in(y);
    be_->embedding_forward(yd, d.in(ids), d.in(table), B * T, C, 1.7f);
    be_->add_positions(yd, d.in(pos), B, T, C);
    be_->dropout_forward(yd, yd, B * T * C, 0.4f, key);
    d.back(y);
    return dot(r, y);
  };
  loss();
  Vec dy = r, dtable(V * C, 0.0f), dpos(T * C, 0.0f);
  float* dyd = d.in(dy);
  be_->dropout_backward(dyd, dyd, B * T * C, 0.4f, key);
  be_->embedding_backward(d.in(dtable), d.in(ids), dyd, B * T, C, 1.7f);
  be_->positions_backward(d.in(dpos), dyd, B, T, C);
  d.back(dtable);
  d.back(dpos);
  check_gradient("embedding", table, dtable, loss);
  check_gradient("positions", pos, dpos, loss);
}

// The vectorisable exp and tanh of model/elementwise.h against libm.
TEST(ElementwiseTest, ExpAndTanhApproximations) {
  double worst_exp = 0, worst_tanh = 0;
  for (int i = -200000; i <= 200000; ++i) {
    const float x = static_cast<float>(i) * 4.3e-4f;  // [-86, 86]
    const double e = std::exp(static_cast<double>(x));
    worst_exp = std::max(worst_exp, std::abs(exp_approx(x) - e) / e);
    const float y = static_cast<float>(i) * 1e-4f;  // [-20, 20]
    worst_tanh = std::max(worst_tanh, std::abs(tanh_approx(y) - std::tanh(static_cast<double>(y))));
  }
  EXPECT_LT(worst_exp, 3e-7);  // a few ulp
  EXPECT_LT(worst_tanh, 3e-7);
  EXPECT_EQ(exp_approx(-1000.0f) < 1e-37f, true);
  EXPECT_EQ(tanh_approx(100.0f), 1.0f);
  EXPECT_EQ(tanh_approx(-100.0f), -1.0f);
}

// exp_approx's clamp in comparisons equals fminf(fmaxf(x, -87.3f), 88.7f)
// bit for bit: every sign, exponent and upper mantissa (the upper 16 bits)
// with lower halves at both ends and in between, quiet NaNs, infinities,
// zeros. Signaling NaNs (which no arithmetic produces) are the exception:
// fmaxf turns one into a quiet NaN, which fminf then drops for 88.7; the
// comparisons give -87.3, as for any other NaN.
TEST(ElementwiseTest, ExpClampEqualsFminfOfFmaxf) {
  auto bits = [](float f) { return std::bit_cast<uint32_t>(f); };
  int64_t checked = 0, signaling = 0;
  for (uint32_t hi = 0; hi < 65536; ++hi)
    for (uint32_t lo : {0u, 1u, 0x5555u, 0x7fffu, 0x8000u, 0xfffeu, 0xffffu}) {
      const uint32_t u = hi << 16 | lo;
      const float x = std::bit_cast<float>(u);
      if ((u & 0x7fc00000u) == 0x7f800000u && (u & 0x003fffffu) != 0) {  // signaling NaN
        ASSERT_EQ(clamp_exp_input(x), -87.3f) << std::hex << u;
        ++signaling;
        continue;
      }
      ASSERT_EQ(bits(clamp_exp_input(x)), bits(fminf(fmaxf(x, -87.3f), 88.7f))) << std::hex << u;
      ++checked;
    }
  EXPECT_EQ(checked + signaling, 65536 * 7);
  EXPECT_EQ(signaling, 2 * 64 * 7 - 2);  // 64 upper halves per sign, less the two infinities' lo = 0
  for (float x : {-87.3f, 88.7f, std::nextafter(-87.3f, -100.0f), std::nextafter(88.7f, 100.0f), -0.0f, 0.0f})
    EXPECT_EQ(bits(clamp_exp_input(x)), bits(fminf(fmaxf(x, -87.3f), 88.7f))) << x;
  EXPECT_EQ(clamp_exp_input(std::numeric_limits<float>::quiet_NaN()), -87.3f);  // as fmaxf does
}

// weighted_sum (the server's sum of W pushes and its statistics in one pass)
// against the terms added one by one, each product rounded (a volatile
// store keeps the compiler from fusing it into the add), and sum_squares of
// that sum: the same bits. Sizes leave a partial block and take the
// threaded path; a non-finite term is reported.
TEST(ElementwiseTest, WeightedSumEqualsTheTermsAddedInOrder) {
  for (int64_t n : {int64_t{5}, int64_t{3 * 4096 + 123}, int64_t{70001}}) {
    for (int k : {1, 2, 3}) {
      std::vector<Vec> x;
      std::vector<const float*> terms;
      std::vector<float> weights;
      for (int j = 0; j < k; ++j) {
        x.push_back(random_vec(static_cast<size_t>(n), 40 + static_cast<uint32_t>(j), 0.3f));
        weights.push_back(0.13f + 0.31f * static_cast<float>(j));
      }
      for (const Vec& v : x) terms.push_back(v.data());
      Vec want(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        volatile float acc = x[0][static_cast<size_t>(i)] * weights[0];
        for (int j = 1; j < k; ++j) {
          volatile float p = x[static_cast<size_t>(j)][static_cast<size_t>(i)] * weights[static_cast<size_t>(j)];
          acc = acc + p;
        }
        want[static_cast<size_t>(i)] = acc;
      }
      Vec got(static_cast<size_t>(n), -1.0f);
      bool bad = true, want_bad = true;
      const double sum = weighted_sum(got.data(), terms.data(), weights.data(), k, n, &bad);
      ASSERT_EQ(got, want) << "n=" << n << " k=" << k;
      EXPECT_EQ(sum, sum_squares(want.data(), n, &want_bad));
      EXPECT_FALSE(bad);
      EXPECT_FALSE(want_bad);
      double brute = 0;
      for (float v : want) brute += static_cast<double>(v) * v;
      EXPECT_NEAR(sum, brute, 1e-12 * brute);
      x.back()[static_cast<size_t>(n / 2)] = std::numeric_limits<float>::infinity();
      weighted_sum(got.data(), terms.data(), weights.data(), k, n, &bad);
      EXPECT_TRUE(bad) << "n=" << n << " k=" << k;
    }
  }
}

// The sum over pieces (a server's owned ranges, each where it lies): each
// piece's sum is the one-piece sum's, bit for bit; pieces of whole blocks
// give the sum of squares of the pieces laid end to end; with one term and
// no output, the terms are only read.
TEST(ElementwiseTest, WeightedSumOverPiecesEqualsTheSumOfEachPiece) {
  const std::vector<int64_t> lengths = {3, 4096, 5000, 1, 2 * 4096, 70001};
  for (int k : {1, 2, 3}) {
    std::vector<float> weights;
    for (int j = 0; j < k; ++j) weights.push_back(0.21f + 0.17f * static_cast<float>(j));
    std::vector<std::vector<Vec>> x(lengths.size());  // [piece][term]
    std::vector<const float*> terms;
    std::vector<Vec> got(lengths.size());
    std::vector<float*> out;
    for (size_t p = 0; p < lengths.size(); ++p) {
      for (int j = 0; j < k; ++j) {
        x[p].push_back(random_vec(static_cast<size_t>(lengths[p]), 60 + static_cast<uint32_t>(10 * p + j), 0.4f));
        terms.push_back(x[p].back().data());
      }
      got[p].assign(static_cast<size_t>(lengths[p]), -1.0f);
      out.push_back(got[p].data());
    }
    bool bad = true;
    const double sum = weighted_sum(out.data(), terms.data(), weights.data(), k, lengths.data(), lengths.size(), &bad);
    EXPECT_FALSE(bad);
    double brute = 0;
    for (size_t p = 0; p < lengths.size(); ++p) {
      Vec want(static_cast<size_t>(lengths[p]));
      bool unused = false;
      weighted_sum(want.data(), terms.data() + p * static_cast<size_t>(k), weights.data(), k, lengths[p], &unused);
      ASSERT_EQ(got[p], want) << "piece " << p << " k=" << k;
      for (float v : want) brute += static_cast<double>(v) * v;
    }
    EXPECT_NEAR(sum, brute, 1e-12 * brute);
    // Pieces 1 and 4 are whole blocks: as one array, the same blocks.
    Vec joined = got[1];
    joined.insert(joined.end(), got[4].begin(), got[4].end());
    const float* two[2] = {got[1].data(), got[4].data()};
    const int64_t two_n[2] = {lengths[1], lengths[4]};
    bool b1 = true, b2 = true;
    EXPECT_EQ(weighted_sum(nullptr, two, nullptr, 1, two_n, 2, &b1),
              sum_squares(joined.data(), static_cast<int64_t>(joined.size()), &b2));
    EXPECT_FALSE(b1);
    // One term, no output: only read; an inf in any piece is reported.
    const std::vector<float> before = got[5];
    got[5][7] = std::numeric_limits<float>::infinity();
    std::vector<const float*> read;
    for (const Vec& v : got) read.push_back(v.data());
    weighted_sum(nullptr, read.data(), nullptr, 1, lengths.data(), lengths.size(), &bad);
    EXPECT_TRUE(bad);
    EXPECT_EQ(got[5][6], before[6]);
  }
}

// The update that writes the weights elsewhere (a server's next snapshot)
// gives the in-place update's bits and leaves its input alone.
TEST(ElementwiseTest, AdamIntoAnotherBufferEqualsAdamInPlace) {
  const size_t n = 70001;  // the threaded path
  const Vec w0 = random_vec(n, 1), m0 = random_vec(n, 2, 0.1f), g = random_vec(n, 4);
  Vec v0 = random_vec(n, 3, 0.1f);
  for (float& v : v0) v = v * v;
  AdamConstants k;
  k.decay_factor = 0.999f;
  k.neg_step_size = -0.01f;
  k.bc2_sqrt = 0.3f;
  k.grad_scale = 0.7f;
  Vec w = w0, m = m0, v = v0;
  adam_update(w.data(), m.data(), v.data(), g.data(), static_cast<int64_t>(n), k);
  Vec out(n), m2 = m0, v2 = v0;
  adam_update(out.data(), w0.data(), m2.data(), v2.data(), g.data(), static_cast<int64_t>(n), k);
  EXPECT_EQ(out, w);
  EXPECT_EQ(m2, m);
  EXPECT_EQ(v2, v);
  EXPECT_NE(out, w0);
}

TEST_F(GradcheckTest, DropoutKeepsExpectedShareAndScales) {
  const int64_t n = 100000;
  Vec x(n, 1.0f), y(n);
  testing::Mirror& d = *dev_;
  be_->dropout_forward(d.in(y), d.in(x), n, 0.3f, DropoutKey::make(1, 0, 0, 1));
  d.back(y);
  int64_t kept = 0;
  for (float v : y) {
    if (v != 0.0f) {
      ++kept;
      EXPECT_FLOAT_EQ(v, 1.0f / 0.7f);
    }
  }
  EXPECT_NEAR(static_cast<double>(kept) / n, 0.7, 0.006);  // 4 standard errors
  // The scalar keep() rule of the shared element-wise code agrees with the
  // kernel at every element (the CPU backend draws its blocks 1,024 elements
  // at a time, n is not a multiple of that).
  for (int64_t i = 0; i < n; ++i)
    ASSERT_EQ(y[i] != 0.0f, dropout_keep(1, DropoutKey::make(1, 0, 0, 1).stream, static_cast<uint64_t>(i), 0.3f)) << i;
  Vec y2(n);
  be_->dropout_forward(d.in(y2), d.in(x), n, 0.3f, DropoutKey::make(1, 1, 0, 1));
  d.back(y2);
  EXPECT_NE(y, y2);  // another step draws another mask
}

// Attention's dropout draws element (b, h, i, j) of the (B, H, Tq, Tk)
// probabilities: masks at offsets that are not multiples of a Philox block
// (Tk = 7), over several query blocks of the CPU kernel (Tq = 70, causal),
// checked against the scalar keep() rule and a product in double.
TEST_F(GradcheckTest, AttentionDropoutDrawsEachProbabilitysOwnElement) {
  for (const bool causal : {false, true}) {
    AttentionDims d;
    d.B = 2;
    d.H = 3;
    d.D = 4;
    d.Tq = causal ? 70 : 5;
    d.Tk = causal ? 70 : 7;
    d.causal = causal;
    d.scale = 0.5f;
    d.ldq = d.ldk = d.ldv = d.ldo = d.H * d.D;
    const Vec q = random_vec(d.B * d.Tq * d.ldq, 21), k = random_vec(d.B * d.Tk * d.ldk, 22),
              v = random_vec(d.B * d.Tk * d.ldv, 23);
    const std::vector<int32_t> key_len{static_cast<int32_t>(d.Tk), static_cast<int32_t>(d.Tk - 3)};
    const DropoutKey key = DropoutKey::make(4, 9, 2, 6);
    const float p = 0.4f;
    Vec probs(d.B * d.H * d.Tq * d.Tk), out(d.B * d.Tq * d.ldo);
    testing::Mirror m(be_.get());  // its own: the vectors of each case have other sizes
    be_->attention_forward(d, m.in(q), m.in(k), m.in(v), m.in(key_len), m.in(probs), m.in(out), p, key);
    m.back(probs);
    m.back(out);
    int64_t dropped = 0, kept = 0;
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < d.H; ++h)
        for (int64_t i = 0; i < d.Tq; ++i)
          for (int64_t c = 0; c < d.D; ++c) {
            double want = 0;
            for (int64_t j = 0; j < d.Tk; ++j) {
              const int64_t at = d.probs_at(b, h) + i * d.Tk + j;
              const float pr = probs[static_cast<size_t>(at)];
              if (!dropout_keep(key.seed, key.stream, static_cast<uint64_t>(at), p)) {
                if (c == 0 && pr > 0.0f) ++dropped;
                continue;
              }
              if (c == 0 && pr > 0.0f) ++kept;
              want += static_cast<double>(pr) / (1.0 - p) * v[static_cast<size_t>(d.v_at(b, h) + j * d.ldv + c)];
            }
            const float got = out[static_cast<size_t>(d.out_at(b, h) + i * d.ldo + c)];
            ASSERT_NEAR(got, want, 1e-5 + 1e-5 * std::abs(want))
                << (causal ? "causal" : "cross") << " b " << b << " h " << h << " i " << i << " c " << c;
          }
    // Both outcomes occur among the visible keys (p = 0.4: more kept than dropped).
    EXPECT_GT(dropped, 0);
    EXPECT_GT(kept, dropped);
  }
}

TEST_F(GradcheckTest, GemmSplitsMatchOneCall) {
  // The threaded split of large products gives what a single-slice product gives.
  const int64_t M = 300, N = 200, K = 64;
  const Vec A = random_vec(M * K, 14), Bm = random_vec(N * K, 15);
  Vec C1(M * N), C2(M * N);
  testing::Mirror& d = *dev_;
  be_->gemm(false, true, M, N, K, 1.0f, d.in(A), K, d.in(Bm), K, 0.0f, d.in(C1), N);
  d.back(C1);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += static_cast<double>(A[i * K + k]) * Bm[j * K + k];
      C2[i * N + j] = static_cast<float>(s);
    }
  for (int64_t i = 0; i < M * N; ++i) ASSERT_NEAR(C1[i], C2[i], 1e-4) << i;
}

// Whole models: the directional derivative along a random direction u,
// (L(w + h u) - L(w - h u)) / 2h, against g . u, with dropout on (the same
// masks in every evaluation, since they are keyed by seed and step).
struct ModelCase {
  ModelKind kind;
  NormPlacement norm;
  bool modern = false;  // testing::modern_blocks
};

class ModelGradTest : public GradcheckTest, public ::testing::WithParamInterface<ModelCase> {};

TEST_P(ModelGradTest, DirectionalDerivative) {
  ModelConfig cfg = testing::tiny_model(GetParam().kind, GetParam().norm);
  if (GetParam().modern) cfg = testing::modern_blocks(cfg);
  Transformer model(cfg, 9, 11, be_.get());
  model.init_weights(5);
  const Batch b = testing::tiny_batch(cfg.kind == ModelKind::kEncoderDecoder);
  ForwardOptions opt;
  opt.train = true;
  opt.label_smoothing = 0.1f;
  opt.grad_scale = 1.0f / static_cast<float>(b.tokens());
  opt.seed = 3;
  opt.step = 1;
  const int64_t n = model.num_params();
  Vec w(n), g(n);
  model.get_weights(w.data());
  model.zero_grads();
  model.forward(b, opt);
  model.backward();
  model.get_grads(g.data());
  for (uint32_t trial = 0; trial < 3; ++trial) {
    // A unit direction: each weight moves by about h / sqrt(n).
    Vec u = random_vec(n, 100 + trial);
    const double norm = std::sqrt(dot(u, u));
    for (auto& x : u) x = static_cast<float>(x / norm);
    const float h = 1e-2f;
    auto loss_at = [&](float s) {
      Vec ws(n);
      for (int64_t i = 0; i < n; ++i) ws[i] = w[i] + s * u[i];
      model.set_weights(ws.data());
      return model.forward(b, opt).loss_sum / static_cast<double>(b.tokens());
    };
    const double fd = (loss_at(h) - loss_at(-h)) / (2 * h);
    const double an = dot(g, u);
    EXPECT_NEAR(fd, an, 2e-5 + 2e-3 * std::abs(an)) << "direction " << trial;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, ModelGradTest,
                         ::testing::Values(ModelCase{ModelKind::kEncoderDecoder, NormPlacement::kPost},
                                           ModelCase{ModelKind::kEncoderDecoder, NormPlacement::kPre},
                                           ModelCase{ModelKind::kEncoderDecoder, NormPlacement::kDeepNorm},
                                           ModelCase{ModelKind::kDecoderOnly, NormPlacement::kPre},
                                           ModelCase{ModelKind::kDecoderOnly, NormPlacement::kDeepNorm},
                                           ModelCase{ModelKind::kEncoderDecoder, NormPlacement::kPost, true},
                                           ModelCase{ModelKind::kDecoderOnly, NormPlacement::kPre, true}));

}  // namespace
}  // namespace pst

namespace pst {
namespace {

// Greedy decoding reuses the encoder output across forwards whose decoder
// length changes (which re-plans the arena); the logits must be those of a
// full forward.
TEST(ReuseEncoderTest, LogitsEqualAFullForward) {
  PST_TEST_BACKEND_OR_SKIP(be);
  ModelConfig cfg;
  cfg.d_model = 8;
  cfg.heads = 2;
  cfg.ffn_dim = 16;
  cfg.encoder_layers = 2;
  cfg.decoder_layers = 2;
  cfg.max_len = 8;
  Transformer model(cfg, 9, 11, be.get());
  model.init_weights(6);
  Batch b;
  b.B = 2;
  b.S = 5;
  b.src = {4, 5, 6, 7, 2, 8, 4, 2, 0, 0};
  b.src_len = {5, 3};
  auto with_prefix = [&](int64_t T) {
    b.T = T;
    b.tgt_in.assign(b.B * T, 5);
    b.tgt_out.assign(b.B * T, kIgnoreTarget);
    b.tgt_len.assign(b.B, static_cast<int32_t>(T));
  };
  with_prefix(1);
  model.forward(b, ForwardOptions{});
  ForwardOptions reuse;
  reuse.reuse_encoder = true;
  for (int64_t T = 2; T <= 4; ++T) {
    with_prefix(T);
    model.forward(b, reuse);
    const Vec reused = model.logits();
    model.forward(b, ForwardOptions{});
    EXPECT_EQ(reused, model.logits()) << "decoder length " << T;
  }
}

}  // namespace
}  // namespace pst
