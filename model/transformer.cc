#include "model/transformer.h"

#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "core/status.h"

namespace pst {

std::vector<float> sinusoidal_positions(int64_t max_len, int64_t C) {
  std::vector<float> pe(static_cast<size_t>(max_len * C));
  for (int64_t p = 0; p < max_len; ++p) {
    for (int64_t i = 0; i < C; i += 2) {
      const double freq = std::exp(static_cast<double>(i) * -(std::log(10000.0) / static_cast<double>(C)));
      pe[static_cast<size_t>(p * C + i)] = static_cast<float>(std::sin(static_cast<double>(p) * freq));
      if (i + 1 < C)
        pe[static_cast<size_t>(p * C + i + 1)] = static_cast<float>(std::cos(static_cast<double>(p) * freq));
    }
  }
  return pe;
}

RopeTables rope_tables(int64_t max_len, int64_t D, double theta) {
  RopeTables t;
  const int64_t half = D / 2;
  for (int64_t p = 0; p < max_len; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle =
          static_cast<double>(p) * std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(D));
      t.cos.push_back(static_cast<float>(std::cos(angle)));
      t.sin.push_back(static_cast<float>(std::sin(angle)));
    }
  }
  return t;
}

namespace {

// Bump allocator over one device buffer. In counting mode (no buffer) it only
// measures, so the same assignment code sizes the arena and then fills it.
class Arena {
 public:
  explicit Arena(Backend* be) : be_(be) {}
  ~Arena() {
    if (base_) be_->deallocate(base_);
  }
  void begin(bool counting) {
    counting_ = counting;
    used_ = 0;
  }
  template <typename T>
  T* take(int64_t n) {
    const size_t bytes = (static_cast<size_t>(n) * sizeof(T) + 63) / 64 * 64;
    T* p = counting_ ? nullptr : reinterpret_cast<T*>(base_ + used_);
    used_ += bytes;
    PST_CHECK(counting_ || used_ <= capacity_);
    return p;
  }
  size_t used() const { return used_; }
  void reserve(size_t bytes) {
    if (bytes <= capacity_) return;
    if (base_) be_->deallocate(base_);
    base_ = static_cast<char*>(be_->allocate(bytes));
    capacity_ = bytes;
  }

 private:
  Backend* be_;
  char* base_ = nullptr;
  size_t capacity_ = 0;
  size_t used_ = 0;
  bool counting_ = true;
};

// A device array that only grows (Backend::allocate zeroes what is new).
template <typename T>
struct Grown {
  T* p = nullptr;
  int64_t n = 0;
};

// One residual block: self-attention, cross-attention or feed-forward, with
// its LayerNorm placed before (pre-LN) or after the residual sum (post-LN,
// DeepNorm).
struct Sublayer {
  using Kind = SublayerLayout::Kind;
  static constexpr Kind kSelfAttn = SublayerLayout::kSelfAttn;
  static constexpr Kind kCrossAttn = SublayerLayout::kCrossAttn;
  static constexpr Kind kFfn = SublayerLayout::kFfn;
  Kind kind = kFfn;
  bool causal = false;
  float alpha = 1.0f;                                    // residual scale: x * alpha + f(x) (DeepNorm), 1 otherwise
  int64_t in_w = -1, in_b = -1, out_w = -1, out_b = -1;  // attn in/out proj; ffn linear1/linear2
  int64_t norm_w = -1, norm_b = -1;
  uint64_t site_resid = 0, site_inner = 0;  // dropout sites

  // Activations of the last forward.
  const float* x = nullptr;  // (rows, C) input
  float* mean = nullptr;     // (rows)
  float* rstd = nullptr;     // (rows)
  float* ln = nullptr;       // (rows, C) pre: LN(x), the input of f; post: LN(sum), the output
  float* sum = nullptr;      // (rows, C) post: alpha*x + drop(f(x))
  float* out = nullptr;      // (rows, C) the block's output
  float* a = nullptr;        // attn: qkv (rows, C + 2KV) or q (rows, C); ffn: h1 (rows, F or 2F)
  float* kv = nullptr;       // cross: (B*S, 2KV)
  float* probs = nullptr;    // attn: (B, H, Tq, Tk)
  float* ctx = nullptr;      // attn: (rows, C) heads' output; ffn: act(h1) after dropout (rows, F)
  // Incremental decoding (decoder attention only): the kept keys and values,
  // self-attention (capacity, room, 2KV), position by position (a step
  // appends one contiguous block), cross-attention (rows, S, 2KV); and a
  // buffer that reorder_decoding gathers into.
  Grown<float> kept, spare;
};

struct Stack {
  std::vector<Sublayer> subs;
  int64_t final_w = -1, final_b = -1;  // pre-LN final norm
  float* final_mean = nullptr;
  float* final_rstd = nullptr;
  float* final_out = nullptr;
  const float* top = nullptr;  // output of the stack (after the final norm if any)
  // embedding
  int64_t embed = -1, pos = -1;  // pos: learned table, -1 for sinusoidal
  uint64_t site_embed = 0;
  float* x0 = nullptr;  // (rows, C) embeddings after dropout
  int32_t* ids = nullptr;
  int32_t* key_len = nullptr;
  int64_t L = 0;  // sequence length of this batch
  // The stack's block of the flat parameter buffer: [begin, end), with
  // layer l's parameters from layer_begin[l] (each layer's block ends where
  // the next begins; the final norm sits before end).
  int64_t begin = 0, end = 0;
  std::vector<int64_t> layer_begin;
  size_t subs_per_layer = 1;
};

}  // namespace

