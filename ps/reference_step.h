// A few training steps on one fixed batch, recorded for comparison with
// PyTorch: `pst debug grads` writes them, tests/reference/ checks them, and
// the C++ fixture tests recompute them.
#pragma once

#include <vector>

#include "core/batch.h"
#include "core/config.h"
#include "core/safetensors.h"
#include "model/transformer.h"

namespace pst {

constexpr int kReferenceSteps = 3;

struct ReferenceStep {
  double loss = 0;                // first step: mean loss per target token (with label smoothing)
  std::vector<float> logits;      // first step: (B*T, V)
  std::vector<float> grads;       // first step: flat gradient of the mean loss
  std::vector<float> after;       // flat weights after `steps` optimizer steps on the batch
  std::vector<double> lr;         // per step
  std::vector<double> grad_norm;  // per step, before clipping
};

// Runs `steps` steps of forward, backward and the job's optimizer (in-process
// server) on the same batch, starting from the model's current weights.
ReferenceStep run_reference_step(const JobConfig& job, Transformer& model, const Batch& batch, int steps);

// Batch <-> safetensors: src, src_len, tgt_in, tgt_out, tgt_len as I32.
void add_batch(SafetensorsFile& f, const Batch& b);
Result<Batch> batch_from(const SafetensorsFile& f);

// "loss" [1], "logits" [B, T, V], "grad/<name>", "after/<name>", "lr" [K], "grad_norm" [K].
SafetensorsFile reference_step_file(const ParamTable& table, const ReferenceStep& r, const Batch& batch, int64_t vocab);

}  // namespace pst
