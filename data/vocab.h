// A vocabulary: token strings <-> ids. Ids 0..3 are the specials pad, bos,
// eos, unk in every vocabulary pst builds.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/batch.h"

namespace pst {

// Splits UTF-8 text into its code points, each as a string of 1-4 bytes.
// False (and the bytes one by one) when the text is not valid UTF-8:
// truncated or overlong sequences, surrogates, or code points past U+10FFFF.
bool utf8_symbols(const std::string& text, std::vector<std::string>* out);

// Removes the UTF-8 byte order mark (EF BB BF) that some editors write at the
// start of a text file, from the file's first line; true when there was one.
// Kept, it would become part of the first word, a letter of its own.
bool strip_utf8_bom(std::string* first_line);

class Vocabulary {
 public:
  static constexpr int32_t kPad = kPadId, kBos = 1, kEos = 2, kUnk = 3;

  Vocabulary();
  // True for the names of ids 0..3 (<pad> <s> </s> <unk>): a token of the
  // data spelled so would take that id's meaning.
  static bool is_special(const std::string& token);
  // Adds a token if new; returns its id.
  int32_t add(const std::string& token);
  // Id of a token, or kUnk.
  int32_t id(const std::string& token) const;
  const std::string& token(int32_t id) const { return tokens_.at(static_cast<size_t>(id)); }
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  const std::vector<std::string>& tokens() const { return tokens_; }

 private:
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int32_t> ids_;
};

}  // namespace pst
