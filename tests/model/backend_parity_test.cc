// The CUDA backend against the CPU backend (the reference): every kernel on
// random inputs of realistic shapes, and whole training steps of both model
// kinds. Skipped when no CUDA device is present (CI has none).
//
// Tolerances, as max |cuda - cpu| over a tensor divided by max |cpu|:
//   element-wise kernels (activations, embeddings, positions, dropout
//   masks), Adam: 0 (bit for bit) where both sides do the same float
//   operations, else 1e-6 (GELU's erff/expf differ by an ulp between libm
//   and CUDA's math library);
//   reductions in another order (LayerNorm, column sums, softmax,
//   cross-entropy) and fp32 matrix products: 1e-5;
//   whole steps (many products in a row): loss 1e-5 relative, gradients 1e-4;
//   TF32 products: 2e-3 (10-bit mantissa inputs); bf16 products: 2e-2
//   (8-bit mantissa inputs), both with fp32 accumulation.
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "model/backend.h"
#include "model/transformer.h"
#include "ps/adam.h"
#include "ps/reference_step.h"
#include "tests/test_backend.h"
#include "tests/test_util.h"

namespace pst {
namespace {

using Vec = std::vector<float>;

using testing::random_vec;

// max |a - b| <= tol * max |b|, with the first mismatches printed.
::testing::AssertionResult close(const Vec& a, const Vec& b, double tol, const std::string& what) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << what << ": sizes differ";
  double scale = 0;
  for (float x : b) scale = std::max(scale, std::abs(static_cast<double>(x)));
  return testing::all_close(a.data(), b.data(), a.size(), tol * std::max(scale, 1e-30), 0, what);
}

class BackendParityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
    auto be = make_cuda_backend(CudaOptions{});
    ASSERT_TRUE(be.ok()) << be.status().to_string();
    gpu_ = std::move(*be);
    cpu_ = make_cpu_backend(0);
    g_ = std::make_unique<testing::Mirror>(gpu_.get());
    c_ = std::make_unique<testing::Mirror>(cpu_.get());
  }
  void TearDown() override {
    g_.reset();
    c_.reset();
  }
  std::unique_ptr<Backend> gpu_, cpu_;
  std::unique_ptr<testing::Mirror> g_, c_;
};

TEST_F(BackendParityTest, ElementwiseAndEmbeddings) {
  const int64_t n = 100003;
  const Vec x = random_vec(n, 1, 2.0f), y0 = random_vec(n, 2);
  for (Activation a : {Activation::kRelu, Activation::kGelu, Activation::kGeluTanh}) {
    Vec yc(n), yg(n), dc(n), dg(n);
    cpu_->activation_forward(a, c_->in(yc), c_->in(x), n);
    gpu_->activation_forward(a, g_->in(yg), g_->in(x), n);
    cpu_->activation_backward(a, c_->in(dc), c_->in(y0), c_->in(x), n);
    gpu_->activation_backward(a, g_->in(dg), g_->in(y0), g_->in(x), n);
    c_->back(yc), g_->back(yg), c_->back(dc), g_->back(dg);
    EXPECT_TRUE(close(yg, yc, 1e-6, std::string("forward ") + to_string(a)));
    EXPECT_TRUE(close(dg, dc, 1e-6, std::string("backward ") + to_string(a)));
  }
  // The same dropout mask, element for element, from the shared Philox stream.
  {
    Vec yc(n), yg(n);
    const DropoutKey key = DropoutKey::make(7, 3, 1, 12);
    cpu_->dropout_forward(c_->in(yc), c_->in(x), n, 0.25f, key);
    gpu_->dropout_forward(g_->in(yg), g_->in(x), n, 0.25f, key);
    c_->back(yc), g_->back(yg);
    EXPECT_EQ(yg, yc);
  }
  // fill, add, axpy, scale, add_bias, copy.
  {
    Vec a(n), b(n);
    for (auto [be, m, out] : {std::tuple{cpu_.get(), c_.get(), &a}, std::tuple{gpu_.get(), g_.get(), &b}}) {
      float* p = m->in(*out);
      be->fill(p, n, 0.5f);
      be->add(p, m->in(x), n);
      be->axpy(p, -1.5f, m->in(y0), n);
      be->scale(p, 0.75f, n);
      be->add_bias(p, m->in(y0), n / 7, 7);
      m->back(*out);
    }
    EXPECT_TRUE(close(b, a, 1e-6, "fill, add, axpy, scale, add_bias"));
  }
  // Embeddings with repeated ids, positions, and their gradients.
  const int64_t V = 50, C = 96, B = 6, T = 40, rows = B * T;
  std::vector<int32_t> ids(rows);
  std::mt19937 rng(3);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % 7 == 0 ? 0 : rng() % V);  // many repeats of 0
  const Vec table = random_vec(V * C, 4), pos = random_vec(T * C, 5), dy = random_vec(rows * C, 6);
  Vec ec(rows * C), eg(rows * C), dtc = random_vec(V * C, 7), dtg = dtc, dpc = random_vec(T * C, 8), dpg = dpc;
  for (auto [be, m, e, dt, dp] :
       {std::tuple{cpu_.get(), c_.get(), &ec, &dtc, &dpc}, std::tuple{gpu_.get(), g_.get(), &eg, &dtg, &dpg}}) {
    float* ep = m->in(*e);
    be->embedding_forward(ep, m->in(ids), m->in(table), rows, C, 1.5f);
    be->add_positions(ep, m->in(pos), B, T, C);
    be->embedding_backward(m->in(*dt), m->in(ids), m->in(dy), rows, C, 1.5f);
    be->positions_backward(m->in(*dp), m->in(dy), B, T, C);
    m->back(*e), m->back(*dt), m->back(*dp);
  }
  EXPECT_EQ(eg, ec);
  EXPECT_TRUE(close(dtg, dtc, 1e-6, "embedding_backward"));
  EXPECT_TRUE(close(dpg, dpc, 1e-5, "positions_backward"));
}

