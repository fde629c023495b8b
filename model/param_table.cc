#include "model/param_table.h"

#include <unistd.h>

#include <cmath>

#include <fmt/format.h>

#include "core/philox.h"
#include "core/status.h"

namespace pst {

const char* to_string(Component c) {
  switch (c) {
    case Component::kEmbeddings: return "embeddings";
    case Component::kPositions: return "positions";
    case Component::kAttention: return "attention";
    case Component::kFfn: return "ffn";
    case Component::kNorms: return "norms";
    case Component::kOutput: return "output";
  }
  return "?";
}

void ParamTable::add(ParamSpec spec) {
  spec.numel = 1;
  for (int64_t d : spec.shape) spec.numel *= d;
  spec.offset = total_;
  total_ += spec.numel;
  params_.push_back(std::move(spec));
}

std::vector<int64_t> ParamTable::numels() const {
  std::vector<int64_t> out;
  for (const ParamSpec& p : params_) out.push_back(p.numel);
  return out;
}

int64_t ParamTable::index_of(const std::string& name) const {
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].name == name) return static_cast<int64_t>(i);
  return -1;
}

int64_t ParamTable::offset_of(const std::string& name) const {
  const int64_t i = index_of(name);
  PST_CHECK_MSG(i >= 0, "no parameter named '{}'", name);
  return params_[static_cast<size_t>(i)].offset;
}

int64_t kv_heads(const ModelConfig& cfg) { return cfg.kv_heads > 0 ? cfg.kv_heads : cfg.heads; }
int64_t kv_dim(const ModelConfig& cfg) { return kv_heads(cfg) * (cfg.d_model / cfg.heads); }
int64_t ffn_in_rows(const ModelConfig& cfg) {
  return cfg.activation == Activation::kSwiGLU ? 2 * cfg.ffn_dim : cfg.ffn_dim;
}

DeepNormConstants deepnorm_constants(const ModelConfig& cfg) {
  DeepNormConstants k;
  if (cfg.norm != NormPlacement::kDeepNorm) return k;
  const double M = static_cast<double>(cfg.decoder_layers);
  if (cfg.kind == ModelKind::kDecoderOnly) {
    k.decoder_alpha = std::pow(2.0 * M, 0.25);
    k.decoder_beta = std::pow(8.0 * M, -0.25);
  } else {
    const double N = static_cast<double>(cfg.encoder_layers);
    k.encoder_alpha = 0.81 * std::pow(std::pow(N, 4) * M, 1.0 / 16);
    k.encoder_beta = 0.87 * std::pow(std::pow(N, 4) * M, -1.0 / 16);
    k.decoder_alpha = std::pow(3.0 * M, 0.25);
    k.decoder_beta = std::pow(12.0 * M, -0.25);
  }
  return k;
}

namespace {

class TableBuilder {
 public:
  TableBuilder(const ModelConfig& cfg, ParamTable* table) : cfg_(cfg), table_(table) {}

  // Initial values of a linear layer's weight (out, in) under the model's
  // scheme; `gain` is the DeepNet beta for the rows it applies to.
  InitSegment linear_init(int64_t rows_begin, int64_t rows_end, int64_t fan_in, int64_t fan_out, double gain) const {
    InitSegment s;
    s.row_begin = rows_begin;
    s.row_end = rows_end;
    switch (cfg_.init) {
      case InitScheme::kXavierUniform:
        s.kind = InitSegment::kUniform;
        s.a = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
        break;
      case InitScheme::kKaimingNormal:
        s.kind = InitSegment::kNormal;
        s.a = std::sqrt(2.0 / static_cast<double>(fan_in));
        break;
      case InitScheme::kNormal:
        s.kind = InitSegment::kNormal;
        s.a = cfg_.init_std;
        break;
      case InitScheme::kDeepNet:  // xavier_normal with gain beta
        s.kind = InitSegment::kNormal;
        s.a = gain * std::sqrt(2.0 / static_cast<double>(fan_in + fan_out));
        break;
    }
    return s;
  }

  // `parts` equal blocks of rows, each initialised as a layer of its own
  // (SwiGLU's gate and value halves).
  void linear(const std::string& prefix, int64_t out, int64_t in, Component c, double gain, int64_t parts = 1) {
    std::vector<InitSegment> init;
    for (int64_t k = 0; k < parts; ++k)
      init.push_back(linear_init(k * out / parts, (k + 1) * out / parts, in, out / parts, gain));
    table_->add(ParamSpec{prefix + ".weight", {out, in}, c, true, init, 0, 0});
    if (cfg_.bias) table_->add(ParamSpec{prefix + ".bias", {out}, c, false, {zeros(out)}, 0, 0});
  }