struct Transformer::Impl {
  Transformer* m;
  const ModelConfig& cfg;
  Backend* be;
  Arena arena;
  bool enc_dec;
  int64_t C, H, F;
  int64_t KV;   // floats of a key (and of a value) per position: kv_heads * C / H
  int64_t QKV;  // C + 2KV, a self-attention's projection
  int64_t F1;   // linear1's outputs: F, or 2F for SwiGLU
  bool gated;   // SwiGLU
  bool rms;     // RMSNorm in place of LayerNorm
  float eps;
  bool pre;
  Stack enc, dec;
  int64_t out_w = -1, out_b = -1;
  int64_t out_begin = 0;      // the output layer's block: [out_begin, num_params)
  float* sinusoid = nullptr;  // (max_len, C) device, sinusoidal positions
  float* rope_cos = nullptr;  // (max_len, D/2) device, rotary angles' cosines
  float* rope_sin = nullptr;  // and sines
  // Encoder output kept across forwards for reuse_encoder: (B, S, C).
  Grown<float> memory;
  int64_t memory_B = -1, memory_S = -1;
  float emb_scale = 1.0f;

  // Incremental decoding (begin_decoding ... decode_step); the kept keys
  // and values are in the decoder's sublayers.
  struct Decoding {
    bool active = false;
    bool step = false;  // the forward under way computes one position from the kept ones
    int64_t rows = 0, S = 0, capacity = 0, positions = 0;
    int64_t room = 0;              // rows of a position's block in the self-attention caches
    std::vector<int32_t> src_len;  // (rows) host
    Grown<int32_t> src_len_dev;    // (rows) the cross-attentions' key lengths
    Grown<int32_t> from_dev;       // reorder_decoding's row map
    Grown<float> probs;            // (rows, H, capacity) a step's self-attention probabilities
  } decoding;

  // Per-forward state.
  int64_t B = 0, S = 0, T = 0;
  bool planned_inference = false;
  ForwardOptions opt;
  float* logits = nullptr;   // (B*T, V)
  float* dlogits = nullptr;  // (B*T, V)
  int32_t* targets = nullptr;
  bool have_grad = false;
  // Scratch for the backward pass and for f's output in forward.
  float *u = nullptr, *dA = nullptr, *dB = nullptr, *du = nullptr, *dln = nullptr, *dctx = nullptr, *dqkv = nullptr,
        *dh = nullptr, *dh1 = nullptr, *dmem = nullptr, *dkv = nullptr;

  Impl(Transformer* model, const ModelConfig& c, Backend* backend) : m(model), cfg(c), be(backend), arena(backend) {
    enc_dec = cfg.kind == ModelKind::kEncoderDecoder;
    C = cfg.d_model;
    H = cfg.heads;
    F = cfg.ffn_dim;
    KV = kv_dim(cfg);
    QKV = C + 2 * KV;
    F1 = ffn_in_rows(cfg);
    gated = cfg.activation == Activation::kSwiGLU;
    rms = cfg.norm_type == NormType::kRmsNorm;
    eps = static_cast<float>(cfg.layernorm_eps);
    pre = cfg.norm == NormPlacement::kPre;
    emb_scale = cfg.scale_embeddings ? std::sqrt(static_cast<float>(C)) : 1.0f;
    const ParamTable& t = m->table_;
    auto off = [&](const std::string& n) { return t.index_of(n) >= 0 ? t.offset_of(n) : int64_t{-1}; };
    uint64_t site = 1;
    const std::vector<StackLayout> layout = model_layout(cfg);
    for (const StackLayout& sl : layout) {
      Stack& st = &sl == &layout.back() ? dec : enc;
      st.embed = off(sl.embed);
      st.pos = off(sl.pos);
      st.site_embed = site++;
      for (int64_t l = 0; l < sl.layers; ++l) {
        for (const SublayerLayout& sub : sl.sublayers(l)) {
          Sublayer s;
          s.kind = sub.kind;
          s.causal = sub.kind == SublayerLayout::kSelfAttn && sl.causal;
          s.alpha = static_cast<float>(sl.alpha);
          const bool ffn = sub.kind == SublayerLayout::kFfn;
          s.in_w = off(sub.prefix + (ffn ? ".linear1.weight" : ".in_proj_weight"));
          s.in_b = off(sub.prefix + (ffn ? ".linear1.bias" : ".in_proj_bias"));
          s.out_w = off(sub.prefix + (ffn ? ".linear2.weight" : ".out_proj.weight"));
          s.out_b = off(sub.prefix + (ffn ? ".linear2.bias" : ".out_proj.bias"));
          s.norm_w = off(sub.norm + ".weight");
          s.norm_b = off(sub.norm + ".bias");
          s.site_resid = site++;
          s.site_inner = site++;
          st.subs.push_back(s);
        }
        st.layer_begin.push_back(st.subs[st.subs.size() - sl.sublayers(l).size()].in_w);
        st.subs_per_layer = sl.sublayers(l).size();
      }
      if (!sl.final_norm.empty()) {
        st.final_w = off(sl.final_norm + ".weight");
        st.final_b = off(sl.final_norm + ".bias");
      }
    }
    out_w = cfg.tie_embeddings ? dec.embed : off("output.weight");
    out_b = off("output.bias");
    // Blocks in table order: [encoder] decoder, output.
    out_begin = t.total_numel();
    if (!cfg.tie_embeddings) out_begin = std::min(out_begin, out_w);
    if (out_b >= 0) out_begin = std::min(out_begin, out_b);
    dec.begin = dec.embed;
    dec.end = out_begin;
    if (enc_dec) {
      enc.begin = enc.embed;
      enc.end = dec.begin;
    }
    if (cfg.positions == Positions::kSinusoidal) {
      const std::vector<float> pe = sinusoidal_positions(cfg.max_len, C);
      sinusoid = static_cast<float*>(be->allocate(pe.size() * sizeof(float)));
      be->upload(sinusoid, pe.data(), pe.size() * sizeof(float));
    }
    if (cfg.positions == Positions::kRope) {
      const RopeTables t = rope_tables(cfg.max_len, C / H, cfg.rope_theta);
      rope_cos = static_cast<float*>(be->allocate(t.cos.size() * sizeof(float)));
      rope_sin = static_cast<float*>(be->allocate(t.sin.size() * sizeof(float)));
      be->upload(rope_cos, t.cos.data(), t.cos.size() * sizeof(float));
      be->upload(rope_sin, t.sin.data(), t.sin.size() * sizeof(float));
    }
  }

