#include "ps/reference_step.h"

#include "ps/shard_optimizer.h"

namespace pst {

ReferenceStep run_reference_step(const JobConfig& job, Transformer& model, const Batch& batch, int steps) {
  ReferenceStep r;
  const int64_t n = model.num_params();
  std::vector<float> weights(static_cast<size_t>(n)), grads(static_cast<size_t>(n));
  model.get_weights(weights.data());
  ShardOptimizer server(job, model.table(), whole_tensors(model.table()), weights.data());
  const int64_t tokens = batch.tokens();
  for (int k = 0; k < steps; ++k) {
    model.zero_grads();
    ForwardOptions fo;
    fo.train = true;
    fo.grad_scale = 1.0f / static_cast<float>(tokens);
    fo.label_smoothing = static_cast<float>(job.train.label_smoothing);
    fo.seed = static_cast<uint64_t>(job.train.seed);
    fo.step = static_cast<uint64_t>(k);
    const LossStats ls = model.forward(batch, fo);
    model.backward();
    model.get_grads(grads.data());
    if (k == 0) {
      r.loss = ls.loss_sum / static_cast<double>(tokens);
      r.logits = model.logits();
      r.grads = grads;
    }
    server.add_push(grads.data(), tokens, ls.loss_sum);
    const GradStats stats = server.reduce();
    const StepReport rep = server.apply(stats);
    r.lr.push_back(rep.lr);
    r.grad_norm.push_back(rep.grad_norm);
    server.copy_weights(weights.data());
    model.set_weights(weights.data());
  }
  r.after = weights;
  return r;
}

void add_batch(SafetensorsFile& f, const Batch& b) {
  if (b.S > 0) {
    f.add_i32("src", {b.B, b.S}, b.src.data());
    f.add_i32("src_len", {b.B}, b.src_len.data());
  }
  f.add_i32("tgt_in", {b.B, b.T}, b.tgt_in.data());
  f.add_i32("tgt_out", {b.B, b.T}, b.tgt_out.data());
  f.add_i32("tgt_len", {b.B}, b.tgt_len.data());
}

Result<Batch> batch_from(const SafetensorsFile& f) {
  Batch b;
  const StoredTensor* tin = f.find("tgt_in");
  const StoredTensor* tout = f.find("tgt_out");
  const StoredTensor* tlen = f.find("tgt_len");
  if (!tin || !tout || !tlen || tin->dtype != "I32" || tin->shape.size() != 2 || tout->shape != tin->shape ||
      tlen->dtype != "I32" || tout->dtype != "I32")
    return data_loss("batch file: needs I32 tgt_in, tgt_out (B, T) and tgt_len (B)");
  b.B = tin->shape[0];
  b.T = tin->shape[1];
  b.tgt_in = tin->to_i32();
  b.tgt_out = tout->to_i32();
  b.tgt_len = tlen->to_i32();
  if (const StoredTensor* src = f.find("src")) {
    const StoredTensor* slen = f.find("src_len");
    if (!slen || src->dtype != "I32" || src->shape.size() != 2 || src->shape[0] != b.B)
      return data_loss("batch file: src must be I32 (B, S) with src_len (B)");
    b.S = src->shape[1];
    b.src = src->to_i32();
    b.src_len = slen->to_i32();
  }
  return b;
}

SafetensorsFile reference_step_file(const ParamTable& table, const ReferenceStep& r, const Batch& batch,
                                    int64_t vocab) {
  SafetensorsFile f;
  const float loss = static_cast<float>(r.loss);
  f.add_f32("loss", {1}, &loss);
  f.add_f32("logits", {batch.B, batch.T, vocab}, r.logits.data());
  for (const ParamSpec& p : table.params()) {
    f.add_f32("grad/" + p.name, p.shape, r.grads.data() + p.offset);
    f.add_f32("after/" + p.name, p.shape, r.after.data() + p.offset);
  }
  std::vector<float> lr(r.lr.begin(), r.lr.end()), gn(r.grad_norm.begin(), r.grad_norm.end());
  f.add_f32("lr", {static_cast<int64_t>(lr.size())}, lr.data());
  f.add_f32("grad_norm", {static_cast<int64_t>(gn.size())}, gn.data());
  return f;
}

}  // namespace pst