  // torch.nn.MultiheadAttention layout: in_proj_weight (3C, C) holds q, k, v;
  // with grouped-query attention (C + 2 KV, C).
  void attention(const std::string& prefix, double beta) {
    const int64_t C = cfg_.d_model, KV = kv_dim(cfg_), rows = C + 2 * KV;
    std::vector<InitSegment> init;
    if (cfg_.init == InitScheme::kDeepNet) {
      init = {linear_init(0, C + KV, C, C, 1.0), linear_init(C + KV, rows, C, C, beta)};
    } else {
      init = {linear_init(0, rows, C, rows, 1.0)};
    }
    table_->add(ParamSpec{prefix + ".in_proj_weight", {rows, C}, Component::kAttention, true, init, 0, 0});
    if (cfg_.bias)
      table_->add(ParamSpec{prefix + ".in_proj_bias", {rows}, Component::kAttention, false, {zeros(rows)}, 0, 0});
    linear(prefix + ".out_proj", C, C, Component::kAttention, beta);
  }

  void norm(const std::string& prefix) {
    const int64_t C = cfg_.d_model;
    table_->add(ParamSpec{
        prefix + ".weight", {C}, Component::kNorms, false, {InitSegment{InitSegment::kOnes, 0, C, 0.0}}, 0, 0});
    if (cfg_.norm_type == NormType::kLayerNorm)
      table_->add(ParamSpec{prefix + ".bias", {C}, Component::kNorms, false, {zeros(C)}, 0, 0});
  }

  void ffn(const std::string& prefix, double beta) {
    const int64_t rows = ffn_in_rows(cfg_);
    linear(prefix + ".linear1", rows, cfg_.d_model, Component::kFfn, beta, rows / cfg_.ffn_dim);
    linear(prefix + ".linear2", cfg_.d_model, cfg_.ffn_dim, Component::kFfn, beta);
  }

  void embedding(const std::string& name, int64_t vocab) {
    const double std = cfg_.scale_embeddings ? 1.0 / std::sqrt(static_cast<double>(cfg_.d_model)) : cfg_.init_std;
    table_->add(ParamSpec{name,
                          {vocab, cfg_.d_model},
                          Component::kEmbeddings,
                          false,
                          {InitSegment{InitSegment::kNormal, 0, vocab, std}},
                          0,
                          0});
  }

  void positions(const std::string& name) {
    if (cfg_.positions != Positions::kLearned) return;
    table_->add(ParamSpec{name,
                          {cfg_.max_len, cfg_.d_model},
                          Component::kPositions,
                          false,
                          {InitSegment{InitSegment::kNormal, 0, cfg_.max_len, cfg_.init_std}},
                          0,
                          0});
  }

  void output(int64_t vocab) {
    if (!cfg_.tie_embeddings) {
      table_->add(ParamSpec{"output.weight",
                            {vocab, cfg_.d_model},
                            Component::kOutput,
                            true,
                            {linear_init(0, vocab, cfg_.d_model, vocab, 1.0)},
                            0,
                            0});
    }
    if (cfg_.bias) table_->add(ParamSpec{"output.bias", {vocab}, Component::kOutput, false, {zeros(vocab)}, 0, 0});
  }

 private:
  static InitSegment zeros(int64_t rows) { return InitSegment{InitSegment::kZeros, 0, rows, 0.0}; }

  const ModelConfig& cfg_;
  ParamTable* table_;
};

}  // namespace

std::vector<SublayerLayout> StackLayout::sublayers(int64_t layer) const {
  const std::string p = fmt::format("{}.{}", layer_prefix, layer);
  std::vector<SublayerLayout> out{{SublayerLayout::kSelfAttn, p + ".self_attn", p + ".norm1"}};
  if (cross) out.push_back({SublayerLayout::kCrossAttn, p + ".multihead_attn", p + ".norm2"});
  out.push_back({SublayerLayout::kFfn, p, fmt::format("{}.norm{}", p, out.size() + 1)});
  return out;
}

std::vector<StackLayout> model_layout(const ModelConfig& cfg) {
  const DeepNormConstants dn = deepnorm_constants(cfg);
  const bool pre = cfg.norm == NormPlacement::kPre;
  std::vector<StackLayout> stacks;
  if (cfg.kind == ModelKind::kDecoderOnly) {
    stacks.push_back({"embed.weight", "pos.weight", "layers", pre ? "norm" : "", cfg.decoder_layers, true, false,
                      dn.decoder_alpha, dn.decoder_beta});
    return stacks;
  }
  stacks.push_back({"src_embed.weight", "src_pos.weight", "encoder.layers", pre ? "encoder.norm" : "",
                    cfg.encoder_layers, false, false, dn.encoder_alpha, dn.encoder_beta});
  stacks.push_back({"tgt_embed.weight", "tgt_pos.weight", "decoder.layers", pre ? "decoder.norm" : "",
                    cfg.decoder_layers, true, true, dn.decoder_alpha, dn.decoder_beta});
  return stacks;
}

