#include "data/g2p.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <unordered_map>
#include <unordered_set>

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

std::vector<G2PWord>& G2PCorpus::split(Split s) {
  return s == Split::kTrain ? train : (s == Split::kValid ? valid : test);
}

namespace {

void ascii_lower(std::string* s) {
  for (char& c : *s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

// A word as a lexicon line may hold it: valid UTF-8 without spaces or
// control characters, lowercased (ASCII letters only).
bool take_word(std::string w, std::string* word) {
  std::vector<std::string> symbols;
  if (w.empty() || !utf8_symbols(w, &symbols)) return false;
  for (const std::string& sym : symbols)
    if (sym.size() == 1 &&
        (std::isspace(static_cast<unsigned char>(sym[0])) || !std::isprint(static_cast<unsigned char>(sym[0]))))
      return false;
  ascii_lower(&w);
  *word = std::move(w);
  return true;
}

std::vector<std::string> split_whitespace(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    size_t j = i;
    while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

const char* expected_entry(LexiconFormat f) {
  switch (f) {
    case LexiconFormat::kFestival: return "(\"word\" pos (((phones) stress) ...))";
    case LexiconFormat::kCmudict: return "word PH1 PH2 ..., variants as word(2)";
    case LexiconFormat::kTsv: return "word<TAB>phone phone ..., one tab a line";
    case LexiconFormat::kAuto: break;
  }
  return "a Festival, cmudict or word<TAB>phones entry";
}

}  // namespace

bool parse_festival_line(const std::string& line, std::string* word, std::vector<std::string>* phones) {
  // ("word" pos (((ph ph) 1) ((ph) 0)))
  size_t i = 0;
  if (line.size() < 4 || line[0] != '(' || line[1] != '"') return false;
  const size_t close = line.find('"', 2);
  if (close == std::string::npos || !take_word(line.substr(2, close - 2), word)) return false;
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
      ascii_lower(&phones->back());
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

bool parse_cmudict_dict_line(const std::string& line, std::string* word, std::vector<std::string>* phones) {
  // word PH1 PH2 ... [# comment]; a variant is word(2).
  std::string body = line;
  const size_t hash = body.find(" #");
  if (hash != std::string::npos) body.resize(hash);
  const std::vector<std::string> fields = split_whitespace(body);
  if (fields.size() < 2) return false;
  std::string w = fields[0];
  const size_t paren = w.find('(');
  if (paren != std::string::npos) {  // word(N): digits and a closing ')' only
    if (paren == 0 || w.back() != ')' || paren + 2 >= w.size()) return false;
    for (size_t k = paren + 1; k + 1 < w.size(); ++k)
      if (!std::isdigit(static_cast<unsigned char>(w[k]))) return false;
    w.resize(paren);
  }
  if (!take_word(w, word)) return false;
  phones->clear();
  for (size_t f = 1; f < fields.size(); ++f) {
    std::string ph = fields[f];
    // ARPAbet: letters, then a stress digit, stripped as from Festival's file.
    while (!ph.empty() && std::isdigit(static_cast<unsigned char>(ph.back()))) ph.pop_back();
    if (ph.empty()) return false;
    for (char c : ph)
      if (!std::isalpha(static_cast<unsigned char>(c))) return false;
    ascii_lower(&ph);
    phones->push_back(std::move(ph));
  }
  return true;
}

bool parse_tsv_line(const std::string& line, std::string* word, std::vector<std::string>* phones) {
  // word<TAB>phone phone ...: phones as written (any UTF-8 without spaces).
  // One tab only: a dictionary with more columns (a pronunciation's
  // probability, as some aligners' have) would give "0.99" as a phone.
  // (Trailing blanks, as a spreadsheet's export may leave, are not a column.)
  const size_t tab = line.find('\t');
  if (tab == std::string::npos) return false;
  const size_t last = line.find_last_not_of(" \t");
  if (last != std::string::npos && last > tab && line.find('\t', tab + 1) < last) return false;
  const std::vector<std::string> left = split_whitespace(line.substr(0, tab));
  if (left.size() != 1 || !take_word(left[0], word)) return false;
  *phones = split_whitespace(line.substr(tab + 1));
  std::vector<std::string> symbols;
  for (const std::string& ph : *phones)
    if (!utf8_symbols(ph, &symbols) || Vocabulary::is_special(ph)) return false;
  return !phones->empty();
}

bool parse_lexicon_line(LexiconFormat format, const std::string& line, std::string* word,
                        std::vector<std::string>* phones) {
  switch (format) {
    case LexiconFormat::kFestival: return parse_festival_line(line, word, phones);
    case LexiconFormat::kCmudict: return parse_cmudict_dict_line(line, word, phones);
    case LexiconFormat::kTsv: return parse_tsv_line(line, word, phones);
    case LexiconFormat::kAuto: break;
  }
  return false;
}

LexiconFormat detect_lexicon_format(const std::string& entry) {
  if (entry.rfind("(\"", 0) == 0) return LexiconFormat::kFestival;
  if (entry.find('\t') != std::string::npos) return LexiconFormat::kTsv;
  return LexiconFormat::kCmudict;
}

Result<G2PCorpus> load_lexicon(const std::string& path, LexiconFormat format, int64_t max_train_words,
                               std::optional<Split> whole) {
  std::ifstream in(path);
  if (!in)
    return not_found("lexicon '{}' cannot be opened (install Debian's festlex-cmu for CMUdict, or set data.path)",
                     path);
  return read_lexicon(in, path, format, max_train_words, whole);
}

Result<G2PCorpus> read_lexicon(std::istream& in, const std::string& path, LexiconFormat format, int64_t max_train_words,
                               std::optional<Split> whole) {
  G2PCorpus corpus;
  std::vector<G2PWord> words;                     // in order of first entry
  std::unordered_map<std::string, size_t> index;  // word -> its place in `words`
  std::string line, word;
  std::vector<std::string> phones;
  int64_t entries = 0;
  while (std::getline(in, line)) {
    ++corpus.lines;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (corpus.lines == 1) strip_utf8_bom(&line);
    if (corpus.lines == 1 && line == "MNCL") {  // Festival's header
      if (format == LexiconFormat::kAuto) format = LexiconFormat::kFestival;
      continue;
    }
    if (line.empty() || line[0] == ';' || line[0] == '#') continue;    // blank or comment
    if (line.find_first_not_of(" \t") == std::string::npos) continue;  // blank
    if (format == LexiconFormat::kAuto) format = detect_lexicon_format(line);
    if (!parse_lexicon_line(format, line, &word, &phones)) {
      if (corpus.skipped_lines++ == 0) corpus.first_skipped_line = corpus.lines;
      continue;
    }
    ++entries;
    const auto [it, fresh] = index.try_emplace(word, words.size());
    if (fresh) words.push_back(G2PWord{word, {}});
    auto& prons = words[it->second].prons;
    if (std::find(prons.begin(), prons.end(), phones) == prons.end()) prons.push_back(phones);
  }
  corpus.format = format;
  if (corpus.lines == 0) return invalid_argument("lexicon '{}' is empty", path);
  if (entries == 0)
    return invalid_argument(
        "lexicon '{}' has no valid entry; line {} is the first bad one (data.format = {}: expected {}; data.format "
        "may be auto, festival, cmudict or tsv)",
        path, corpus.first_skipped_line, to_string(format), expected_entry(format));
  if (corpus.skipped_lines * 100 > corpus.lines)
    return invalid_argument(
        "lexicon '{}': {} of {} lines are malformed (first at line {}; data.format = {}: expected {})", path,
        corpus.skipped_lines, corpus.lines, corpus.first_skipped_line, to_string(format), expected_entry(format));
  for (G2PWord& gw : words) {
    switch (whole.value_or(split_of(gw.word))) {
      case Split::kTrain:
        if (max_train_words == 0 || static_cast<int64_t>(corpus.train.size()) < max_train_words)
          corpus.train.push_back(std::move(gw));
        break;
      case Split::kValid: corpus.valid.push_back(std::move(gw)); break;
      case Split::kTest: corpus.test.push_back(std::move(gw)); break;
    }
  }
  // The vocabularies: the training words' symbols, each once, in sorted order.
  std::unordered_set<std::string> letters, phone_set;
  std::vector<std::string> symbols;
  for (const G2PWord& w : corpus.train) {
    utf8_symbols(w.word, &symbols);
    letters.insert(symbols.begin(), symbols.end());
    for (const auto& p : w.prons) phone_set.insert(p.begin(), p.end());
  }
  for (const auto& [set, vocab] : {std::pair{&letters, &corpus.letters}, std::pair{&phone_set, &corpus.phones}}) {
    std::vector<std::string> sorted(set->begin(), set->end());
    std::sort(sorted.begin(), sorted.end());
    for (const auto& x : sorted) vocab->add(x);
  }
  return corpus;
}

int64_t word_symbols(const std::string& word) {
  int64_t n = 0;
  for (char c : word) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;  // not a continuation byte
  return n;
}

G2PDataset::G2PDataset(const G2PCorpus* corpus, Split split) : corpus_(corpus), words_(&corpus->split(split)) {
  for (size_t w = 0; w < words_->size(); ++w)
    for (size_t p = 0; p < (*words_)[w].prons.size(); ++p)
      refs_.emplace_back(static_cast<int64_t>(w), static_cast<int64_t>(p));
}

std::vector<int32_t> encode_letters(const Vocabulary& letters, const std::string& word) {
  std::vector<std::string> symbols;
  utf8_symbols(word, &symbols);
  std::vector<int32_t> src;
  for (const std::string& sym : symbols) src.push_back(letters.id(sym));
  src.push_back(Vocabulary::kEos);
  return src;
}

std::vector<int32_t> G2PDataset::encode_word(const std::string& word) const {
  return encode_letters(corpus_->letters, word);
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
  return word_symbols(gw.word) * 64 + static_cast<int64_t>(gw.prons[static_cast<size_t>(p)].size());
}

}  // namespace pst
