// The parameter table: every trainable tensor of a model, with its name,
// shape, initial-value rule and weight-decay flag. Its order and contents are a
// pure function of the model config and vocabulary sizes (docs/design.md, Parameters and shards); the
// model's flat weight buffer stores the tensors in this order.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/status.h"

namespace pst {

enum class Component { kEmbeddings, kPositions, kAttention, kFfn, kNorms, kOutput };
const char* to_string(Component c);

// Initial values of rows [row_begin, row_end): zeros, ones, N(0, a^2), or U(-a, a).
struct InitSegment {
  enum Kind { kZeros, kOnes, kNormal, kUniform } kind = kZeros;
  int64_t row_begin = 0;
  int64_t row_end = 0;
  double a = 0.0;
};

struct ParamSpec {
  std::string name;            // e.g. "decoder.layers.2.linear1.weight"
  std::vector<int64_t> shape;  // row-major; weights of linear layers are (out, in)
  Component component = Component::kAttention;
  bool is_matrix_weight = false;  // weights of linear layers: decayed by default
  std::vector<InitSegment> init;
  int64_t offset = 0;  // in floats, into the flat buffer
  int64_t numel = 0;
};

class ParamTable {
 public:
  ParamTable() = default;
  void add(ParamSpec spec);

  const std::vector<ParamSpec>& params() const { return params_; }
  int64_t size() const { return static_cast<int64_t>(params_.size()); }
  const ParamSpec& operator[](int64_t i) const { return params_[static_cast<size_t>(i)]; }
  int64_t total_numel() const { return total_; }
  // Every tensor's size in floats, in table order.
  std::vector<int64_t> numels() const;
  // Index of a named tensor, or -1.
  int64_t index_of(const std::string& name) const;
  // Offset of a named tensor; PST_CHECKs that it exists.
  int64_t offset_of(const std::string& name) const;

 private:
  std::vector<ParamSpec> params_;
  int64_t total_ = 0;
};

// The key/value heads of grouped-query attention (model.kv_heads, 0 = heads)
// and their width, kv_heads * d_model / heads: the floats of one key (and of
// one value) per position.
int64_t kv_heads(const ModelConfig& cfg);
int64_t kv_dim(const ModelConfig& cfg);
// Rows of the FFN's linear1: ffn_dim, or 2 * ffn_dim for SwiGLU (gate rows
// first, then the rows it multiplies).
int64_t ffn_in_rows(const ModelConfig& cfg);

// DeepNorm residual scale (alpha) and init gain (beta), Wang et al. 2022.
struct DeepNormConstants {
  double encoder_alpha = 1.0, encoder_beta = 1.0;
  double decoder_alpha = 1.0, decoder_beta = 1.0;
};
DeepNormConstants deepnorm_constants(const ModelConfig& cfg);

// How a model's tensors are named, stack by stack: the one description that
// both the parameter table and the Transformer read.
struct SublayerLayout {
  enum Kind { kSelfAttn, kCrossAttn, kFfn } kind = kFfn;
  std::string prefix;  // "decoder.layers.1.self_attn"; the layer itself for the FFN
  std::string norm;    // "decoder.layers.1.norm1"
};

struct StackLayout {
  std::string embed;         // "src_embed.weight", "tgt_embed.weight" or "embed.weight"
  std::string pos;           // the learned position table's name
  std::string layer_prefix;  // "encoder.layers", "decoder.layers" or "layers"
  std::string final_norm;    // "encoder.norm", ...: pre-LN only, empty otherwise
  int64_t layers = 0;
  bool causal = false;  // causal self-attention (decoders)
  bool cross = false;   // cross-attention on the encoder output (encoder-decoder's decoder)
  double alpha = 1.0;   // DeepNorm residual scale
  double beta = 1.0;    // DeepNet init gain
  std::vector<SublayerLayout> sublayers(int64_t layer) const;
};

// The encoder (encoder-decoder models only) then the decoder.
std::vector<StackLayout> model_layout(const ModelConfig& cfg);

// The table for a model. src_vocab is ignored for decoder_only models.
ParamTable build_param_table(const ModelConfig& cfg, int64_t src_vocab, int64_t tgt_vocab);

// Whether `copies` fp32 copies of the table's parameters (weights,
// gradients, Adam moments, transfer buffers) fit in this machine's memory:
// an error naming the count and both sizes before anything is allocated,
// instead of an abort on "out of memory".
Status check_fits_in_memory(const ParamTable& table, int copies);

// Fills weights (host, table.total_numel() floats) with the initial values.
// Each tensor's values depend only on (seed, name).
void init_params(const ParamTable& table, uint64_t seed, float* weights);

// Whether the optimizer applies weight decay to this tensor.
bool decays(const ParamSpec& p, bool decay_embeddings);

// Parameter counts per component and training cost, for `pst params`.
struct ModelCost {
  int64_t counts[6] = {};  // indexed by Component
  int64_t total = 0;
  double forward_flops_per_token = 0;  // at the given context lengths
  double train_flops_per_token = 0;    // forward + backward (3x forward)
};
ModelCost model_cost(const ModelConfig& cfg, const ParamTable& table, int64_t src_len, int64_t tgt_len);

}  // namespace pst