TEST_F(BackendParityTest, LayerNormAndBiasGrad) {
  const int64_t rows = 1000, C = 200;
  const Vec x = random_vec(rows * C, 11, 3.0f), w = random_vec(C, 12), b = random_vec(C, 13);
  const Vec dy = random_vec(rows * C, 14);
  Vec yc(rows * C), yg(yc), mc(rows), mg(rows), rc(rows), rg(rows);
  Vec dxc(rows * C), dxg(dxc), dwc = random_vec(C, 15), dwg = dwc, dbc = random_vec(C, 16), dbg = dbc;
  Vec bgc = random_vec(C, 17), bgg = bgc;
  for (auto [be, m, y, mean, rstd, dx, dw, db, bg] :
       {std::tuple{cpu_.get(), c_.get(), &yc, &mc, &rc, &dxc, &dwc, &dbc, &bgc},
        std::tuple{gpu_.get(), g_.get(), &yg, &mg, &rg, &dxg, &dwg, &dbg, &bgg}}) {
    be->layernorm_forward(m->in(*y), m->in(*mean), m->in(*rstd), m->in(x), m->in(w), m->in(b), rows, C, 1e-5f);
    m->back(*mean), m->back(*rstd);
    be->layernorm_backward(m->in(*dx), m->in(*dw), m->in(*db), m->in(dy), m->in(x), m->in(w), m->in(*mean),
                           m->in(*rstd), rows, C);
    be->bias_grad(m->in(*bg), m->in(dy), rows, C);
    m->back(*y), m->back(*dx), m->back(*dw), m->back(*db), m->back(*bg);
  }
  EXPECT_TRUE(close(yg, yc, 1e-5, "layernorm y"));
  EXPECT_TRUE(close(mg, mc, 1e-5, "layernorm mean"));
  EXPECT_TRUE(close(rg, rc, 1e-5, "layernorm rstd"));
  EXPECT_TRUE(close(dxg, dxc, 1e-5, "layernorm dx"));
  EXPECT_TRUE(close(dwg, dwc, 1e-5, "layernorm dw"));
  EXPECT_TRUE(close(dbg, dbc, 1e-5, "layernorm db"));
  EXPECT_TRUE(close(bgg, bgc, 1e-5, "bias_grad"));
}

