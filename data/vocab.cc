#include "data/vocab.h"

namespace pst {

namespace {

// The length of a valid UTF-8 sequence starting at s[i], or 0.
size_t utf8_length(const std::string& s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t n = 0;
  uint32_t cp = 0;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;  // a continuation byte or 0xF8..0xFF
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  static constexpr uint32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kSmallest[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

}  // namespace

bool utf8_symbols(const std::string& text, std::vector<std::string>* out) {
  out->clear();
  bool valid = true;
  for (size_t i = 0; i < text.size();) {
    size_t n = utf8_length(text, i);
    if (n == 0) {
      valid = false;
      n = 1;
    }
    out->push_back(text.substr(i, n));
    i += n;
  }
  return valid;
}

bool strip_utf8_bom(std::string* first_line) {
  if (!first_line->starts_with("\xEF\xBB\xBF")) return false;
  first_line->erase(0, 3);
  return true;
}

namespace {
constexpr const char* kSpecials[] = {"<pad>", "<s>", "</s>", "<unk>"};
}  // namespace

Vocabulary::Vocabulary() {
  for (const char* s : kSpecials) add(s);
}

bool Vocabulary::is_special(const std::string& token) {
  for (const char* s : kSpecials)
    if (token == s) return true;
  return false;
}

int32_t Vocabulary::add(const std::string& token) {
  auto it = ids_.find(token);
  if (it != ids_.end()) return it->second;
  const auto id = static_cast<int32_t>(tokens_.size());
  tokens_.push_back(token);
  ids_.emplace(token, id);
  return id;
}

int32_t Vocabulary::id(const std::string& token) const {
  auto it = ids_.find(token);
  return it == ids_.end() ? kUnk : it->second;
}

}  // namespace pst
