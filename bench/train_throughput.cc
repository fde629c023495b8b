// Training throughput of pst on the decoder-only benchmark model of
// bench/compare_torch.sh: vocab 256, d_model 384, 6 layers, 6 heads,
// sequence 256, batch 8, pre-LN, GELU (tanh), learned positions, tied
// embeddings, biases, AdamW with clipping at 1.0. The whole training step
// runs as in `pst train` (forward, backward, push to the in-process server,
// which clips and applies AdamW, pull). Prints tokens/s and where the time
// goes. On CUDA the in-process server keeps its state on the GPU, as
// `pst train` does there.
//
// On the CPU it then prints the GEMM share (a second line, "gemm ..."): one
// more step with the backend's log of matrix products open, and the same
// products again as plain sgemm calls on the same shapes, in the same run:
// each of Backend::gemm's whole, by OpenBLAS on --threads threads; the
// attention's products of one head spread over --threads OpenMP threads,
// one OpenBLAS thread each, as the step runs them. It prints the step's
// GEMM time (in_step), the plain calls' (plain, the median of 3), their
// ratio (efficiency: 1 = the step's products run as fast as plain sgemm),
// and plain / step time (share: the part of a step that plain sgemm would
// take; 1 would be a step of products alone at sgemm's speed). The plain
// calls are fp32 whatever --matmul says: with bf16 products, efficiency is
// their speed-up over fp32 sgemm on the step's shapes.
//
// The same plain calls once more through oneDNN's fp32 matmul (Debian's
// libdnnl-dev, which the bf16 products use), each product set up before the
// clock starts, the same threads: "onednn_s", and "openblas/onednn" (above 1:
// oneDNN is the faster library for this step's shapes on this CPU).
// --blas onednn trains with train.blas = "onednn" (the step's float32
// products in oneDNN); the plain calls stay as described.
//
// A third line ("peak ...") gives the cores' measured float32 multiply-add
// peak on the same threads (core/fma_peak.h), the step's products as a
// fraction of it, and bound_tokens/s: the step's tokens/s were its products
// done at that peak and the rest of the step as measured, which no float32
// product library can beat on this CPU. With bf16 products the same against
// the cores' bf16 dot-product peak (AVX512_BF16), printed beside the float32
// one.
//
// --buffers staging hands the in-process server host copies of the
// gradient and weights, as pst's trainer did on the CPU before it handed
// every client the model's own buffers (--buffers model, the default:
// worker/trainer.cc, TrainerOptions::stage_buffers).
//
//   train_throughput [--threads N] [--steps N] [--warmup N] [--batch N]
//                    [--device cpu|cuda[:N]] [--matmul fp32|tf32|bf16] [--blas openblas|onednn]
//                    [--buffers model|staging]
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "core/cpus.h"
#include "core/fma_peak.h"
#include "core/memory.h"
#include "core/timer.h"
#include "data/dataset.h"
#include "data/text.h"
#include "model/backend.h"
#include "model/transformer.h"
#include "ps/local_client.h"
#include "ps/shard_optimizer.h"

using namespace pst;

namespace {

// Seconds of the logged products run again as plain calls (see the top of
// the file): `product(r, A, B, C)` computes one, `set_threads(n)` sets how
// many threads the library gives a whole product.
template <typename Product, typename Threads>
double replay_seconds(const std::vector<GemmRecord>& log, int threads, Product product, Threads set_threads) {
  size_t a = 0, b = 0, c = 0;
  for (const GemmRecord& r : log) {
    a = std::max(a, static_cast<size_t>(r.M * r.K));
    b = std::max(b, static_cast<size_t>(r.K * r.N));
    c = std::max(c, static_cast<size_t>(r.M * r.N));
  }
  std::vector<std::vector<float>> A(static_cast<size_t>(threads), std::vector<float>(a, 0.01f));
  std::vector<std::vector<float>> B(static_cast<size_t>(threads), std::vector<float>(b, 0.02f));
  std::vector<std::vector<float>> C(static_cast<size_t>(threads), std::vector<float>(c, 0.0f));
  std::vector<const GemmRecord*> per_thread;
  for (const GemmRecord& r : log)
    if (r.per_thread) per_thread.push_back(&r);
  Stopwatch sw;
  set_threads(threads);
  for (const GemmRecord& r : log)
    if (!r.per_thread) product(r, A[0].data(), B[0].data(), C[0].data());
  set_threads(1);
  const int64_t n = static_cast<int64_t>(per_thread.size());
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) {
    const size_t t = static_cast<size_t>(omp_get_thread_num());
    product(*per_thread[static_cast<size_t>(i)], A[t].data(), B[t].data(), C[t].data());
  }
  set_threads(threads);
  return sw.seconds();
}

