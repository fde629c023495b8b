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
  std::unique_ptr<G2PCorpus> g2p;    // set for g2p
  std::unique_ptr<TextCorpus> text;  // set for lm
  std::unique_ptr<Dataset> train, valid, test;
  int64_t src_vocab = 0;  // 0 for lm
  int64_t tgt_vocab = 0;

  const Dataset& split(Split s) const;
};

// Loads and checks the data of a job; logs sizes and skipped lines/files.
Result<TaskData> load_task_data(const JobConfig& job);

// The data path of a job: data.path, or the task's Debian default.
std::string data_path(const JobConfig& job);

}  // namespace pst
