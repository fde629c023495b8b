// Grapheme-to-phoneme data (docs/design.md, Data): a pronunciation lexicon,
// by default CMUdict as Debian's festlex-cmu ships it, or a user's in CMU's
// cmudict.dict format or as word<TAB>phones. Words are UTF-8, lowercased
// (ASCII letters), and read as their code points ("letters"); every distinct
// pronunciation of a word is kept; the split is fixed by MD5 of the word so
// results compare across tools.
#pragma once

#include <cstdint>
#include <istream>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
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
  LexiconFormat format = LexiconFormat::kAuto;  // as read (detected when auto)
  Vocabulary letters;                           // source vocabulary, built from the training words
  Vocabulary phones;                            // target vocabulary, built from the training pronunciations
  int64_t lines = 0;
  int64_t skipped_lines = 0;       // malformed lines skipped
  int64_t first_skipped_line = 0;  // 1-based, 0 if none

  const std::vector<G2PWord>& split(Split s) const;
  std::vector<G2PWord>& split(Split s);
};

// Reads a lexicon. Lines that are blank or start with ';' or '#' are
// comments. With kAuto the first entry decides the format: Festival's when
// it starts with ("; word<TAB>phones when it holds a tab; cmudict.dict
// otherwise. Missing or empty files, files with no valid entry, or with more
// than 1% malformed lines are errors that name the file, the first bad line
// and the format expected; fewer malformed lines are skipped and counted.
// max_train_words > 0 keeps only the first N training words. `whole` puts
// every word into that split instead of splitting by hash (a file given per
// split). The vocabularies come from the training words (none may fall
// there: whether that is an error is the caller's call).
Result<G2PCorpus> load_lexicon(const std::string& path, LexiconFormat format = LexiconFormat::kAuto,
                               int64_t max_train_words = 0, std::optional<Split> whole = std::nullopt);
// The same from a stream; `path` names it in errors.
Result<G2PCorpus> read_lexicon(std::istream& in, const std::string& path, LexiconFormat format = LexiconFormat::kAuto,
                               int64_t max_train_words = 0, std::optional<Split> whole = std::nullopt);

// One entry line of each format; false if it is malformed.
// Festival: ("word" pos (((ph ph) 1) ((ph) 0))), stress digits dropped.
bool parse_festival_line(const std::string& line, std::string* word, std::vector<std::string>* phones);
// cmudict.dict: word PH1 PH2 ... [# comment], a variant written word(2);
// ARPAbet phones lowercased without their stress digits, as from Festival's.
bool parse_cmudict_dict_line(const std::string& line, std::string* word, std::vector<std::string>* phones);
// word<TAB>phones: phones separated by spaces, kept as written (IPA or any
// UTF-8 symbols), except the specials' names (<pad> <s> </s> <unk>).
bool parse_tsv_line(const std::string& line, std::string* word, std::vector<std::string>* phones);
bool parse_lexicon_line(LexiconFormat format, const std::string& line, std::string* word,
                        std::vector<std::string>* phones);
LexiconFormat detect_lexicon_format(const std::string& entry);

// Letters (code points) of a word read from a lexicon (valid UTF-8).
int64_t word_symbols(const std::string& word);
// A word's letter ids (<unk> for letters outside the vocabulary), then </s>.
std::vector<int32_t> encode_letters(const Vocabulary& letters, const std::string& word);

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