void openblas_product(const GemmRecord& r, const float* A, const float* B, float* C) {
  cblas_sgemm(CblasRowMajor, r.ta ? CblasTrans : CblasNoTrans, r.tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(r.M), static_cast<blasint>(r.N), static_cast<blasint>(r.K), 1.0f, A,
              static_cast<blasint>(r.ta ? r.M : r.K), B, static_cast<blasint>(r.tb ? r.K : r.N), 0.0f, C,
              static_cast<blasint>(r.N));
}

double openblas_seconds(const std::vector<GemmRecord>& log, int threads) {
  return replay_seconds(log, threads, openblas_product, [](int n) { openblas_set_num_threads(n); });
}

// The same products through oneDNN's fp32 matmul: a primitive per shape,
// made before the clock starts with the threads it will run on (oneDNN
// plans a product for the threads it may use when it is made).
const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

class OneDnnReplay {
 public:
  OneDnnReplay(const std::vector<GemmRecord>& log, int threads) : log_(log), threads_(threads) {
    using dt = dnnl::memory::data_type;
    for (const GemmRecord& r : log) {
      if (made_.count(key(r))) continue;
      omp_set_num_threads(r.per_thread ? 1 : threads);
      const dnnl::memory::desc a({r.M, r.K}, dt::f32, r.ta ? dnnl::memory::dims{1, r.M} : dnnl::memory::dims{r.K, 1});
      const dnnl::memory::desc b({r.K, r.N}, dt::f32, r.tb ? dnnl::memory::dims{1, r.K} : dnnl::memory::dims{r.N, 1});
      const dnnl::memory::desc c({r.M, r.N}, dt::f32, dnnl::memory::dims{r.N, 1});
#if DNNL_VERSION_MAJOR >= 3
      dnnl::matmul::primitive_desc pd(cpu_engine(), a, b, c);
#else
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), cpu_engine());
#endif
      made_.emplace(key(r), Made{pd, dnnl::matmul(pd)});
      if (checked_.insert({r.ta, r.tb}).second) check(r);
    }
    omp_set_num_threads(threads);
  }
  double seconds() {
    return replay_seconds(
        log_, threads_, [this](const GemmRecord& r, float* A, float* B, float* C) { product(r, A, B, C); },
        [](int n) { omp_set_num_threads(n); });
  }

 private:
  void product(const GemmRecord& r, float* A, float* B, float* C) const {
    const Made& m = made_.at(key(r));
    const dnnl::engine& engine = cpu_engine();
    thread_local dnnl::stream stream(engine);
    dnnl::memory a(m.pd.src_desc(), engine, A), b(m.pd.weights_desc(), engine, B), c(m.pd.dst_desc(), engine, C);
    m.primitive.execute(stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    stream.wait();
  }
  // The two libraries compute the same product (one of each transposition),
  // so that the race is between equals.
  void check(const GemmRecord& r) const {
    std::vector<float> A(static_cast<size_t>(r.M * r.K)), B(static_cast<size_t>(r.K * r.N));
    std::mt19937 g(1);
    std::normal_distribution<float> draw;
    for (float& x : A) x = draw(g);
    for (float& x : B) x = draw(g);
    std::vector<float> mine(static_cast<size_t>(r.M * r.N)), blas(mine.size());
    product(r, A.data(), B.data(), mine.data());
    openblas_product(r, A.data(), B.data(), blas.data());
    double worst = 0;
    for (size_t i = 0; i < mine.size(); ++i) worst = std::max(worst, static_cast<double>(std::abs(mine[i] - blas[i])));
    // Sums of K products of N(0, 1) draws: about sqrt(K) in size, rounded.
    if (worst > 1e-5 * static_cast<double>(r.K)) {
      std::fprintf(stderr, "oneDNN and OpenBLAS differ by %g on a %s%s product %ldx%ldx%ld\n", worst, r.ta ? "T" : "N",
                   r.tb ? "T" : "N", static_cast<long>(r.M), static_cast<long>(r.N), static_cast<long>(r.K));
      std::exit(1);
    }
  }

  using Key = std::tuple<bool, bool, int64_t, int64_t, int64_t, bool>;
  struct Made {
    dnnl::matmul::primitive_desc pd;
    dnnl::matmul primitive;
  };
  static Key key(const GemmRecord& r) { return {r.ta, r.tb, r.M, r.N, r.K, r.per_thread}; }

  const std::vector<GemmRecord>& log_;
  const int threads_;
  std::map<Key, Made> made_;
  std::set<std::pair<bool, bool>> checked_;
};

}  // namespace