  ~Impl() {
    if (sinusoid) be->deallocate(sinusoid);
    if (rope_cos) be->deallocate(rope_cos);
    if (rope_sin) be->deallocate(rope_sin);
    release_memory();
    release_decoding();
  }

  template <typename T>
  void release(Grown<T>& g) {
    if (g.p) be->deallocate(g.p);
    g = Grown<T>{};
  }
  // At least n elements; the contents are lost when it grows.
  template <typename T>
  T* reserve(Grown<T>& g, int64_t n) {
    if (n > g.n) {
      release(g);
      g.p = static_cast<T*>(be->allocate(static_cast<size_t>(n) * sizeof(T)));
      g.n = n;
    }
    return g.p;
  }

  void release_memory() {
    release(memory);
    memory_B = memory_S = -1;
  }

  const float* W(int64_t off) const { return off < 0 ? nullptr : m->weights_ + off; }
  float* G(int64_t off) const { return off < 0 ? nullptr : m->grads_ + off; }

  // ---- buffer assignment -------------------------------------------------

  // A forward for training keeps every sublayer's activations for backward.
  // One for inference keeps only what is read after it: a decoder
  // self-attention's projection and a cross-attention's keys and values
  // (begin_decoding copies them). The rest of a sublayer's activations live
  // in one of two sets of buffers that the sublayers take in turn, since a
  // sublayer reads only the output of the one before it.
  void assign_stack(Stack& st, int64_t L, int64_t mem_len, bool inference) {
    const int64_t rows = B * L;
    const bool decoder = &st == &dec;
    st.L = L;
    st.ids = arena.take<int32_t>(rows);
    st.key_len = arena.take<int32_t>(B);
    st.x0 = arena.take<float>(rows * C);
    struct Set {
      float *mean, *rstd, *ln, *sum, *out, *a, *probs, *ctx;
    };
    const auto take_set = [&](int64_t a_floats, int64_t probs_floats, int64_t ctx_floats) {
      Set t{};
      t.mean = rms ? nullptr : arena.take<float>(rows);
      t.rstd = arena.take<float>(rows);
      t.ln = arena.take<float>(rows * C);
      t.sum = pre ? nullptr : arena.take<float>(rows * C);
      t.out = pre ? arena.take<float>(rows * C) : t.ln;
      t.a = a_floats > 0 ? arena.take<float>(a_floats) : nullptr;
      t.probs = probs_floats > 0 ? arena.take<float>(probs_floats) : nullptr;
      t.ctx = arena.take<float>(ctx_floats);
      return t;
    };
    // In inference a decoder self-attention's projection is its own, kept
    // for begin_decoding, not in the shared sets.
    const auto own_projection = [&](const Sublayer& s) {
      return inference && decoder && s.kind == Sublayer::kSelfAttn;
    };
    // Floats of a sublayer's buffers in a set: a, probs and ctx.
    struct Need {
      int64_t a = 0, probs = 0, ctx = 0;
    };
    const auto need = [&](const Sublayer& s) {
      switch (s.kind) {
        case Sublayer::kSelfAttn: return Need{own_projection(s) ? 0 : rows * QKV, B * H * L * L, rows * C};
        case Sublayer::kCrossAttn: return Need{rows * C, B * H * L * mem_len, rows * C};
        case Sublayer::kFfn: break;
      }
      return Need{rows * F1, 0, rows * F};
    };
    Set turns[2];
    if (inference) {
      Need most[2];
      for (size_t i = 0; i < st.subs.size(); ++i) {
        const Need n = need(st.subs[i]);
        Need& m = most[i % 2];
        m = Need{std::max(m.a, n.a), std::max(m.probs, n.probs), std::max(m.ctx, n.ctx)};
      }
      for (int k = 0; k < 2 && k < static_cast<int>(st.subs.size()); ++k)
        turns[k] = take_set(most[k].a, most[k].probs, most[k].ctx);
    }
    for (size_t i = 0; i < st.subs.size(); ++i) {
      Sublayer& s = st.subs[i];
      Set t;
      if (inference) {
        t = turns[i % 2];
      } else {
        const Need n = need(s);
        t = take_set(n.a, n.probs, n.ctx);
      }
      if (own_projection(s)) t.a = arena.take<float>(rows * QKV);
      s.mean = t.mean;
      s.rstd = t.rstd;
      s.ln = t.ln;
      s.sum = t.sum;
      s.out = t.out;
      s.a = t.a;
      s.probs = s.kind != Sublayer::kFfn ? t.probs : nullptr;
      s.ctx = t.ctx;
      s.kv = s.kind == Sublayer::kCrossAttn ? arena.take<float>(B * mem_len * 2 * KV) : nullptr;
    }
    if (st.final_w >= 0) {
      st.final_mean = rms ? nullptr : arena.take<float>(rows);
      st.final_rstd = arena.take<float>(rows);
      st.final_out = arena.take<float>(rows * C);
    }
  }