TEST_F(BackendParityTest, GemmInEachPrecision) {
  const int64_t M = 300, N = 500, K = 384;
  const Vec A = random_vec(M * K, 21), Bt = random_vec(N * K, 22), C0 = random_vec(M * N, 23);
  // C = 0.7 A B^T + 0.3 C0, and C = A^T-stored product.
  Vec ref = C0;
  cpu_->gemm(false, true, M, N, K, 0.7f, c_->in(A), K, c_->in(Bt), K, 0.3f, c_->in(ref), N);
  c_->back(ref);
  Vec ref_t(M * N);
  cpu_->gemm(true, false, M, N, K, 1.0f, c_->in(A), M, c_->in(Bt), N, 0.0f, c_->in(ref_t), N);
  c_->back(ref_t);
  for (auto [precision, tol] : {std::pair{MatmulPrecision::kFp32, 1e-5}, std::pair{MatmulPrecision::kTf32, 2e-3},
                                std::pair{MatmulPrecision::kBf16, 2e-2}}) {
    auto be = make_cuda_backend(CudaOptions{0, precision});
    ASSERT_TRUE(be.ok());
    testing::Mirror m(be->get());
    Vec got = C0, got_t(M * N);
    (*be)->gemm(false, true, M, N, K, 0.7f, m.in(A), K, m.in(Bt), K, 0.3f, m.in(got), N);
    (*be)->gemm(true, false, M, N, K, 1.0f, m.in(A), M, m.in(Bt), N, 0.0f, m.in(got_t), N);
    m.back(got), m.back(got_t);
    EXPECT_TRUE(close(got, ref, tol, std::string("gemm NT ") + to_string(precision)));
    EXPECT_TRUE(close(got_t, ref_t, tol, std::string("gemm TN ") + to_string(precision)));
    if (precision != MatmulPrecision::kFp32) {
      // The fast modes really are in use: they do not reproduce fp32 exactly.
      EXPECT_NE(got, ref) << to_string(precision);
    }
  }
}

struct AttnShape {
  bool causal, cross;
  float p;
  int64_t kv_heads = 0;  // grouped-query attention when below H (4)
};

class AttentionParityTest : public BackendParityTest, public ::testing::WithParamInterface<AttnShape> {};

TEST_P(AttentionParityTest, ForwardAndBackward) {
  const AttnShape s = GetParam();
  AttentionDims d;
  d.B = 3;
  d.H = 4;
  d.D = 16;
  d.Tq = 70;
  d.Tk = s.cross ? 45 : 70;
  d.causal = s.causal;
  d.scale = 0.25f;
  d.kv_heads = s.kv_heads;
  const int64_t C = d.H * d.D, KV = (s.kv_heads > 0 ? s.kv_heads : d.H) * d.D;
  d.ldq = s.cross ? C : C + 2 * KV;
  d.ldk = d.ldv = s.cross ? 2 * KV : C + 2 * KV;
  d.ldo = C;
  const Vec q = random_vec(d.B * d.Tq * d.ldq, 31), kv = random_vec(d.B * d.Tk * d.ldk, 32);
  const Vec dout = random_vec(d.B * d.Tq * C, 33);
  const std::vector<int32_t> key_len{static_cast<int32_t>(d.Tk), static_cast<int32_t>(d.Tk - 9), 0};
  const DropoutKey key = DropoutKey::make(5, 2, 0, 4);
  const int64_t koff = s.cross ? 0 : C, voff = s.cross ? KV : C + KV;
  Vec pc(d.B * d.H * d.Tq * d.Tk), pg(pc), oc(d.B * d.Tq * C), og(oc);
  Vec dqc(q.size()), dqg(dqc), dkvc(s.cross ? kv.size() : q.size()), dkvg(dkvc);
  for (auto [be, m, probs, out, dq, dkv] : {std::tuple{cpu_.get(), c_.get(), &pc, &oc, &dqc, &dkvc},
                                            std::tuple{gpu_.get(), g_.get(), &pg, &og, &dqg, &dkvg}}) {
    const float* qd = m->in(q);
    const float* kd = s.cross ? m->in(kv) : qd;
    be->attention_forward(d, qd, kd + koff, kd + voff, m->in(key_len), m->in(*probs), m->in(*out), s.p, key);
    float* dkvd = m->in(*dkv);
    be->attention_backward(d, qd, kd + koff, kd + voff, m->in(key_len), m->in(*probs), m->in(dout),
                           s.cross ? m->in(*dq) : dkvd, dkvd + koff, dkvd + voff, s.p, key);
    m->back(*probs), m->back(*out), m->back(*dq), m->back(*dkv);
  }
  EXPECT_TRUE(close(pg, pc, 1e-5, "probs"));
  EXPECT_TRUE(close(og, oc, 1e-5, "out"));
  if (s.cross) {
    EXPECT_TRUE(close(dqg, dqc, 1e-5, "dq"));
  }
  EXPECT_TRUE(close(dkvg, dkvc, 1e-5, s.cross ? "dk, dv" : "dq, dk, dv"));
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionParityTest,
                         ::testing::Values(AttnShape{true, false, 0.0f}, AttnShape{true, false, 0.1f},
                                           AttnShape{false, false, 0.0f}, AttnShape{false, true, 0.2f},
                                           AttnShape{true, false, 0.1f, 2}, AttnShape{false, true, 0.0f, 1}));

