#include "data/text.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace pst {

const std::vector<uint8_t>& TextCorpus::split(Split s) const {
  return s == Split::kTrain ? train : (s == Split::kValid ? valid : test);
}

std::vector<uint8_t>& TextCorpus::split(Split s) {
  return s == Split::kTrain ? train : (s == Split::kValid ? valid : test);
}

namespace {

Result<std::vector<uint8_t>> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("text file '{}' cannot be opened", path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void add_blocks(TextCorpus& c, const std::string& name, const std::vector<uint8_t>& bytes, std::optional<Split> whole) {
  for (int64_t b = 0; b * kTextBlockBytes < static_cast<int64_t>(bytes.size()); ++b) {
    const auto first = bytes.begin() + b * kTextBlockBytes;
    const auto last = bytes.begin() + std::min<int64_t>(static_cast<int64_t>(bytes.size()), (b + 1) * kTextBlockBytes);
    std::vector<uint8_t>* dst = nullptr;
    switch (whole.value_or(split_of(name + ":" + std::to_string(b)))) {
      case Split::kTrain: dst = &c.train; break;
      case Split::kValid: dst = &c.valid; break;
      case Split::kTest: dst = &c.test; break;
    }
    dst->insert(dst->end(), first, last);
  }
}

}  // namespace

Result<TextCorpus> load_text(const std::string& path, std::optional<Split> whole) {
  namespace fs = std::filesystem;
  TextCorpus c;
  std::error_code ec;
  if (!fs::exists(path, ec))
    return not_found("text data path '{}' does not exist (install Debian's fortunes or set data.path)", path);
  if (fs::is_directory(path, ec)) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(path, ec)) {
      if (e.is_symlink() || !e.is_regular_file()) {
        if (e.is_symlink()) ++c.skipped_files;
        continue;
      }
      files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      PST_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, read_file(f.string()));
      if (std::find(bytes.begin(), bytes.end(), uint8_t{0}) != bytes.end()) {
        ++c.skipped_files;
        continue;
      }
      c.files.push_back(f.string());
      add_blocks(c, f.filename().string(), bytes, whole);
    }
  } else {
    PST_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, read_file(path));
    if (std::find(bytes.begin(), bytes.end(), uint8_t{0}) != bytes.end())
      return invalid_argument("text file '{}' contains NUL bytes; expected a text file", path);
    c.files.push_back(path);
    add_blocks(c, fs::path(path).filename().string(), bytes, whole);
  }
  if (c.train.empty() && c.valid.empty() && c.test.empty())
    return invalid_argument("text data '{}' has no bytes ({} files read, {} skipped)", path, c.files.size(),
                            c.skipped_files);
  return c;
}

TokenStream tokenize(const Tokenizer& tokenizer, const std::vector<uint8_t>& text) {
  TokenStream t;
  std::vector<int32_t> bytes;
  tokenizer.encode(std::string_view(reinterpret_cast<const char*>(text.data()), text.size()), &t.ids, &bytes);
  t.byte_prefix.reserve(bytes.size() + 1);
  for (int32_t b : bytes) t.byte_prefix.push_back(t.byte_prefix.back() + b);
  return t;
}

TextDataset::TextDataset(const TokenStream* tokens, int64_t seq_len, int64_t max_examples)
    : tokens_(tokens), seq_len_(seq_len) {
  const int64_t n = static_cast<int64_t>(tokens->ids.size());
  windows_ = n > seq_len ? (n - 1) / seq_len : 0;
  if (max_examples > 0) windows_ = std::min(windows_, max_examples);
}

Example TextDataset::get(int64_t i) const {
  Example e;
  const auto first = tokens_->ids.begin() + i * seq_len_;
  e.tgt_in.assign(first, first + seq_len_);
  e.tgt_out.assign(first + 1, first + seq_len_ + 1);
  return e;
}

int64_t TextDataset::target_bytes(int64_t i) const {
  const auto& p = tokens_->byte_prefix;
  return p[static_cast<size_t>((i + 1) * seq_len_ + 1)] - p[static_cast<size_t>(i * seq_len_ + 1)];
}

}  // namespace pst