  void assign_buffers(bool inference) {
    if (enc_dec) assign_stack(enc, S, 0, inference);
    assign_stack(dec, T, S, inference);
    const int64_t rows = B * std::max(S, T);
    const int64_t V = m->tgt_vocab_;
    logits = arena.take<float>(B * T * V);
    targets = arena.take<int32_t>(B * T);
    u = arena.take<float>(rows * C);
    if (inference) {  // no backward: forward(train = true) plans again
      dlogits = dA = dB = du = dln = dctx = dqkv = dh = dh1 = dmem = dkv = nullptr;
      return;
    }
    dlogits = arena.take<float>(B * T * V);
    dA = arena.take<float>(rows * C);
    dB = arena.take<float>(rows * C);
    du = arena.take<float>(rows * C);
    dln = arena.take<float>(rows * C);
    dctx = arena.take<float>(rows * C);
    dqkv = arena.take<float>(rows * QKV);
    dh = arena.take<float>(rows * F);
    dh1 = gated ? arena.take<float>(rows * F1) : dh;
    dmem = enc_dec ? arena.take<float>(B * S * C) : nullptr;
    dkv = enc_dec ? arena.take<float>(B * S * 2 * KV) : nullptr;
  }

  // Lays the buffers of a forward of this shape out in the arena (growing
  // it if need be); `inference` for a forward no backward follows.
  void plan(int64_t b, int64_t s, int64_t t, bool inference) {
    B = b;
    S = s;
    T = t;
    planned_inference = inference;
    arena.begin(true);
    assign_buffers(inference);
    arena.reserve(arena.used());
    arena.begin(false);
    assign_buffers(inference);
  }
  bool planned(int64_t b, int64_t s, int64_t t, bool inference) const {
    return b == B && s == S && t == T && inference == planned_inference;
  }

  // ---- building blocks ---------------------------------------------------

  // y(rows, out) = x(rows, in) W(out, in)^T + b
  void linear_forward(float* y, const float* x, int64_t rows, int64_t in, int64_t out, const float* w, int64_t ldw,
                      const float* b) {
    be->gemm(false, true, rows, out, in, 1.0f, x, in, w, ldw, 0.0f, y, out);
    if (b) be->add_bias(y, b, rows, out);
  }

  // dW += dy^T x ; db += colsum(dy) ; dx (=|+=) dy W
  void linear_backward(float* dx, bool accumulate_dx, float* dw, float* db, const float* dy, const float* x,
                       int64_t rows, int64_t in, int64_t out, const float* w, int64_t ldw) {
    be->gemm(true, false, out, in, rows, 1.0f, dy, out, x, in, 1.0f, dw, ldw);
    if (db) be->bias_grad(db, dy, rows, out);
    if (dx) be->gemm(false, false, rows, in, out, 1.0f, dy, out, w, ldw, accumulate_dx ? 1.0f : 0.0f, dx, in);
  }

  // LayerNorm or RMSNorm (which has no mean and no bias).
  void norm_forward(float* y, float* mean, float* rstd, const float* x, int64_t w, int64_t b, int64_t rows) {
    if (rms) {
      be->rmsnorm_forward(y, rstd, x, W(w), rows, C, eps);
    } else {
      be->layernorm_forward(y, mean, rstd, x, W(w), W(b), rows, C, eps);
    }
  }
  void norm_backward(float* dx, int64_t w, int64_t b, const float* dy, const float* x, const float* mean,
                     const float* rstd, int64_t rows) {
    if (rms) {
      be->rmsnorm_backward(dx, G(w), dy, x, W(w), rstd, rows, C);
    } else {
      be->layernorm_backward(dx, G(w), G(b), dy, x, W(w), mean, rstd, rows, C);
    }
  }

  // Rotates (or, inverse, turns back) the queries and keys of a
  // self-attention projection qkv (L positions per row from `first`).
  void rotate(float* qkv, int64_t L, int64_t first, bool inverse) {
    if (!rope_cos) return;
    const int64_t D = C / H;
    be->rope(qkv, QKV, B, L, H, D, rope_cos, rope_sin, first, inverse);
    be->rope(qkv + C, QKV, B, L, KV / D, D, rope_cos, rope_sin, first, inverse);
  }

  DropoutKey key(uint64_t site) const { return DropoutKey::make(opt.seed, opt.step, opt.worker, site); }
  float p_resid() const { return opt.train ? static_cast<float>(cfg.dropout) : 0.0f; }
  float p_attn() const { return opt.train ? static_cast<float>(cfg.attention_dropout) : 0.0f; }
  float p_embed() const { return opt.train ? static_cast<float>(cfg.embedding_dropout) : 0.0f; }

  AttentionDims dims(const Sublayer& s, int64_t Tq, int64_t Tk) const {
    AttentionDims d;
    d.B = B;
    d.H = H;
    d.Tq = Tq;
    d.Tk = Tk;
    d.D = C / H;
    d.causal = s.causal;
    d.scale = 1.0f / std::sqrt(static_cast<float>(d.D));
    d.kv_heads = KV / d.D;
    if (s.kind == Sublayer::kSelfAttn) {
      d.ldq = d.ldk = d.ldv = QKV;
    } else {
      d.ldq = C;
      d.ldk = d.ldv = 2 * KV;
    }
    d.ldo = C;
    return d;
  }

  // ---- forward -------------------------------------------------------------

