// libFuzzer target: any text as a G2P lexicon, in each format and detected
// (read_lexicon), and, when it loads, the corpus's invariants: every word
// valid UTF-8 without ASCII capitals, in the split its MD5 names, with at
// least one pronunciation of known phones; every training letter and phone
// in the vocabularies.
#include <cstdint>
#include <sstream>
#include <string>

#include "data/g2p.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (pst::LexiconFormat f : {pst::LexiconFormat::kAuto, pst::LexiconFormat::kFestival, pst::LexiconFormat::kCmudict,
                               pst::LexiconFormat::kTsv}) {
    std::istringstream in(text);
    auto corpus = pst::read_lexicon(in, "fuzz", f);
    if (!corpus.ok()) continue;
    std::vector<std::string> symbols;
    for (pst::Split s : {pst::Split::kTrain, pst::Split::kValid, pst::Split::kTest})
      for (const pst::G2PWord& w : corpus->split(s)) {
        if (w.word.empty() || !pst::utf8_symbols(w.word, &symbols) || pst::split_of(w.word) != s) __builtin_trap();
        for (char c : w.word)
          if (c >= 'A' && c <= 'Z') __builtin_trap();
        if (w.prons.empty()) __builtin_trap();
        for (const auto& p : w.prons) {
          if (p.empty()) __builtin_trap();
          for (const std::string& ph : p)
            if (s == pst::Split::kTrain && corpus->phones.id(ph) == pst::Vocabulary::kUnk) __builtin_trap();
        }
        if (s == pst::Split::kTrain)
          for (const std::string& l : symbols)
            if (corpus->letters.id(l) == pst::Vocabulary::kUnk) __builtin_trap();
      }
  }
  return 0;
}
