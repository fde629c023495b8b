// `pst tokenizer train`: a SentencePiece model for a language model's text.
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "core/cpus.h"
#include "core/timer.h"
#include "data/text.h"
#include "data/tokenizer.h"
#include "job/job.h"

namespace pst {

int run_tokenizer_train(const TokenizerArgs& args) {
  if (args.vocab < 260 || args.vocab > 1000000) {
    spdlog::error("--vocab {}: must be in [260, 10^6] (a model holds the 256 byte pieces besides its own)", args.vocab);
    return 2;
  }
  if (args.type != "bpe" && args.type != "unigram") {
    spdlog::error("--type {}: must be bpe or unigram", args.type);
    return 2;
  }
  auto corpus = args.whole ? load_text(args.data, Split::kTrain) : load_text(args.data);
  if (!corpus.ok()) {
    spdlog::error("{}", corpus.status().message());
    return 2;
  }
  spdlog::info("tokenizer: learning {} {} pieces from the {} training bytes of '{}'{}", args.vocab, args.type,
               corpus->train.size(), args.data, args.whole ? " (whole)" : " (its hash split's training part)");
  TokenizerTraining t;
  t.vocab = args.vocab;
  t.kind = args.type == "bpe" ? SentencePieceKind::kBpe : SentencePieceKind::kUnigram;
  t.threads = cpu_budget().cpus;
  Stopwatch watch;
  const Status s = train_sentencepiece(corpus->train, t, args.out);
  if (!s.ok()) {
    spdlog::error("{}", s.message());
    return exit_code(s);
  }
  auto tok = Tokenizer::sentencepiece_file(args.out);
  if (!tok.ok()) {
    spdlog::error("{}", tok.status().message());
    return 1;
  }
  const TokenStream stream = tokenize(*tok, corpus->train);
  spdlog::info("wrote {} in {:.1f}s: {} pieces, {:.2f} bytes per token on the training text", args.out, watch.seconds(),
               tok->vocab_size(),
               static_cast<double>(corpus->train.size()) / static_cast<double>(std::max<size_t>(1, stream.ids.size())));
  return 0;
}

}  // namespace pst
