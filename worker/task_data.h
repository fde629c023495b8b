// The data of a job, loaded once: corpus, splits as Datasets, vocabulary sizes.
#pragma once

#include <memory>

#include "core/config.h"
#include "core/status.h"
#include "data/g2p.h"
#include "data/text.h"

namespace pst {

struct TaskData {
  Task task = Task::kG2P;
  std::unique_ptr<G2PCorpus> g2p;          // set for g2p
  std::unique_ptr<TextCorpus> text;        // set for lm
  Tokenizer tokenizer;                     // lm
  std::unique_ptr<TokenStream> tokens[3];  // lm: the splits as ids, by Split
  std::unique_ptr<Dataset> train, valid, test;
  int64_t src_vocab = 0;  // 0 for lm
  int64_t tgt_vocab = 0;

  const Dataset& split(Split s) const;
};

// What the data is loaded for: training needs a training split; evaluating
// a file of one's own (pst eval --data) may have none, and kEvaluateWhole
// reads data.path whole into the test split (no hash split).
enum class DataUse { kTrain, kEvaluate, kEvaluateWhole };

// Loads and checks the data of a job; logs sizes and skipped lines/files,
// and (for training) warns of a valid or test split left empty.
// An LM's tokenizer is data.tokenizer's, or `tokenizer` when given (the one
// a model file carries).
Result<TaskData> load_task_data(const JobConfig& job, DataUse use = DataUse::kTrain,
                                const Tokenizer* tokenizer = nullptr);
// data.tokenizer's tokenizer: bytes, or data.tokenizer_model read.
Result<Tokenizer> job_tokenizer(const JobConfig& job);

// The data path of a job: data.train, data.path, or the task's Debian default.
std::string data_path(const JobConfig& job);
// The job's data as log lines and errors name it: the path, or the files
// of data.train, data.valid and data.test.
std::string data_source(const JobConfig& job);

// A job's corpus, from data.path split by hash or from data.train, valid
// and test read whole (docs/design.md, Data); malformed lines are logged.
// G2P: a valid or test word also in data.train is named in a warning.
// `whole`: data_path(job) read whole into that split instead.
Result<G2PCorpus> load_g2p_corpus(const JobConfig& job, std::optional<Split> whole = std::nullopt);
Result<TextCorpus> load_text_corpus(const JobConfig& job, std::optional<Split> whole = std::nullopt);

}  // namespace pst