ParamTable build_param_table(const ModelConfig& cfg, int64_t src_vocab, int64_t tgt_vocab) {
  ParamTable table;
  TableBuilder b(cfg, &table);
  const std::vector<StackLayout> stacks = model_layout(cfg);
  for (const StackLayout& st : stacks) {
    b.embedding(st.embed, &st == &stacks.back() ? tgt_vocab : src_vocab);
    b.positions(st.pos);
    for (int64_t l = 0; l < st.layers; ++l) {
      const auto subs = st.sublayers(l);
      for (const SublayerLayout& s : subs) {
        if (s.kind == SublayerLayout::kFfn) {
          b.ffn(s.prefix, st.beta);
        } else {
          b.attention(s.prefix, st.beta);
        }
      }
      for (const SublayerLayout& s : subs) b.norm(s.norm);
    }
    if (!st.final_norm.empty()) b.norm(st.final_norm);
  }
  b.output(tgt_vocab);
  return table;
}

Status check_fits_in_memory(const ParamTable& table, int copies) {
  const double bytes = static_cast<double>(table.total_numel()) * 4.0 * copies;
  const double memory = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
  if (memory > 0 && bytes > memory)
    return failed_precondition(
        "the model has {} parameters: {} fp32 copies of them (weights, gradients, Adam "
        "moments, buffers) need {:.1f} GiB, more than this machine's {:.1f} GiB of memory",
        table.total_numel(), copies, bytes / (1 << 30), memory / (1 << 30));
  return Status();
}

void init_params(const ParamTable& table, uint64_t seed, float* weights) {
  for (const ParamSpec& p : table.params()) {
    const Philox rng(seed, fnv1a64(p.name));
    const int64_t row_size = p.shape.size() > 1 ? p.numel / p.shape[0] : 1;
    float* w = weights + p.offset;
    for (const InitSegment& s : p.init) {
      for (int64_t i = s.row_begin * row_size; i < s.row_end * row_size; ++i) {
        switch (s.kind) {
          case InitSegment::kZeros: w[i] = 0.0f; break;
          case InitSegment::kOnes: w[i] = 1.0f; break;
          case InitSegment::kNormal: w[i] = static_cast<float>(s.a * rng.normal(static_cast<uint64_t>(i))); break;
          case InitSegment::kUniform:
            w[i] = static_cast<float>(s.a * (2.0 * rng.uniform(static_cast<uint64_t>(i)) - 1.0));
            break;
        }
      }
    }
  }
}

bool decays(const ParamSpec& p, bool decay_embeddings) {
  if (p.is_matrix_weight) return true;
  return decay_embeddings && (p.component == Component::kEmbeddings || p.component == Component::kPositions);
}

ModelCost model_cost(const ModelConfig& cfg, const ParamTable& table, int64_t src_len, int64_t tgt_len) {
  ModelCost cost;
  for (const ParamSpec& p : table.params()) {
    cost.counts[static_cast<int>(p.component)] += p.numel;
    cost.total += p.numel;
  }
  const double C = static_cast<double>(cfg.d_model), F = static_cast<double>(cfg.ffn_dim);
  const double KV = static_cast<double>(kv_dim(cfg)), F_in = static_cast<double>(ffn_in_rows(cfg));
  const double layer_linear = 2.0 * C * C + 2.0 * C * KV + (F_in + F) * C;  // q, k, v, out + the FFN's matrices
  const int64_t vocab_rows =
      table[table.index_of(cfg.kind == ModelKind::kDecoderOnly ? "embed.weight" : "tgt_embed.weight")].shape[0];
  const double out = 2.0 * C * static_cast<double>(vocab_rows);
  const double T = static_cast<double>(tgt_len), S = static_cast<double>(src_len);
  const double Ld = static_cast<double>(cfg.decoder_layers);
  if (cfg.kind == ModelKind::kDecoderOnly) {
    cost.forward_flops_per_token = Ld * (2.0 * layer_linear + 4.0 * T * C) + out;
  } else {
    const double Le = static_cast<double>(cfg.encoder_layers);
    const double enc_per_src = Le * (2.0 * layer_linear + 4.0 * S * C);
    const double kv_per_src = Ld * 2.0 * 2.0 * C * KV;
    const double dec_per_tgt = Ld * (2.0 * (layer_linear + 2.0 * C * C) + 4.0 * T * C + 4.0 * S * C) + out;
    cost.forward_flops_per_token = (S * (enc_per_src + kv_per_src)) / T + dec_per_tgt;
  }
  cost.train_flops_per_token = 3.0 * cost.forward_flops_per_token;
  return cost;
}

}  // namespace pst