// The kernels of current LMs' blocks: RMSNorm, rotary positions, SwiGLU.
TEST_F(BackendParityTest, RmsNormRopeAndSwiGLU) {
  const int64_t rows = 300, C = 96;
  const Vec x = random_vec(rows * C, 61, 2.0f), w = random_vec(C, 62), dy = random_vec(rows * C, 63);
  Vec yc(rows * C), yg(yc), rc(rows), rg(rc), dxc(rows * C), dxg(dxc), dwc(C, 0.5f), dwg(dwc);
  for (auto [be, m, y, r, dx, dw] : {std::tuple{cpu_.get(), c_.get(), &yc, &rc, &dxc, &dwc},
                                     std::tuple{gpu_.get(), g_.get(), &yg, &rg, &dxg, &dwg}}) {
    be->rmsnorm_forward(m->in(*y), m->in(*r), m->in(x), m->in(w), rows, C, 1e-5f);
    be->rmsnorm_backward(m->in(*dx), m->in(*dw), m->in(dy), m->in(x), m->in(w), m->in(*r), rows, C);
    m->back(*y), m->back(*r), m->back(*dx), m->back(*dw);
  }
  EXPECT_TRUE(close(yg, yc, 1e-5, "rmsnorm y"));
  EXPECT_TRUE(close(dxg, dxc, 1e-5, "rmsnorm dx"));
  EXPECT_TRUE(close(dwg, dwc, 1e-5, "rmsnorm dw"));

  // Rotation of 3 heads of 16 at the start of rows of 96 floats.
  const RopeTables tab = rope_tables(64, 16, 10000.0);
  Vec qc = random_vec(rows * C, 64), qg = qc;
  for (auto [be, m, q] : {std::tuple{cpu_.get(), c_.get(), &qc}, std::tuple{gpu_.get(), g_.get(), &qg}}) {
    float* qd = m->in(*q);
    be->rope(qd, C, 5, 60, 3, 16, m->in(tab.cos), m->in(tab.sin), 4, false);
    m->back(*q);
  }
  EXPECT_TRUE(close(qg, qc, 1e-6, "rope"));

  const int64_t F = 48;
  const Vec h = random_vec(rows * 2 * F, 65, 3.0f), dh = random_vec(rows * F, 66);
  Vec sc(rows * F), sg(sc), dsc(rows * 2 * F), dsg(dsc);
  for (auto [be, m, y, dx] :
       {std::tuple{cpu_.get(), c_.get(), &sc, &dsc}, std::tuple{gpu_.get(), g_.get(), &sg, &dsg}}) {
    be->swiglu_forward(m->in(*y), m->in(h), rows, F);
    be->swiglu_backward(m->in(*dx), m->in(dh), m->in(h), rows, F);
    m->back(*y), m->back(*dx);
  }
  EXPECT_TRUE(close(sg, sc, 1e-6, "swiglu"));
  EXPECT_TRUE(close(dsg, dsc, 1e-6, "swiglu backward"));
}

