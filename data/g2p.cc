#include "data/g2p.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <set>
#include <unordered_map>

namespace pst {

const char* to_string(Split s) {
  switch (s) {
    case Split::kTrain: return "train";
    case Split::kValid: return "valid";
    case Split::kTest: return "test";
  }
  return "?";
}

int split_bucket(const std::string& word) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  PST_CHECK(EVP_Digest(word.data(), word.size(), digest, &len, EVP_md5(), nullptr) == 1);
  // (big-endian 128-bit integer) mod 100, one byte at a time.
  int r = 0;
  for (unsigned int i = 0; i < len; ++i) r = (r * 256 + digest[i]) % 100;
  return r;
}

Split split_of(const std::string& word) {
  const int b = split_bucket(word);
  return b < 90 ? Split::kTrain : (b < 95 ? Split::kValid : Split::kTest);
}

const std::vector<G2PWord>& G2PCorpus::split(Split s) const {
  return s == Split::kTrain ? train : (s == Split::kValid ? valid : test);
}

bool parse_cmudict_line(const std::string& line, std::string* word, std::vector<std::string>* phones) {
  // ("word" pos (((ph ph) 1) ((ph) 0)))
  size_t i = 0;
  if (line.size() < 4 || line[0] != '(' || line[1] != '"') return false;
  const size_t close = line.find('"', 2);
  if (close == std::string::npos || close == 2) return false;
  *word = line.substr(2, close - 2);
  for (char& c : *word) {
    if (std::isspace(static_cast<unsigned char>(c)) || !std::isprint(static_cast<unsigned char>(c))) return false;
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  i = close + 1;
  if (i >= line.size() || line[i] != ' ') return false;
  const size_t pos_end = line.find(' ', i + 1);
  if (pos_end == std::string::npos) return false;
  i = pos_end + 1;
  // The pronunciation: balanced parentheses holding phone names (letters) and
  // stress digits; the whole entry closes with the final ')'.
  int depth = 1;  // the entry's own '('
  phones->clear();
  bool saw_open = false;
  while (i < line.size()) {
    const char c = line[i];
    if (c == '(') {
      ++depth;
      saw_open = true;
      ++i;
    } else if (c == ')') {
      if (--depth < 0) return false;
      ++i;
      if (depth == 0) break;
    } else if (c == ' ' || c == '\r') {
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < line.size() && std::isalpha(static_cast<unsigned char>(line[j]))) ++j;
      if (depth < 4) return false;  // phones sit inside ((( ... )))
      phones->push_back(line.substr(i, j - i));
      for (char& ch : phones->back()) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      ++i;  // stress
    } else {
      return false;
    }
  }
  if (depth != 0 || !saw_open) return false;
  while (i < line.size() && (line[i] == ' ' || line[i] == '\r')) ++i;
  return i == line.size() && !phones->empty();
}

Result<G2PCorpus> load_cmudict(const std::string& path, int64_t max_train_words) {
  std::ifstream in(path);
  if (!in) return not_found("CMUdict file '{}' cannot be opened (install Debian's festlex-cmu or set data.path)", path);
  G2PCorpus corpus;
  std::vector<std::string> order;
  std::unordered_map<std::string, std::vector<std::vector<std::string>>> prons;
  std::string line, word;
  std::vector<std::string> phones;
  int64_t entries = 0;
  while (std::getline(in, line)) {
    ++corpus.lines;
    if (corpus.lines == 1 && (line == "MNCL" || line == "MNCL\r")) continue;  // festival header
    if (line.empty() || line[0] == ';') continue;                             // blank or comment
    if (!parse_cmudict_line(line, &word, &phones)) {
      if (corpus.skipped_lines++ == 0) corpus.first_skipped_line = corpus.lines;
      continue;
    }
    ++entries;
    auto [it, fresh] = prons.try_emplace(word);
    if (fresh) order.push_back(word);
    if (std::find(it->second.begin(), it->second.end(), phones) == it->second.end()) it->second.push_back(phones);
  }
  if (corpus.lines == 0) return invalid_argument("CMUdict file '{}' is empty", path);
  if (entries == 0)
    return invalid_argument(
        "CMUdict file '{}' has no valid entry; line {} is the first bad one (expected "
        "(\"word\" pos (((phones) stress) ...)))",
        path, corpus.first_skipped_line);
  if (corpus.skipped_lines * 100 > corpus.lines)
    return invalid_argument(
        "CMUdict file '{}': {} of {} lines are malformed (first at line {}; expected "
        "(\"word\" pos (((phones) stress) ...)))",
        path, corpus.skipped_lines, corpus.lines, corpus.first_skipped_line);
  for (const std::string& w : order) {
    G2PWord gw{w, std::move(prons[w])};
    switch (split_of(w)) {
      case Split::kTrain:
        if (max_train_words == 0 || static_cast<int64_t>(corpus.train.size()) < max_train_words)
          corpus.train.push_back(std::move(gw));
        break;
      case Split::kValid: corpus.valid.push_back(std::move(gw)); break;
      case Split::kTest: corpus.test.push_back(std::move(gw)); break;
    }
  }
  if (corpus.train.empty()) return invalid_argument("CMUdict file '{}': no word falls in the training split", path);
  std::set<std::string> letters, phone_set;
  for (const G2PWord& w : corpus.train) {
    for (char c : w.word) letters.insert(std::string(1, c));
    for (const auto& p : w.prons) phone_set.insert(p.begin(), p.end());
  }
  for (const auto& l : letters) corpus.letters.add(l);
  for (const auto& p : phone_set) corpus.phones.add(p);
  return corpus;
}

G2PDataset::G2PDataset(const G2PCorpus* corpus, Split split) : corpus_(corpus), words_(&corpus->split(split)) {
  for (size_t w = 0; w < words_->size(); ++w)
    for (size_t p = 0; p < (*words_)[w].prons.size(); ++p)
      refs_.emplace_back(static_cast<int64_t>(w), static_cast<int64_t>(p));
}

std::vector<int32_t> G2PDataset::encode_word(const std::string& word) const {
  std::vector<int32_t> src;
  for (char c : word) src.push_back(corpus_->letters.id(std::string(1, c)));
  src.push_back(Vocabulary::kEos);
  return src;
}

Example G2PDataset::get(int64_t i) const {
  const auto [w, p] = refs_[static_cast<size_t>(i)];
  const G2PWord& gw = (*words_)[static_cast<size_t>(w)];
  Example e;
  e.src = encode_word(gw.word);
  e.tgt_in.push_back(Vocabulary::kBos);
  for (const auto& ph : gw.prons[static_cast<size_t>(p)]) {
    const int32_t id = corpus_->phones.id(ph);
    e.tgt_in.push_back(id);
    e.tgt_out.push_back(id);
  }
  e.tgt_out.push_back(Vocabulary::kEos);
  return e;
}

int64_t G2PDataset::length_key(int64_t i) const {
  const auto [w, p] = refs_[static_cast<size_t>(i)];
  const G2PWord& gw = (*words_)[static_cast<size_t>(w)];
  return static_cast<int64_t>(gw.word.size()) * 64 + static_cast<int64_t>(gw.prons[static_cast<size_t>(p)].size());
}

}  // namespace pst
