#include "worker/task_data.h"

#include <algorithm>
#include <unordered_set>

#include <spdlog/spdlog.h>

namespace pst {

const Dataset& TaskData::split(Split s) const {
  return s == Split::kTrain ? *train : (s == Split::kValid ? *valid : *test);
}

std::string data_path(const JobConfig& job) {
  if (!job.data.train.empty()) return job.data.train;
  if (!job.data.path.empty()) return job.data.path;
  return job.data.task == Task::kG2P ? kDefaultCmudictPath : kDefaultTextPath;
}

std::string data_source(const JobConfig& job) {
  const DataConfig& d = job.data;
  if (d.train.empty()) return fmt::format("'{}'", data_path(job));
  std::string s = fmt::format("data.train '{}'", d.train);
  for (const auto& [key, path] : {std::pair{"valid", d.valid}, std::pair{"test", d.test}})
    s += path.empty() ? fmt::format(", no data.{}", key) : fmt::format(", data.{} '{}'", key, path);
  return s;
}

namespace {

// The files given for the valid and test splits (data.valid, data.test).
std::vector<std::pair<Split, std::string>> held_out_files(const DataConfig& d) {
  std::vector<std::pair<Split, std::string>> out;
  for (const auto& [s, path] : {std::pair{Split::kValid, d.valid}, std::pair{Split::kTest, d.test}})
    if (!path.empty()) out.emplace_back(s, path);
  return out;
}

Result<G2PCorpus> load_lexicon_logged(const std::string& path, const DataConfig& d, int64_t max_words,
                                      std::optional<Split> whole) {
  PST_ASSIGN_OR_RETURN(G2PCorpus c, load_lexicon(path, d.format, max_words, whole));
  if (c.skipped_lines > 0)
    spdlog::warn("{}: skipped {} malformed lines (first at line {})", path, c.skipped_lines, c.first_skipped_line);
  return c;
}

}  // namespace

Result<G2PCorpus> load_g2p_corpus(const JobConfig& job, std::optional<Split> whole) {
  const DataConfig& d = job.data;
  if (whole) return load_lexicon_logged(data_path(job), d, 0, whole);
  if (d.train.empty()) return load_lexicon_logged(data_path(job), d, d.max_examples, std::nullopt);
  PST_ASSIGN_OR_RETURN(G2PCorpus corpus, load_lexicon_logged(d.train, d, d.max_examples, Split::kTrain));
  std::unordered_set<std::string> trained;
  for (const G2PWord& w : corpus.train) trained.insert(w.word);
  for (const auto& [s, path] : held_out_files(d)) {
    PST_ASSIGN_OR_RETURN(G2PCorpus part, load_lexicon_logged(path, d, 0, s));
    auto& words = corpus.split(s);
    words = std::move(part.split(s));
    const auto shared =
        std::count_if(words.begin(), words.end(), [&](const G2PWord& w) { return trained.count(w.word) > 0; });
    if (shared > 0)
      spdlog::warn(
          "data.{} '{}': {} of its {} words are also in data.train '{}'; their scores measure recall, "
          "not generalization",
          to_string(s), path, shared, words.size(), d.train);
  }
  return corpus;
}

Result<TextCorpus> load_text_corpus(const JobConfig& job, std::optional<Split> whole) {
  const DataConfig& d = job.data;
  if (whole || d.train.empty()) return load_text(data_path(job), whole);
  PST_ASSIGN_OR_RETURN(TextCorpus corpus, load_text(d.train, Split::kTrain));
  for (const auto& [s, path] : held_out_files(d)) {
    PST_ASSIGN_OR_RETURN(TextCorpus part, load_text(path, s));
    corpus.split(s) = std::move(part.split(s));
    corpus.files.insert(corpus.files.end(), part.files.begin(), part.files.end());
    corpus.skipped_files += part.skipped_files;
  }
  return corpus;
}

Result<Tokenizer> job_tokenizer(const JobConfig& job) {
  if (job.data.tokenizer == TokenizerKind::kBytes) return Tokenizer();
  return Tokenizer::sentencepiece_file(job.data.tokenizer_model);
}

Result<TaskData> load_task_data(const JobConfig& job, DataUse use, const Tokenizer* tokenizer) {
  TaskData d;
  d.task = job.data.task;
  const std::optional<Split> whole = use == DataUse::kEvaluateWhole ? std::optional<Split>(Split::kTest) : std::nullopt;
  const std::string source = whole ? fmt::format("'{}' (whole)", data_path(job)) : data_source(job);
  if (d.task == Task::kG2P) {
    PST_ASSIGN_OR_RETURN(G2PCorpus corpus, load_g2p_corpus(job, whole));
    d.g2p = std::make_unique<G2PCorpus>(std::move(corpus));
    d.train = std::make_unique<G2PDataset>(d.g2p.get(), Split::kTrain);
    d.valid = std::make_unique<G2PDataset>(d.g2p.get(), Split::kValid);
    d.test = std::make_unique<G2PDataset>(d.g2p.get(), Split::kTest);
    d.src_vocab = d.g2p->letters.size();
    d.tgt_vocab = d.g2p->phones.size();
    spdlog::info("data: {} ({} format) words ({} train / {} valid / {} test), {} letters, {} phones", source,
                 to_string(d.g2p->format), d.g2p->train.size(), d.g2p->valid.size(), d.g2p->test.size(),
                 d.src_vocab - 4, d.tgt_vocab - 4);
    if (d.train->size() == 0 && use == DataUse::kTrain)
      return invalid_argument("data {}: no word falls in the training split (words take it by hash: 90%)", source);
    int64_t longest = 0;
    for (Split s : {Split::kTrain, Split::kValid, Split::kTest})
      for (const G2PWord& w : d.g2p->split(s)) {
        longest = std::max<int64_t>(longest, word_symbols(w.word) + 1);
        for (const auto& p : w.prons) longest = std::max<int64_t>(longest, static_cast<int64_t>(p.size()) + 1);
      }
    if (longest > job.model.max_len)
      return invalid_argument("model.max_len = {} is shorter than the longest sequence in {} ({}, with </s>)",
                              job.model.max_len, source, longest);
  } else {
    PST_ASSIGN_OR_RETURN(TextCorpus corpus, load_text_corpus(job, whole));
    d.text = std::make_unique<TextCorpus>(std::move(corpus));
    if (tokenizer) {
      d.tokenizer = *tokenizer;
    } else {
      PST_ASSIGN_OR_RETURN(d.tokenizer, job_tokenizer(job));
    }
    for (Split s : {Split::kTrain, Split::kValid, Split::kTest})
      d.tokens[static_cast<int>(s)] = std::make_unique<TokenStream>(tokenize(d.tokenizer, d.text->split(s)));
    auto stream = [&](Split s) { return d.tokens[static_cast<int>(s)].get(); };
    d.train = std::make_unique<TextDataset>(stream(Split::kTrain), job.data.seq_len, job.data.max_examples);
    d.valid = std::make_unique<TextDataset>(stream(Split::kValid), job.data.seq_len);
    d.test = std::make_unique<TextDataset>(stream(Split::kTest), job.data.seq_len);
    d.tgt_vocab = d.tokenizer.vocab_size();
    spdlog::info("data: {} ({} files, {} skipped): {} / {} / {} bytes train / valid / test", source,
                 d.text->files.size(), d.text->skipped_files, d.text->train.size(), d.text->valid.size(),
                 d.text->test.size());
    if (!d.tokenizer.is_bytes())
      spdlog::info("data: SentencePiece tokens, {} pieces: {} / {} / {} train / valid / test ({:.2f} bytes per token)",
                   d.tgt_vocab, stream(Split::kTrain)->ids.size(), stream(Split::kValid)->ids.size(),
                   stream(Split::kTest)->ids.size(),
                   static_cast<double>(d.text->train.size()) /
                       static_cast<double>(std::max<size_t>(1, stream(Split::kTrain)->ids.size())));
    if (d.train->size() == 0 && use == DataUse::kTrain)
      return invalid_argument("data {}: fewer training tokens ({}) than data.seq_len + 1 = {}", source,
                              stream(Split::kTrain)->ids.size(), job.data.seq_len + 1);
  }
  // A small corpus, or no file for a split, leaves it without an example:
  // say so, rather than skip its evaluation silently.
  if (use != DataUse::kTrain) return d;
  const bool explicit_files = !job.data.train.empty();
  for (Split s : {Split::kValid, Split::kTest}) {
    if (d.split(s).size() > 0) continue;
    const std::string& file = s == Split::kValid ? job.data.valid : job.data.test;
    std::string why;
    if (explicit_files && file.empty()) {
      why = fmt::format("no data.{} is given", to_string(s));
    } else if (explicit_files) {
      why = d.task == Task::kLM
                ? fmt::format("'{}' has fewer bytes than data.seq_len + 1 = {}", file, job.data.seq_len + 1)
                : fmt::format("'{}' has no word", file);
    } else {
      why = d.task == Task::kLM
                ? fmt::format(
                      "it has {} bytes, fewer than data.seq_len + 1 = {} (splits take 4 KiB blocks by hash; "
                      "more text or a shorter seq_len fills them)",
                      d.text->split(s).size(), job.data.seq_len + 1)
                : "no word of the lexicon falls in it (splits take words by hash: 5% each)";
    }
    spdlog::warn("data {}: the {} split is empty, so it will not be evaluated: {}", source, to_string(s), why);
  }
  return d;
}

}  // namespace pst
