// Training throughput of pst on the decoder-only benchmark model of
// bench/compare_torch.sh: vocab 256, d_model 384, 6 layers, 6 heads,
// sequence 256, batch 8, pre-LN, GELU (tanh), learned positions, tied
// embeddings, biases, AdamW with clipping at 1.0. The whole training step
// runs as in `pst train` (forward, backward, push to the in-process server,
// which clips and applies AdamW, pull). Prints tokens/s and where the time
// goes.
//
//   train_throughput [--threads N] [--steps N] [--warmup N]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/timer.h"
#include "data/dataset.h"
#include "data/text.h"
#include "model/backend.h"
#include "model/transformer.h"
#include "ps/local_client.h"
#include "ps/server.h"

using namespace pst;

int main(int argc, char** argv) {
  int threads = 1, steps = 10, warmup = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--warmup")) warmup = std::atoi(argv[i + 1]);
  }
  JobConfig job;
  ModelConfig& m = job.model;
  m.kind = ModelKind::kDecoderOnly;
  m.d_model = 384;
  m.heads = 6;
  m.ffn_dim = 4 * 384;
  m.decoder_layers = 6;
  m.norm = NormPlacement::kPre;
  m.activation = Activation::kGeluTanh;
  m.positions = Positions::kLearned;
  m.max_len = 256;
  m.tie_embeddings = true;
  m.bias = true;
  m.scale_embeddings = false;
  m.init = InitScheme::kNormal;
  m.dropout = m.attention_dropout = m.embedding_dropout = 0.0;
  job.data.task = Task::kLM;
  job.data.seq_len = 256;
  job.data.batch_size = 8;
  job.optim.lr = 3e-4;
  job.optim.clip_norm = 1.0;
  job.train.label_smoothing = 0.0;
  job.train.steps = warmup + steps;

  // Real text from Debian's fortunes when present, random bytes otherwise.
  std::vector<uint8_t> bytes;
  auto corpus = load_text(kDefaultTextPath);
  if (corpus.ok()) {
    bytes = corpus->train;
  } else {
    for (int i = 0; i < 1 << 20; ++i) bytes.push_back(static_cast<uint8_t>((i * 2654435761u) >> 24));
  }
  TextDataset data(&bytes, 256);
  BatchIterator it(&data, 8, 1);

  auto be = make_cpu_backend(threads);
  Transformer model(m, 0, 256, be.get());
  std::vector<float> w(static_cast<size_t>(model.num_params())), g(w.size());
  init_params(model.table(), 1, w.data());
  model.set_weights(w.data());
  ShardOptimizer server(job, model.table(), whole_tensors(model.table()), w.data());
  LocalParameterClient client(&server);

  double t_data = 0, t_fwd = 0, t_bwd = 0, t_opt = 0, total = 0;
  int64_t tokens = 0;
  for (int step = 0; step < warmup + steps; ++step) {
    Stopwatch sw;
    const Batch b = it.next();
    const double d0 = sw.seconds();
    model.zero_grads();
    ForwardOptions fo;
    fo.train = true;
    fo.grad_scale = 1.0f / static_cast<float>(b.tokens());
    model.forward(b, fo);
    const double d1 = sw.seconds();
    model.backward();
    const double d2 = sw.seconds();
    model.get_grads(g.data());
    if (!client.push(step, b.tokens(), 0.0, g.data()).ok()) return 1;
    if (!client.pull(step + 1, w.data()).ok()) return 1;
    model.set_weights(w.data());
    const double d3 = sw.seconds();
    if (step >= warmup) {
      t_data += d0;
      t_fwd += d1 - d0;
      t_bwd += d2 - d1;
      t_opt += d3 - d2;
      total += d3;
      tokens += b.tokens();
    }
  }
  std::printf("pst threads=%d steps=%d tokens/s=%.1f step_s=%.4f forward=%.1f%% backward=%.1f%% optimizer=%.1f%% data=%.1f%%\n",
              threads, steps, static_cast<double>(tokens) / total, total / steps, 100 * t_fwd / total,
              100 * t_bwd / total, 100 * t_opt / total, 100 * t_data / total);
  return 0;
}