  // u(rows, C) = f(in) for the sublayer's function f.
  void f_forward(Sublayer& s, const float* in, const Stack& st, const float* mem, int64_t mem_len,
                 const int32_t* mem_key_len) {
    const int64_t rows = B * st.L;
    switch (s.kind) {
      case Sublayer::kSelfAttn: {
        linear_forward(s.a, in, rows, C, QKV, W(s.in_w), C, W(s.in_b));
        if (decoding.step) {
          // Keep the new position's key and value, then attend over every
          // kept one (the keys after it are padding: no mask needed).
          rotate(s.a, 1, decoding.positions, false);
          const int64_t block = decoding.room * 2 * KV;
          be->copy_rows(s.kept.p + decoding.positions * block, 2 * KV, s.a + C, QKV, B, 2 * KV);
          AttentionDims d = dims(s, 1, decoding.capacity);
          d.causal = false;
          d.ldk = d.ldv = block;
          d.kv_batch_stride = 2 * KV;
          be->attention_forward(d, s.a, s.kept.p, s.kept.p + KV, st.key_len, decoding.probs.p, s.ctx, 0.0f,
                                key(s.site_inner));
        } else {
          rotate(s.a, st.L, 0, false);
          const AttentionDims d = dims(s, st.L, st.L);
          be->attention_forward(d, s.a, s.a + C, s.a + C + KV, st.key_len, s.probs, s.ctx, p_attn(), key(s.site_inner));
        }
        linear_forward(u, s.ctx, rows, C, C, W(s.out_w), C, W(s.out_b));
        break;
      }
      case Sublayer::kCrossAttn: {
        linear_forward(s.a, in, rows, C, C, W(s.in_w), C, W(s.in_b));
        const float* kv = decoding.step ? s.kept.p : s.kv;  // a step reads the kept projection of the memory
        if (!decoding.step)
          linear_forward(s.kv, mem, B * mem_len, C, 2 * KV, W(s.in_w) + C * C, C,
                         s.in_b >= 0 ? W(s.in_b) + C : nullptr);
        const AttentionDims d = dims(s, st.L, mem_len);
        be->attention_forward(d, s.a, kv, kv + KV, mem_key_len, s.probs, s.ctx, p_attn(), key(s.site_inner));
        linear_forward(u, s.ctx, rows, C, C, W(s.out_w), C, W(s.out_b));
        break;
      }
      case Sublayer::kFfn: {
        linear_forward(s.a, in, rows, C, F1, W(s.in_w), C, W(s.in_b));
        if (gated) {
          be->swiglu_forward(s.ctx, s.a, rows, F);
        } else {
          be->activation_forward(cfg.activation, s.ctx, s.a, rows * F);
        }
        be->dropout_forward(s.ctx, s.ctx, rows * F, p_resid(), key(s.site_inner));
        linear_forward(u, s.ctx, rows, F, C, W(s.out_w), F, W(s.out_b));
        break;
      }
    }
  }

  void sublayer_forward(Sublayer& s, const float* x, const Stack& st, const float* mem, int64_t mem_len,
                        const int32_t* mem_key_len) {
    const int64_t rows = B * st.L;
    s.x = x;
    if (pre) {
      norm_forward(s.ln, s.mean, s.rstd, x, s.norm_w, s.norm_b, rows);
      f_forward(s, s.ln, st, mem, mem_len, mem_key_len);
      be->dropout_forward(u, u, rows * C, p_resid(), key(s.site_resid));
      be->copy(s.out, x, rows * C);
      be->add(s.out, u, rows * C);
    } else {
      f_forward(s, x, st, mem, mem_len, mem_key_len);
      be->dropout_forward(s.sum, u, rows * C, p_resid(), key(s.site_resid));
      be->axpy(s.sum, s.alpha, x, rows * C);
      norm_forward(s.ln, s.mean, s.rstd, s.sum, s.norm_w, s.norm_b, rows);
    }
  }

  // The stack's positions start at `first` (a decoding step's place).
  void embed_forward(Stack& st, const std::vector<int32_t>& ids, const std::vector<int32_t>& lens, int64_t first = 0) {
    const int64_t rows = B * st.L;
    be->upload(st.ids, ids.data(), ids.size() * sizeof(int32_t));
    be->upload(st.key_len, lens.data(), lens.size() * sizeof(int32_t));
    be->embedding_forward(st.x0, st.ids, W(st.embed), rows, C, emb_scale);
    if (st.pos >= 0 || sinusoid) be->add_positions(st.x0, (st.pos >= 0 ? W(st.pos) : sinusoid) + first * C, B, st.L, C);
    be->dropout_forward(st.x0, st.x0, rows * C, p_embed(), key(st.site_embed));
  }

  void need(int64_t end) const {
    if (opt.need_weights) opt.need_weights(end);
  }
  // The end of layer l's block (l = -1: the embeddings').
  static int64_t layer_end(const Stack& st, int64_t l) {
    const size_t next = static_cast<size_t>(l + 1);
    return next < st.layer_begin.size() ? st.layer_begin[next] : st.end;
  }

  void stack_forward(Stack& st, const float* mem, int64_t mem_len, const int32_t* mem_key_len) {
    const float* x = st.x0;
    for (size_t i = 0; i < st.subs.size(); ++i) {
      if (i % st.subs_per_layer == 0) need(layer_end(st, static_cast<int64_t>(i / st.subs_per_layer)));
      sublayer_forward(st.subs[i], x, st, mem, mem_len, mem_key_len);
      x = st.subs[i].out;
    }
    need(st.end);
    if (st.final_w >= 0) {
      norm_forward(st.final_out, st.final_mean, st.final_rstd, x, st.final_w, st.final_b, B * st.L);
      x = st.final_out;
    }
    st.top = x;
  }

