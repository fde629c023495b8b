#include <cstdio>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "model/param_table.h"
#include "worker/task_data.h"

namespace pst {

namespace {

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return fmt::format("{:.1f} {}", b, units[u]);
}

}  // namespace

int run_params(const ConfigArgs& args, bool list_tensors) {
  auto job = load_config(args.config, args.sets);
  if (!job.ok()) {
    spdlog::error("{}", job.status().message());
    return 2;
  }
  // Vocabulary sizes come from the data (G2P) or are fixed (bytes).
  int64_t src_vocab = 0, tgt_vocab = kByteVocab;
  if (job->data.task == Task::kLM) {
    auto tokenizer = job_tokenizer(*job);
    if (!tokenizer.ok()) {
      spdlog::error("{}", tokenizer.status().message());
      return 2;
    }
    tgt_vocab = tokenizer->vocab_size();
  }
  int64_t src_len = job->data.seq_len, tgt_len = job->data.seq_len;
  if (job->data.task == Task::kG2P) {
    auto corpus = load_g2p_corpus(*job);
    if (!corpus.ok()) {
      spdlog::error("{}", corpus.status().message());
      return 2;
    }
    src_vocab = corpus->letters.size();
    tgt_vocab = corpus->phones.size();
    double letters = 0, phones = 0, n = 0;
    for (const auto& w : corpus->train) {
      letters += static_cast<double>(word_symbols(w.word)) + 1;
      phones += static_cast<double>(w.prons[0].size()) + 1;
      n += 1;
    }
    src_len = static_cast<int64_t>(std::lround(letters / n));
    tgt_len = static_cast<int64_t>(std::lround(phones / n));
  }
  const ParamTable table = build_param_table(job->model, src_vocab, tgt_vocab);
  const ModelCost cost = model_cost(job->model, table, src_len, tgt_len);
  std::printf("%-12s %14s %8s\n", "component", "parameters", "share");
  for (int c = 0; c < 6; ++c) {
    std::printf("%-12s %14lld %7.2f%%\n", to_string(static_cast<Component>(c)), static_cast<long long>(cost.counts[c]),
                100.0 * static_cast<double>(cost.counts[c]) / static_cast<double>(cost.total));
  }
  std::printf("%-12s %14lld\n", "total", static_cast<long long>(cost.total));
  const double bytes = static_cast<double>(cost.total) * 4.0;
  std::printf("\nweights (fp32)            %s\n", human_bytes(bytes).c_str());
  std::printf("weights + Adam moments    %s\n", human_bytes(3 * bytes).c_str());
  std::printf("training FLOPs per token  %.3g  (forward %.3g; %s lengths %lld -> %lld)\n", cost.train_flops_per_token,
              cost.forward_flops_per_token, job->data.task == Task::kG2P ? "mean training" : "sequence",
              static_cast<long long>(src_len), static_cast<long long>(tgt_len));
  if (list_tensors) {
    std::printf("\n%-48s %-16s %-11s %s\n", "tensor", "shape", "component", "decay");
    for (const ParamSpec& p : table.params()) {
      std::string shape;
      for (size_t i = 0; i < p.shape.size(); ++i) {
        if (i) shape += 'x';
        shape += std::to_string(p.shape[i]);
      }
      std::printf("%-48s %-16s %-11s %s\n", p.name.c_str(), shape.c_str(), to_string(p.component),
                  decays(p, job->optim.decay_embeddings) ? "yes" : "no");
    }
  }
  return 0;
}

}  // namespace pst
