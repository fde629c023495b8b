// Byte-level language-model data (docs/design.md, Data): the bytes of text files,
// split into train/valid/test by 4 KiB blocks whose bucket is MD5 of
// "<file name>:<block index>" mod 100 (< 90 train, 90..94 valid, >= 95 test).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/dataset.h"
#include "data/g2p.h"
#include "data/tokenizer.h"

namespace pst {

constexpr const char* kDefaultTextPath = "/usr/share/games/fortunes";
constexpr int64_t kTextBlockBytes = 4096;
constexpr int64_t kByteVocab = 256;

struct TextCorpus {
  std::vector<uint8_t> train, valid, test;
  std::vector<std::string> files;  // the files read, in order
  int64_t skipped_files = 0;       // binary files (NUL bytes) and symbolic links in a directory

  const std::vector<uint8_t>& split(Split s) const;
  std::vector<uint8_t>& split(Split s);
};

// path: a text file, or a directory whose regular text files (no NUL byte;
// symbolic links skipped) are read in name order. A missing path, an empty
// corpus or a named file that is binary is an error naming the path (an
// empty training split is not: that is the caller's call).
// `whole` puts every byte into that split instead of splitting by blocks (a
// path given per split).
Result<TextCorpus> load_text(const std::string& path, std::optional<Split> whole = std::nullopt);

// A split of a corpus as token ids, with the bytes of text the ids cover:
// ids [0, i) cover byte_prefix[i] bytes (byte_prefix has ids.size() + 1 entries).
struct TokenStream {
  std::vector<int32_t> ids;
  std::vector<int64_t> byte_prefix{0};
};
TokenStream tokenize(const Tokenizer& tokenizer, const std::vector<uint8_t>& text);

// Non-overlapping windows of seq_len + 1 tokens (stride seq_len): input the
// first seq_len, targets the last seq_len.
class TextDataset final : public Dataset {
 public:
  TextDataset(const TokenStream* tokens, int64_t seq_len, int64_t max_examples = 0);
  int64_t size() const override { return windows_; }
  Example get(int64_t i) const override;
  int64_t length_key(int64_t) const override { return 0; }
  int64_t target_bytes(int64_t i) const override;

 private:
  const TokenStream* tokens_;
  int64_t seq_len_;
  int64_t windows_;
};

}  // namespace pst