  LossStats forward(const Batch& batch, const ForwardOptions& o) {
    PST_CHECK_MSG(batch.T >= 1 && batch.T <= cfg.max_len, "decoder length {} outside [1, max_len={}]", batch.T,
                  cfg.max_len);
    PST_CHECK_MSG(!enc_dec || (batch.S >= 1 && batch.S <= cfg.max_len), "source length {} outside [1, max_len={}]",
                  batch.S, cfg.max_len);
    opt = o;
    decoding.active = false;
    PST_CHECK_MSG(!o.reuse_encoder || (!o.train && enc_dec && memory_B == batch.B && memory_S == batch.S),
                  "reuse_encoder needs an inference forward of an encoder-decoder on the same source");
    const int64_t src_len = enc_dec ? batch.S : 0;
    if (!planned(batch.B, src_len, batch.T, !o.train)) plan(batch.B, src_len, batch.T, !o.train);
    const float* mem = nullptr;
    if (enc_dec && o.reuse_encoder) {
      be->upload(enc.key_len, batch.src_len.data(), batch.src_len.size() * sizeof(int32_t));
      mem = memory.p;
    } else if (enc_dec) {
      need(layer_end(enc, -1));
      embed_forward(enc, batch.src, batch.src_len);
      stack_forward(enc, nullptr, 0, nullptr);
      mem = enc.top;
      if (!o.train) keep_memory(mem);
    }
    need(layer_end(dec, -1));
    embed_forward(dec, batch.tgt_in, batch.tgt_len);
    stack_forward(dec, mem, S, enc_dec ? enc.key_len : nullptr);
    need(m->num_params());
    const int64_t N = B * T, V = m->tgt_vocab_;
    linear_forward(logits, dec.top, N, C, V, W(out_w), C, W(out_b));
    be->upload(targets, batch.tgt_out.data(), batch.tgt_out.size() * sizeof(int32_t));
    LossStats st;
    st.tokens = batch.tokens();
    st.loss_sum = be->cross_entropy(logits, targets, N, V, opt.label_smoothing, opt.grad_scale,
                                    opt.train ? dlogits : nullptr, &st.correct);
    have_grad = opt.train;
    return st;
  }

  // Copies the encoder output out of the arena so that later forwards with
  // reuse_encoder (whose plans may move the arena) can read it.
  void keep_memory(const float* mem) {
    be->copy(reserve(memory, B * S * C), mem, B * S * C);
    memory_B = B;
    memory_S = S;
  }

  // ---- incremental decoding ----------------------------------------------

  void release_decoding() {
    for (Sublayer& s : dec.subs) {
      release(s.kept);
      release(s.spare);
    }
    release(decoding.src_len_dev);
    release(decoding.from_dev);
    release(decoding.probs);
    decoding = Decoding{};
  }

  // Floats of a decoder attention sublayer's keys and values for `rows`
  // rows (laid out for `room`).
  int64_t kept_floats(const Sublayer& s, int64_t rows, int64_t room) const {
    return s.kind == Sublayer::kSelfAttn ? decoding.capacity * room * 2 * KV : rows * decoding.S * 2 * KV;
  }

  std::vector<float> encoder_output(int64_t row, int64_t positions) const {
    PST_CHECK_MSG(enc_dec && row >= 0 && row < memory_B && positions >= 0 && positions <= memory_S,
                  "encoder output of row {} ({} positions): the last inference forward had {} rows of {}", row,
                  positions, memory_B, memory_S);
    std::vector<float> out(static_cast<size_t>(positions * C));
    be->download(out.data(), memory.p + row * memory_S * C, out.size() * sizeof(float));
    return out;
  }

  void begin_decoding(const Batch& prefix, int64_t capacity, const std::vector<float>* encoder_output) {
    PST_CHECK_MSG(prefix.T <= capacity && capacity <= cfg.max_len, "decoding capacity {} outside [T={}, max_len={}]",
                  capacity, prefix.T, cfg.max_len);
    for (int32_t len : prefix.tgt_len)
      PST_CHECK_MSG(len == prefix.T, "a decoding prefix of {} ids in a batch of {}", len, prefix.T);
    ForwardOptions o;
    if (encoder_output) {
      const int64_t n = prefix.B * prefix.S * C;
      PST_CHECK_MSG(enc_dec && static_cast<int64_t>(encoder_output->size()) == n,
                    "an encoder output of {} floats for {} rows of {} positions of {}", encoder_output->size(),
                    prefix.B, prefix.S, C);
      be->upload(reserve(memory, n), encoder_output->data(), static_cast<size_t>(n) * sizeof(float));
      memory_B = prefix.B;
      memory_S = prefix.S;
      o.reuse_encoder = true;
    }
    forward(prefix, o);
    decoding.S = enc_dec ? prefix.S : 0;
    decoding.capacity = capacity;
    decoding.room = B;
    for (Sublayer& s : dec.subs) {
      if (s.kind == Sublayer::kFfn) continue;
      float* kept = reserve(s.kept, kept_floats(s, B, B));
      if (s.kind == Sublayer::kCrossAttn) {
        be->copy(kept, s.kv, B * S * 2 * KV);
      } else {  // position t of every row from the forward's (B, T, C + 2KV) projections
        for (int64_t t = 0; t < T; ++t)
          be->copy_rows(kept + t * B * 2 * KV, 2 * KV, s.a + t * QKV + C, T * QKV, B, 2 * KV);
      }
    }
    decoding.src_len = enc_dec ? prefix.src_len : std::vector<int32_t>(static_cast<size_t>(B), 0);
    be->upload(reserve(decoding.src_len_dev, B), decoding.src_len.data(), decoding.src_len.size() * sizeof(int32_t));
    reserve(decoding.probs, B * H * capacity);
    decoding.rows = B;
    decoding.positions = T;
    decoding.active = true;
  }

  void decode_step(const std::vector<int32_t>& ids) {
    PST_CHECK_MSG(decoding.active, "decode_step without begin_decoding (or after another forward)");
    PST_CHECK_MSG(static_cast<int64_t>(ids.size()) == decoding.rows, "{} ids for {} decoding rows", ids.size(),
                  decoding.rows);
    if (decoding.rows == 0) return;
    PST_CHECK_MSG(decoding.positions < decoding.capacity, "decoding is full: {} positions", decoding.capacity);
    opt = ForwardOptions{};
    have_grad = false;
    if (!planned(decoding.rows, decoding.S, 1, true)) plan(decoding.rows, decoding.S, 1, true);
    decoding.step = true;
    embed_forward(dec, ids, std::vector<int32_t>(ids.size(), static_cast<int32_t>(decoding.positions + 1)),
                  decoding.positions);
    stack_forward(dec, nullptr, S, decoding.src_len_dev.p);
    decoding.step = false;
    linear_forward(logits, dec.top, B, C, m->tgt_vocab_, W(out_w), C, W(out_b));
    ++decoding.positions;
  }