int main(int argc, char** argv) {
  restart_with_fitting_openblas_kernels();  // as pst does (core/cpus.h)
  keep_freed_memory();                      // as pst does (core/memory.h)
  int threads = 1, steps = 10, warmup = 2, batch = 8;
  std::string device = "cpu", matmul = "fp32", blas = "openblas", buffers = "model";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads"))
      threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--steps"))
      steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--warmup"))
      warmup = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch"))
      batch = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--device"))
      device = argv[i + 1];
    else if (!std::strcmp(argv[i], "--matmul"))
      matmul = argv[i + 1];
    else if (!std::strcmp(argv[i], "--blas"))
      blas = argv[i + 1];
    else if (!std::strcmp(argv[i], "--buffers"))
      buffers = argv[i + 1];
  }
  if (buffers != "model" && buffers != "staging") {
    std::fprintf(stderr, "--buffers must be model or staging, not %s\n", buffers.c_str());
    return 2;
  }
  // The device settings go through the job config's own parsing and checks.
  JobConfig dev_job;
  for (const std::string& set : {"train.device=" + device, "train.matmul=" + matmul, "train.blas=" + blas}) {
    const Status st = apply_override(dev_job, set);
    if (!st.ok()) {
      std::fprintf(stderr, "%s\n", st.to_string().c_str());
      return 2;
    }
  }
  auto spec = parse_device(dev_job.train.device);
  if (!spec.ok()) {
    std::fprintf(stderr, "%s\n", spec.status().to_string().c_str());
    return 2;
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
  job.data.batch_size = batch;
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
  const TokenStream stream = tokenize(Tokenizer(), bytes);
  TextDataset data(&stream, 256);
  BatchIterator it(&data, batch, 1);

  auto backend = make_backend(*spec, dev_job.train.matmul, threads, dev_job.train.blas);
  if (!backend.ok()) {
    std::fprintf(stderr, "%s\n", backend.status().to_string().c_str());
    return 2;
  }
  Backend* be = backend->get();
  const bool on_gpu = std::string(be->name()) == "cuda";
  Transformer model(m, 0, 256, be);
  HostBuffer w(be, static_cast<size_t>(model.num_params())), g(be, w.size());
  init_params(model.table(), 1, w.data());
  model.set_weights(w.data());
  ShardOptimizer server(job, model.table(), whole_tensors(model.table()), w.data(), on_gpu ? be : nullptr);
  const bool model_buffers = buffers == "model";
  // The model's own buffers: device pointers on a GPU, host memory on the CPU.
  LocalParameterClient client(&server, on_gpu && model_buffers);

  // A training forward pass over b with fresh gradients, as `pst train` runs it.
  auto forward = [&](const Batch& b) {
    model.zero_grads();
    ForwardOptions fo;
    fo.train = true;
    fo.grad_scale = 1.0f / static_cast<float>(b.tokens());
    model.forward(b, fo);
  };
  double t_data = 0, t_fwd = 0, t_bwd = 0, t_opt = 0, total = 0;
  int64_t tokens = 0;
  for (int step = 0; step < warmup + steps; ++step) {
    Stopwatch sw;
    const Batch b = it.next();
    const double d0 = sw.seconds();
    forward(b);
    const double d1 = sw.seconds();
    model.backward();
    be->synchronize();
    const double d2 = sw.seconds();
    if (model_buffers) {
      if (!client.push(step, b.tokens(), 0.0, model.grads()).ok()) return 1;
      if (!client.pull(step + 1, model.weights()).ok()) return 1;
      be->synchronize();
    } else {
      model.get_grads(g.data());
      if (!client.push(step, b.tokens(), 0.0, g.data()).ok()) return 1;
      if (!client.pull(step + 1, w.data()).ok()) return 1;
      model.set_weights(w.data());
    }
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
  if (on_gpu || matmul != "fp32" || blas != "openblas" || !model_buffers)
    std::printf("pst device=%s matmul=%s blas=%s buffers=%s batch=%d ", device.c_str(), matmul.c_str(), blas.c_str(),
                buffers.c_str(), batch);
  std::printf(
      "pst threads=%d steps=%d tokens/s=%.1f step_s=%.4f forward=%.1f%% backward=%.1f%% optimizer=%.1f%% data=%.1f%%\n",
      threads, steps, static_cast<double>(tokens) / total, total / steps, 100 * t_fwd / total, 100 * t_bwd / total,
      100 * t_opt / total, 100 * t_data / total);
  if (on_gpu) return 0;
  // The GEMM share: one more forward and backward with the log open.
  const Batch logged = it.next();
  start_gemm_log();
  forward(logged);
  model.backward();
  const std::vector<GemmRecord> log = stop_gemm_log();
  double gflop = 0, in_step = 0, per_thread = 0;
  for (const GemmRecord& r : log) {
    gflop += 2e-9 * static_cast<double>(r.M) * static_cast<double>(r.N) * static_cast<double>(r.K);
    (r.per_thread ? per_thread : in_step) += r.seconds;
  }
  in_step += per_thread / threads;  // the per-head products ran `threads` at a time
  // The two libraries alternate, 3 times each; the medians are compared.
  OneDnnReplay onednn_replay(log, threads);
  std::vector<double> plain, onednn;
  for (int rep = 0; rep < 3; ++rep) {
    plain.push_back(openblas_seconds(log, threads));
    onednn.push_back(onednn_replay.seconds());
  }
  std::sort(plain.begin(), plain.end());
  std::sort(onednn.begin(), onednn.end());
  const double step_s = total / steps;
  std::printf(
      "gemm products=%zu gflop/step=%.2f in_step_s=%.4f (%.1f GFLOP/s) plain_s=%.4f (%.1f GFLOP/s) "
      "efficiency=%.3f share=%.3f openblas=%s onednn_s=%.4f (%.1f GFLOP/s) openblas/onednn=%.3f\n",
      log.size(), gflop, in_step, gflop / in_step, plain[1], gflop / plain[1], plain[1] / in_step, plain[1] / step_s,
      openblas_get_corename(), onednn[1], gflop / onednn[1], plain[1] / onednn[1]);
  // The cores' peak on the same threads (float32 multiply-adds; with bf16
  // products their bf16 dot products, printed beside the float32 one, since a
  // CPU may run that instruction slower), and the tokens/s of this step were
  // its products done at that peak and the rest as measured: no library of
  // that precision can take the step past it.
  const FmaPeak peak = measure_fma_peak(threads);
  const double bf16_peak = matmul == "bf16" ? measure_bf16_dot_peak(threads) : 0.0;
  const double limit = matmul == "bf16" ? bf16_peak : peak.gflops;
  if (limit > 0) {
    std::printf("peak fma_gflops=%.1f isa=%s", peak.gflops, to_string(peak.isa));
    if (matmul == "bf16") std::printf(" bf16_dot_gflops=%.1f", bf16_peak);
    std::printf(" products_at=%.3f of_peak bound_tokens/s=%.1f\n", gflop / in_step / limit,
                static_cast<double>(tokens) / steps / (step_s - in_step + gflop / limit));
  }
  return 0;
}