TEST_F(BackendParityTest, CrossEntropyAndArgmax) {
  const int64_t N = 257, V = 1000;
  Vec logits = random_vec(N * V, 41, 3.0f);
  std::vector<int32_t> targets(N);
  for (int64_t i = 0; i < N; ++i) targets[i] = i % 11 == 0 ? kIgnoreTarget : static_cast<int32_t>((i * 37) % V);
  // A row whose maximum appears twice: argmax is the first.
  logits[5 * V + 10] = logits[5 * V + 900] = 50.0f;
  for (float smoothing : {0.0f, 0.1f}) {
    Vec gc(N * V), gg(gc);
    int64_t kc = -1, kg = -2;
    const double lc = cpu_->cross_entropy(c_->in(logits), c_->in(targets), N, V, smoothing, 0.01f, c_->in(gc), &kc);
    const double lg = gpu_->cross_entropy(g_->in(logits), g_->in(targets), N, V, smoothing, 0.01f, g_->in(gg), &kg);
    c_->back(gc), g_->back(gg);
    EXPECT_NEAR(lg, lc, 1e-9 * std::abs(lc));
    EXPECT_EQ(kg, kc);
    EXPECT_TRUE(close(gg, gc, 1e-5, "dlogits"));
  }
  std::vector<int32_t> ac(N), ag(N);
  cpu_->argmax(c_->in(logits), N, V, c_->in(ac));
  gpu_->argmax(g_->in(logits), N, V, g_->in(ag));
  c_->back(ac), g_->back(ag);
  EXPECT_EQ(ag, ac);
  EXPECT_EQ(ag[5], 10);
}

TEST_F(BackendParityTest, AdamMatchesTheHostBitForBit) {
  const int64_t n = 50001;
  const Vec g = random_vec(n, 51, 0.1f);
  Vec wc = random_vec(n, 52), mc(n, 0.0f), vc(n, 0.0f);
  Vec wg = wc, mg = mc, vg = vc;
  for (int64_t step = 1; step <= 3; ++step) {
    for (bool decoupled : {true, false}) {
      AdamConstants k = adam_constants(1e-3, 0.9, 0.95, 1e-8, 0.1, decoupled, step);
      k.grad_scale = step == 2 ? 0.37f : 1.0f;  // a clipped step
      adam_update(wc.data(), mc.data(), vc.data(), g.data(), n, k);
      gpu_->adam_update(g_->in(wg), g_->in(mg), g_->in(vg), g_->in(g), n, k);
      g_->back(wg), g_->back(mg), g_->back(vg);
    }
  }
  EXPECT_EQ(wg, wc);
  EXPECT_EQ(mg, mc);
  EXPECT_EQ(vg, vc);
}

// Whole training steps: forward, backward and three optimizer steps (the
// in-process server) on each backend from the same weights and batch.
struct StepCase {
  ModelKind kind;
  NormPlacement norm;
  bool modern = false;  // RMSNorm, rotary positions, SwiGLU, grouped-query attention
};

class TrainingStepParityTest : public BackendParityTest, public ::testing::WithParamInterface<StepCase> {};

