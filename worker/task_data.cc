#include "worker/task_data.h"

#include <tuple>

#include <spdlog/spdlog.h>

namespace pst {

const Dataset& TaskData::split(Split s) const {
  return s == Split::kTrain ? *train : (s == Split::kValid ? *valid : *test);
}

std::string data_path(const JobConfig& job) {
  if (!job.data.path.empty()) return job.data.path;
  return job.data.task == Task::kG2P ? kDefaultCmudictPath : kDefaultTextPath;
}

Result<TaskData> load_task_data(const JobConfig& job) {
  TaskData d;
  d.task = job.data.task;
  const std::string path = data_path(job);
  if (d.task == Task::kG2P) {
    PST_ASSIGN_OR_RETURN(G2PCorpus corpus, load_lexicon(path, job.data.format, job.data.max_examples));
    d.g2p = std::make_unique<G2PCorpus>(std::move(corpus));
    if (d.g2p->skipped_lines > 0)
      spdlog::warn("{}: skipped {} malformed lines (first at line {})", path, d.g2p->skipped_lines,
                   d.g2p->first_skipped_line);
    d.train = std::make_unique<G2PDataset>(d.g2p.get(), Split::kTrain);
    d.valid = std::make_unique<G2PDataset>(d.g2p.get(), Split::kValid);
    d.test = std::make_unique<G2PDataset>(d.g2p.get(), Split::kTest);
    d.src_vocab = d.g2p->letters.size();
    d.tgt_vocab = d.g2p->phones.size();
    spdlog::info("data: {} ({} format) words ({} train / {} valid / {} test), {} letters, {} phones", path,
                 to_string(d.g2p->format), d.g2p->train.size(), d.g2p->valid.size(), d.g2p->test.size(),
                 d.src_vocab - 4, d.tgt_vocab - 4);
    int64_t longest = 0;
    for (Split s : {Split::kTrain, Split::kValid, Split::kTest})
      for (const G2PWord& w : d.g2p->split(s)) {
        longest = std::max<int64_t>(longest, word_symbols(w.word) + 1);
        for (const auto& p : w.prons) longest = std::max<int64_t>(longest, static_cast<int64_t>(p.size()) + 1);
      }
    if (longest > job.model.max_len)
      return invalid_argument("model.max_len = {} is shorter than the longest sequence in '{}' ({}, with </s>)",
                              job.model.max_len, path, longest);
  } else {
    PST_ASSIGN_OR_RETURN(TextCorpus corpus, load_text(path));
    d.text = std::make_unique<TextCorpus>(std::move(corpus));
    d.train = std::make_unique<TextDataset>(&d.text->train, job.data.seq_len, job.data.max_examples);
    d.valid = std::make_unique<TextDataset>(&d.text->valid, job.data.seq_len);
    d.test = std::make_unique<TextDataset>(&d.text->test, job.data.seq_len);
    d.tgt_vocab = kByteVocab;
    spdlog::info("data: {} ({} files, {} skipped): {} / {} / {} bytes train / valid / test", path, d.text->files.size(),
                 d.text->skipped_files, d.text->train.size(), d.text->valid.size(), d.text->test.size());
    if (d.train->size() == 0)
      return invalid_argument("data '{}': fewer training bytes ({}) than data.seq_len + 1 = {}", path,
                              d.text->train.size(), job.data.seq_len + 1);
    // A small corpus may leave a split without one window: say so, rather
    // than skip its evaluation silently.
    for (const auto& [name, set, bytes] : {std::tuple{"valid", d.valid.get(), d.text->valid.size()},
                                           std::tuple{"test", d.test.get(), d.text->test.size()}})
      if (set->size() == 0)
        spdlog::warn(
            "data '{}': the {} split has {} bytes, fewer than data.seq_len + 1 = {}: it will not be evaluated "
            "(splits take 4 KiB blocks by hash; more text or a shorter seq_len fills them)",
            path, name, bytes, job.data.seq_len + 1);
  }
  return d;
}

}  // namespace pst
