// Grapheme-to-phoneme data from CMUdict as Debian's festlex-cmu ships it
// (docs/design.md, Data): lowercased letters -> phones, syllable brackets and stress
// digits stripped, every distinct pronunciation of a word kept, and a split
// fixed by MD5 of the word so results compare across tools.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/dataset.h"
#include "data/vocab.h"

namespace pst {

constexpr const char* kDefaultCmudictPath = "/usr/share/festival/dicts/cmu/cmudict-0.4.out";

struct G2PWord {
  std::string word;
  std::vector<std::vector<std::string>> prons;  // distinct, in file order
};

enum class Split { kTrain, kValid, kTest };
const char* to_string(Split s);

// MD5 of the word read as a 128-bit big-endian integer, mod 100.
int split_bucket(const std::string& word);
// < 90 train, 90..94 valid, >= 95 test.
Split split_of(const std::string& word);

struct G2PCorpus {
  std::vector<G2PWord> train, valid, test;
  Vocabulary letters;  // source vocabulary, built from the training words
  Vocabulary phones;   // target vocabulary, built from the training pronunciations
  int64_t lines = 0;
  int64_t skipped_lines = 0;       // malformed lines skipped
  int64_t first_skipped_line = 0;  // 1-based, 0 if none

  const std::vector<G2PWord>& split(Split s) const;
};

// Parses a festival-format CMUdict file. Missing or empty files, files with
// no valid entry, or with more than 1% malformed lines are errors that name
// the file and the first bad line; fewer malformed lines are skipped and
// counted. max_train_words > 0 keeps only the first N training words.
Result<G2PCorpus> load_cmudict(const std::string& path, int64_t max_train_words = 0);

// Parses one entry line; returns false if it is malformed.
bool parse_cmudict_line(const std::string& line, std::string* word, std::vector<std::string>* phones);

// The examples of one split: one per (word, pronunciation). Source: letters
// then </s>; decoder input: <s> then phones; targets: phones then </s>.
class G2PDataset final : public Dataset {
 public:
  G2PDataset(const G2PCorpus* corpus, Split split);
  int64_t size() const override { return static_cast<int64_t>(refs_.size()); }
  Example get(int64_t i) const override;
  int64_t length_key(int64_t i) const override;
  // The word index (into corpus.split(split)) of example i.
  int64_t word_of(int64_t i) const { return refs_[static_cast<size_t>(i)].first; }

  std::vector<int32_t> encode_word(const std::string& word) const;

 private:
  const G2PCorpus* corpus_;
  const std::vector<G2PWord>* words_;
  std::vector<std::pair<int64_t, int64_t>> refs_;  // (word, pron)
};

}  // namespace pst