  void reorder_decoding(const std::vector<int32_t>& from) {
    PST_CHECK_MSG(decoding.active, "reorder_decoding without begin_decoding (or after another forward)");
    const int64_t n = static_cast<int64_t>(from.size());
    for (int32_t r : from) PST_CHECK_MSG(r >= 0 && r < decoding.rows, "decoding row {} of {}", r, decoding.rows);
    if (n == 0) {  // nothing left to decode
      decoding.rows = 0;
      decoding.src_len.clear();
      return;
    }
    be->upload(reserve(decoding.from_dev, n), from.data(), from.size() * sizeof(int32_t));
    const int64_t room = std::max(n, decoding.room);
    for (Sublayer& s : dec.subs) {
      if (s.kind == Sublayer::kFfn) continue;
      float* to = reserve(s.spare, kept_floats(s, n, room));
      // Gathers of whole rows: embedding lookups with the rows as the table.
      if (s.kind == Sublayer::kCrossAttn) {
        be->embedding_forward(to, decoding.from_dev.p, s.kept.p, n, decoding.S * 2 * KV, 1.0f);
      } else {
        for (int64_t t = 0; t < decoding.positions; ++t)
          be->embedding_forward(to + t * room * 2 * KV, decoding.from_dev.p, s.kept.p + t * decoding.room * 2 * KV, n,
                                2 * KV, 1.0f);
      }
      std::swap(s.kept, s.spare);
    }
    std::vector<int32_t> src_len;
    for (int32_t r : from) src_len.push_back(decoding.src_len[static_cast<size_t>(r)]);
    decoding.src_len = std::move(src_len);
    be->upload(reserve(decoding.src_len_dev, n), decoding.src_len.data(), decoding.src_len.size() * sizeof(int32_t));
    reserve(decoding.probs, n * H * decoding.capacity);
    decoding.rows = n;
    decoding.room = room;
  }

  // ---- backward ------------------------------------------------------------

  // Given du = d(loss)/d(f's output), accumulates f's parameter gradients and
  // writes d(loss)/d(f's input) into din.
  void f_backward(Sublayer& s, const float* in, const float* du_, float* din, const Stack& st, const float* mem,
                  int64_t mem_len, const int32_t* mem_key_len) {
    const int64_t rows = B * st.L;
    switch (s.kind) {
      case Sublayer::kSelfAttn: {
        linear_backward(dctx, false, G(s.out_w), G(s.out_b), du_, s.ctx, rows, C, C, W(s.out_w), C);
        const AttentionDims d = dims(s, st.L, st.L);
        be->attention_backward(d, s.a, s.a + C, s.a + C + KV, st.key_len, s.probs, dctx, dqkv, dqkv + C, dqkv + C + KV,
                               p_attn(), key(s.site_inner));
        rotate(dqkv, st.L, 0, true);
        linear_backward(din, false, G(s.in_w), G(s.in_b), dqkv, in, rows, C, QKV, W(s.in_w), C);
        break;
      }
      case Sublayer::kCrossAttn: {
        linear_backward(dctx, false, G(s.out_w), G(s.out_b), du_, s.ctx, rows, C, C, W(s.out_w), C);
        const AttentionDims d = dims(s, st.L, mem_len);
        // dq goes to dqkv (rows, C); dk, dv to dkv (B*S, 2KV).
        be->attention_backward(d, s.a, s.kv, s.kv + KV, mem_key_len, s.probs, dctx, dqkv, dkv, dkv + KV, p_attn(),
                               key(s.site_inner));
        linear_backward(din, false, G(s.in_w), G(s.in_b), dqkv, in, rows, C, C, W(s.in_w), C);
        linear_backward(dmem, true, G(s.in_w) + C * C, s.in_b >= 0 ? G(s.in_b) + C : nullptr, dkv, mem, B * mem_len, C,
                        2 * KV, W(s.in_w) + C * C, C);
        break;
      }
      case Sublayer::kFfn: {
        linear_backward(dh, false, G(s.out_w), G(s.out_b), du_, s.ctx, rows, F, C, W(s.out_w), F);
        be->dropout_backward(dh, dh, rows * F, p_resid(), key(s.site_inner));
        if (gated) {
          be->swiglu_backward(dh1, dh, s.a, rows, F);
        } else {
          be->activation_backward(cfg.activation, dh, dh, s.a, rows * F);
        }
        linear_backward(din, false, G(s.in_w), G(s.in_b), dh1, in, rows, C, F1, W(s.in_w), C);
        break;
      }
    }
  }

  // dout: d(loss)/d(block output). Writes d(loss)/d(block input) into dx.
  void sublayer_backward(Sublayer& s, const float* dout, float* dx, const Stack& st, const float* mem, int64_t mem_len,
                         const int32_t* mem_key_len) {
    const int64_t rows = B * st.L;
    if (pre) {
      be->dropout_backward(du, dout, rows * C, p_resid(), key(s.site_resid));
      f_backward(s, s.ln, du, dln, st, mem, mem_len, mem_key_len);
      norm_backward(dx, s.norm_w, s.norm_b, dln, s.x, s.mean, s.rstd, rows);
      be->add(dx, dout, rows * C);
    } else {
      norm_backward(dln, s.norm_w, s.norm_b, dout, s.sum, s.mean, s.rstd, rows);
      be->dropout_backward(du, dln, rows * C, p_resid(), key(s.site_resid));
      f_backward(s, s.x, du, dx, st, mem, mem_len, mem_key_len);
      be->axpy(dx, s.alpha, dln, rows * C);
    }
  }