TEST_P(TrainingStepParityTest, MatchesTheCpuBackend) {
  JobConfig job;
  ModelConfig& cfg = job.model;
  cfg.kind = GetParam().kind;
  cfg.norm = GetParam().norm;
  cfg.init = cfg.norm == NormPlacement::kDeepNorm ? InitScheme::kDeepNet : InitScheme::kXavierUniform;
  cfg.d_model = 64;
  cfg.heads = 4;
  cfg.ffn_dim = 128;
  cfg.encoder_layers = 2;
  cfg.decoder_layers = 2;
  cfg.max_len = 40;
  cfg.activation = Activation::kGelu;
  cfg.dropout = cfg.attention_dropout = cfg.embedding_dropout = 0.1;
  if (GetParam().modern) {
    cfg.norm_type = NormType::kRmsNorm;
    cfg.positions = Positions::kRope;
    cfg.activation = Activation::kSwiGLU;
    cfg.kv_heads = 2;
  }
  const bool enc_dec = cfg.kind == ModelKind::kEncoderDecoder;
  job.data.task = enc_dec ? Task::kG2P : Task::kLM;
  job.optim.clip_norm = 0.5;
  job.train.label_smoothing = 0.1;
  Batch b;
  b.B = 4;
  b.T = 30;
  b.S = enc_dec ? 25 : 0;
  std::mt19937 rng(9);
  const int64_t V = 40;
  auto fill = [&](std::vector<int32_t>& ids, std::vector<int32_t>& lens, int64_t L, bool targets) {
    ids.assign(b.B * L, 0);
    lens.resize(b.B);
    for (int64_t r = 0; r < b.B; ++r) {
      lens[r] = static_cast<int32_t>(L - 3 * r);
      for (int64_t t = 0; t < L; ++t)
        ids[r * L + t] = t < lens[r] ? static_cast<int32_t>(4 + rng() % (V - 4)) : (targets ? kIgnoreTarget : 0);
    }
  };
  std::vector<int32_t> unused;
  if (enc_dec) fill(b.src, b.src_len, b.S, false);
  fill(b.tgt_in, b.tgt_len, b.T, false);
  fill(b.tgt_out, unused, b.T, true);

  ReferenceStep rc, rg;
  Vec init;
  for (auto [be, r] : {std::pair{cpu_.get(), &rc}, std::pair{gpu_.get(), &rg}}) {
    Transformer model(cfg, enc_dec ? V : 0, V, be);
    model.init_weights(3);
    init.resize(static_cast<size_t>(model.num_params()));
    model.get_weights(init.data());
    *r = run_reference_step(job, model, b, 3);
  }
  EXPECT_NEAR(rg.loss, rc.loss, 1e-5 * rc.loss);
  EXPECT_TRUE(close(rg.logits, rc.logits, 1e-5, "logits"));
  Transformer shapes(cfg, enc_dec ? V : 0, V, cpu_.get());
  for (const ParamSpec& p : shapes.table().params()) {
    const Vec gg(rg.grads.begin() + p.offset, rg.grads.begin() + p.offset + p.numel);
    const Vec gc(rc.grads.begin() + p.offset, rc.grads.begin() + p.offset + p.numel);
    EXPECT_TRUE(close(gg, gc, 1e-4, "grad/" + p.name));
  }
  for (size_t k = 0; k < rc.grad_norm.size(); ++k)
    EXPECT_NEAR(rg.grad_norm[k], rc.grad_norm[k], 1e-5 * rc.grad_norm[k]);
  double lr_sum = 0;
  for (double lr : rc.lr) lr_sum += lr;
  EXPECT_TRUE(testing::adam_weights_close(shapes.table(), rg.after.data(), rc.after.data(), rc.grads.data(),
                                          init.data(), lr_sum));
}

INSTANTIATE_TEST_SUITE_P(Models, TrainingStepParityTest,
                         ::testing::Values(StepCase{ModelKind::kEncoderDecoder, NormPlacement::kPost},
                                           StepCase{ModelKind::kEncoderDecoder, NormPlacement::kDeepNorm},
                                           StepCase{ModelKind::kDecoderOnly, NormPlacement::kPre},
                                           StepCase{ModelKind::kEncoderDecoder, NormPlacement::kPre, true},
                                           StepCase{ModelKind::kDecoderOnly, NormPlacement::kPre, true}));

// The CUDA backend is deterministic: the same step twice gives the same bits.
TEST_F(BackendParityTest, CudaStepIsDeterministic) {
  ModelConfig cfg;
  cfg.kind = ModelKind::kDecoderOnly;
  cfg.d_model = 64;
  cfg.heads = 4;
  cfg.ffn_dim = 128;
  cfg.decoder_layers = 2;
  cfg.max_len = 64;
  cfg.dropout = cfg.attention_dropout = 0.1;
  Batch b;
  b.B = 8;
  b.T = 64;
  std::mt19937 rng(4);
  b.tgt_in.resize(b.B * b.T);
  b.tgt_out.resize(b.B * b.T);
  for (size_t i = 0; i < b.tgt_in.size(); ++i) {
    b.tgt_in[i] = static_cast<int32_t>(rng() % 20);  // few distinct ids: long runs in embedding_backward
    b.tgt_out[i] = static_cast<int32_t>(rng() % 20);
  }
  b.tgt_len.assign(b.B, static_cast<int32_t>(b.T));
  Transformer model(cfg, 0, 20, gpu_.get());
  model.init_weights(1);
  ForwardOptions fo;
  fo.train = true;
  fo.grad_scale = 1.0f / static_cast<float>(b.tokens());
  Vec g1(static_cast<size_t>(model.num_params())), g2(g1.size());
  for (Vec* g : {&g1, &g2}) {
    model.zero_grads();
    model.forward(b, fo);
    model.backward();
    model.get_grads(g->data());
  }
  EXPECT_EQ(g1, g2);
}

}  // namespace
}  // namespace pst
