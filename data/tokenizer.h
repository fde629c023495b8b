// A language model's tokenizer (docs/design.md, Tokenizers): bytes (id = byte
// value, 256 ids) or a SentencePiece model (BPE or unigram, Kudo and
// Richardson 2018) from Debian's libsentencepiece. Text is encoded line by
// line with a newline token between lines, so generated text keeps its line
// breaks; each id comes with the number of bytes of the text it stands for,
// so that bits per byte are measured on the text whatever the tokenizer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace pst {

class Tokenizer {
 public:
  // The byte tokenizer.
  Tokenizer();
  // A SentencePiece model from its serialized bytes (a .model file's
  // contents); `what` names it in errors.
  static Result<Tokenizer> sentencepiece(const std::string& serialized, const std::string& what);
  static Result<Tokenizer> sentencepiece_file(const std::string& path);

  bool is_bytes() const { return sp_ == nullptr; }
  const char* kind() const { return is_bytes() ? "bytes" : "sentencepiece"; }
  int64_t vocab_size() const;
  // The ids of `text` and, per id, the bytes of `text` it covers (they sum
  // to text.size() for the byte tokenizer and for SentencePiece models
  // trained by `pst tokenizer train`, whose normalisation is the identity).
  void encode(std::string_view text, std::vector<int32_t>* ids, std::vector<int32_t>* bytes) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  // The id of a line break (generation's empty prompt).
  int32_t newline_id() const { return newline_; }
  // The SentencePiece model's bytes; empty for the byte tokenizer.
  const std::string& serialized() const { return serialized_; }

 private:
  std::shared_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string serialized_;
  int32_t newline_ = '\n';
};

enum class SentencePieceKind { kBpe, kUnigram };

struct TokenizerTraining {
  int64_t vocab = 8000;
  SentencePieceKind kind = SentencePieceKind::kBpe;
  int64_t threads = 1;
};

// Trains a SentencePiece model on `text` (its lines are the sentences) and
// writes it to `out`: identity normalisation (no NFKC, whitespace kept as
// written), byte fallback (no unknown pieces: a character the model lacks
// is spelled in <0xNN> bytes), and the line break as a piece of its own.
Status train_sentencepiece(const std::vector<uint8_t>& text, const TokenizerTraining& t, const std::string& out);

}  // namespace pst