  // dtop: d(loss)/d(stack output), overwritten. Returns the buffer holding
  // d(loss)/d(x0) after the embedding gradients are accumulated.
  void stack_backward(Stack& st, float* dtop, const float* mem, int64_t mem_len, const int32_t* mem_key_len,
                      const GradientsFinal& on_final) {
    const int64_t rows = B * st.L;
    float* cur = dtop;
    float* next = cur == dA ? dB : dA;
    if (st.final_w >= 0) {
      const float* in = st.subs.empty() ? st.x0 : st.subs.back().out;
      norm_backward(next, st.final_w, st.final_b, cur, in, st.final_mean, st.final_rstd, rows);
      std::swap(cur, next);
    }
    for (size_t i = st.subs.size(); i-- > 0;) {
      sublayer_backward(st.subs[i], cur, next, st, mem, mem_len, mem_key_len);
      std::swap(cur, next);
      if (on_final && i % st.subs_per_layer == 0) on_final(st.layer_begin[i / st.subs_per_layer]);
    }
    be->dropout_backward(cur, cur, rows * C, p_embed(), key(st.site_embed));
    be->embedding_backward(G(st.embed), st.ids, cur, rows, C, emb_scale);
    if (st.pos >= 0) be->positions_backward(G(st.pos), cur, B, st.L, C);
    if (on_final) on_final(st.begin);
  }

  void backward(const GradientsFinal& on_final) {
    PST_CHECK_MSG(have_grad, "backward() needs a preceding forward() with train = true");
    have_grad = false;
    const int64_t N = B * T, V = m->tgt_vocab_;
    // Output projection: logits = top W_out^T + b. With tied embeddings its
    // weight is the decoder's embedding, final only after the decoder.
    linear_backward(dA, false, G(out_w), G(out_b), dlogits, dec.top, N, C, V, W(out_w), C);
    if (on_final) on_final(out_begin);
    if (enc_dec) be->fill(dmem, B * S * C, 0.0f);
    stack_backward(dec, dA, enc_dec ? enc.top : nullptr, S, enc_dec ? enc.key_len : nullptr, on_final);
    if (enc_dec) {
      be->copy(dA, dmem, B * S * C);
      stack_backward(enc, dA, nullptr, 0, nullptr, on_final);
    }
  }
};

Transformer::Transformer(const ModelConfig& cfg, int64_t src_vocab, int64_t tgt_vocab, Backend* backend)
    : cfg_(cfg), src_vocab_(src_vocab), tgt_vocab_(tgt_vocab), be_(backend) {
  table_ = build_param_table(cfg, src_vocab, tgt_vocab);
  const size_t bytes = static_cast<size_t>(table_.total_numel()) * sizeof(float);
  weights_ = static_cast<float*>(be_->allocate(bytes));
  grads_ = static_cast<float*>(be_->allocate(bytes));
  impl_ = std::make_unique<Impl>(this, cfg_, be_);
}

Transformer::~Transformer() {
  impl_.reset();
  be_->deallocate(weights_);
  be_->deallocate(grads_);
}

void Transformer::zero_grads() { be_->fill(grads_, table_.total_numel(), 0.0f); }

void Transformer::set_weights(const float* host) {
  be_->upload(weights_, host, static_cast<size_t>(table_.total_numel()) * sizeof(float));
}

void Transformer::set_weights(const float* host, int64_t begin, int64_t end) {
  PST_CHECK_MSG(0 <= begin && begin <= end && end <= table_.total_numel(), "weights [{}, {}) of {}", begin, end,
                table_.total_numel());
  be_->upload(weights_ + begin, host + begin, static_cast<size_t>(end - begin) * sizeof(float));
}

void Transformer::get_grads(float* host, int64_t begin, int64_t end) const {
  PST_CHECK_MSG(0 <= begin && begin <= end && end <= table_.total_numel(), "gradients [{}, {}) of {}", begin, end,
                table_.total_numel());
  be_->download(host + begin, grads_ + begin, static_cast<size_t>(end - begin) * sizeof(float));
}

void Transformer::get_weights(float* host) const {
  be_->download(host, weights_, static_cast<size_t>(table_.total_numel()) * sizeof(float));
}

void Transformer::get_grads(float* host) const {
  be_->download(host, grads_, static_cast<size_t>(table_.total_numel()) * sizeof(float));
}

void Transformer::init_weights(uint64_t seed) {
  std::vector<float> host(static_cast<size_t>(table_.total_numel()));
  init_params(table_, seed, host.data());
  set_weights(host.data());
}

LossStats Transformer::forward(const Batch& batch, const ForwardOptions& opt) { return impl_->forward(batch, opt); }

void Transformer::backward(const GradientsFinal& on_final) { impl_->backward(on_final); }

void Transformer::begin_decoding(const Batch& prefix, int64_t capacity) {
  impl_->begin_decoding(prefix, capacity, nullptr);
}
void Transformer::begin_decoding(const Batch& prefix, int64_t capacity, const std::vector<float>& encoder_output) {
  impl_->begin_decoding(prefix, capacity, &encoder_output);
}
std::vector<float> Transformer::encoder_output(int64_t row, int64_t positions) const {
  return impl_->encoder_output(row, positions);
}
void Transformer::decode_step(const std::vector<int32_t>& ids) { impl_->decode_step(ids); }
void Transformer::reorder_decoding(const std::vector<int32_t>& from) { impl_->reorder_decoding(from); }
int64_t Transformer::decoding_rows() const { return impl_->decoding.active ? impl_->decoding.rows : 0; }
int64_t Transformer::decoded_positions() const { return impl_->decoding.active ? impl_->decoding.positions : 0; }

size_t Transformer::activation_bytes() const { return impl_->arena.used(); }

std::vector<float> Transformer::logits() const {
  std::vector<float> out(static_cast<size_t>(impl_->B * impl_->T * tgt_vocab_));
  be_->download(out.data(), impl_->logits, out.size() * sizeof(float));
  return out;
}

}  // namespace pst
