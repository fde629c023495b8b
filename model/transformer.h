// Encoder-decoder (Vaswani et al.) and decoder-only (GPT-style) Transformers
// with forward and backward written by hand, layer by layer (no tape).
//
// Dimension letters: B batch, S source length, T decoder length, C d_model,
// H heads, D = C/H, F ffn_dim, V vocabulary.
//
// Memory: weights and gradients are two flat device buffers laid out as the
// parameter table. Activations live in one arena sized for the largest batch
// seen so far; each forward overwrites them. Parameter gradients accumulate
// (+=) until zero_grads(); activation gradients are overwritten.
//
// Thread safety: one thread drives a Transformer; kernels parallelise inside.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/batch.h"
#include "core/config.h"
#include "model/backend.h"
#include "model/param_table.h"

namespace pst {

struct ForwardOptions {
  bool train = false;       // dropout on, gradient of the loss prepared for backward()
  float grad_scale = 1.0f;  // d(objective)/d(summed token loss), usually 1/tokens
  float label_smoothing = 0.0f;
  uint64_t seed = 0;  // dropout stream: (seed, step, worker, site)
  uint64_t step = 0;
  uint64_t worker = 0;
  // Encoder-decoder inference only: reuse the encoder output of the previous
  // forward (same batch.src), as greedy decoding does at every step.
  bool reuse_encoder = false;
  // Called with an offset `end` of the flat parameter buffer before the
  // forward first reads a weight below it (non-decreasing, the last call is
  // num_params()); every weight below `end` must be in place when it
  // returns. A worker uses it to start on the first layers while the rest of
  // the weights are still arriving (docs/design.md, Streaming).
  std::function<void(int64_t end)> need_weights;
};

// Called by backward() with an offset `begin` once the gradients of
// [begin, num_params()) are complete: backward writes them no more until the
// next zero_grads(). Non-increasing; the last call is 0. A worker uses it to
// push each layer's gradient while backward goes on with the layers below.
using GradientsFinal = std::function<void(int64_t begin)>;

struct LossStats {
  double loss_sum = 0.0;  // summed over counted target tokens
  int64_t tokens = 0;     // counted target tokens
  int64_t correct = 0;    // targets equal to the argmax of their logits
};

class Transformer {
 public:
  // src_vocab is ignored for decoder_only models. The backend must outlive the model.
  Transformer(const ModelConfig& cfg, int64_t src_vocab, int64_t tgt_vocab, Backend* backend);
  ~Transformer();
  Transformer(const Transformer&) = delete;
  Transformer& operator=(const Transformer&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const ParamTable& table() const { return table_; }
  Backend* backend() const { return be_; }
  int64_t num_params() const { return table_.total_numel(); }
  int64_t src_vocab() const { return src_vocab_; }
  int64_t tgt_vocab() const { return tgt_vocab_; }

  // Device buffers of num_params() floats.
  float* weights() { return weights_; }
  float* grads() { return grads_; }
  void zero_grads();
  void set_weights(const float* host);
  // Parts of the flat buffers: floats [begin, end).
  void set_weights(const float* host, int64_t begin, int64_t end);
  void get_grads(float* host, int64_t begin, int64_t end) const;
  void get_weights(float* host) const;
  void get_grads(float* host) const;
  // Fills the weights with the initial values of (seed, name).
  void init_weights(uint64_t seed);

  // Runs the model and the loss on a batch. With opt.train, saves what
  // backward() needs and prepares d(loss)/d(logits) scaled by grad_scale.
  LossStats forward(const Batch& batch, const ForwardOptions& opt);
  // Accumulates parameter gradients of the last train forward().
  void backward(const GradientsFinal& on_final = nullptr);

  // Logits (B*T, V) of the last forward or decoding step, on the host.
  std::vector<float> logits() const;
  // Device bytes of the last forward's activations and scratch. A train
  // forward keeps every sublayer's activations for backward; an inference
  // forward keeps only what decoding reads after it, the rest in two sets of
  // buffers that the sublayers take in turn (docs/design.md, Memory).
  size_t activation_bytes() const;

  // Incremental decoding, for inference (docs/design.md, Decoding). Each
  // self-attention keeps the keys and values of the positions seen so far,
  // and each cross-attention the keys and values of the encoder output, so
  // that a step computes one position per row, not the whole prefix.
  //
  // begin_decoding runs an inference forward over `prefix` (its sources, and
  // the first prefix.T decoder ids of every row: tgt_len must be T for all)
  // and keeps what later steps need, with room for `capacity` decoder
  // positions per row (prefix.T <= capacity <= max_len). logits() then holds
  // the prefix's (B*T, V). Another forward() ends the decoding.
  void begin_decoding(const Batch& prefix, int64_t capacity);
  // The same with the encoder's output given, (prefix.B, prefix.S, C) on the
  // host, instead of computed from prefix.src (whose lengths still mask the
  // positions past each row's source; they should hold zeros): each row's as
  // encoder_output gives it, padded.
  void begin_decoding(const Batch& prefix, int64_t capacity, const std::vector<float>& encoder_output);
  // Encoder-decoder: row `row`'s encoder output in the last inference forward
  // (evaluation's teacher-forced pass), its first `positions` positions of C
  // floats, on the host.
  std::vector<float> encoder_output(int64_t row, int64_t positions) const;
  // Appends one id per row at the next position; logits() then holds
  // (rows, V). The logits equal those of a forward over each row's whole
  // prefix, up to float rounding (the sums run over other shapes).
  void decode_step(const std::vector<int32_t>& ids);
  // Row r continues the history of row from[r]: any number of rows, each
  // from any row, repeats allowed (finished rows dropped, beams forked).
  void reorder_decoding(const std::vector<int32_t>& from);
  // Rows and positions of the decoding under way (0 when there is none).
  int64_t decoding_rows() const;
  int64_t decoded_positions() const;

  struct Impl;

 private:
  ModelConfig cfg_;
  int64_t src_vocab_, tgt_vocab_;
  Backend* be_;
  ParamTable table_;
  float* weights_ = nullptr;
  float* grads_ = nullptr;
  std::unique_ptr<Impl> impl_;
};

// The sinusoidal position table (max_len, C) of Vaswani et al.:
// pe[p, 2i] = sin(p / 10000^(2i/C)), pe[p, 2i+1] = cos(p / 10000^(2i/C)).
std::vector<float> sinusoidal_positions(int64_t max_len, int64_t C);

// The rotary angles of positions = rope, (max_len, D/2) each: position p and
// pair i (head columns i and i + D/2) turn by p * theta^(-2i/D), computed in
// double and rounded once.
struct RopeTables {
  std::vector<float> cos, sin;
};
RopeTables rope_tables(int64_t max_len, int64_t D, double theta);

}  // namespace pst
