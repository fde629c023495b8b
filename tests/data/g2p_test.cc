#include "data/g2p.h"

#include <fstream>

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace pst {
namespace {

TEST(G2PTest, SplitBucketMatchesPythonHashlib) {
  // int(hashlib.md5(w.encode()).hexdigest(), 16) % 100, computed with Python.
  const std::vector<std::pair<std::string, int>> expect = {{"aardvark", 45}, {"hello", 94},  {"zebra", 11}, {"", 66},
                                                           {"a", 97},        {"testing", 1}, {"cmu", 4}};
  for (const auto& [w, b] : expect) EXPECT_EQ(split_bucket(w), b) << w;
  EXPECT_EQ(split_of("hello"), Split::kValid);
  EXPECT_EQ(split_of("a"), Split::kTest);
  EXPECT_EQ(split_of("zebra"), Split::kTrain);
}

TEST(G2PTest, ParsesFestivalEntries) {
  std::string w;
  std::vector<std::string> ph;
  ASSERT_TRUE(parse_festival_line("(\"aaron\" nil (((eh) 1) ((r ax n) 0)))", &w, &ph));
  EXPECT_EQ(w, "aaron");
  EXPECT_EQ(ph, (std::vector<std::string>{"eh", "r", "ax", "n"}));
  ASSERT_TRUE(parse_festival_line("(\"McDonald\" n (((m ax k) 0) ((d aa n) 1) ((ax l d) 0)))", &w, &ph));
  EXPECT_EQ(w, "mcdonald");
  for (const char* bad : {"", "MNCL", "(\"x\" nil)", "(\"x\" nil (((a) 1))", "(\"\" nil (((a) 1)))",
                          "(\"x\" nil (((a) 1))) trailing", "(\"x\" nil ((a 1)))", "(\"x\" nil (((a) !)))"})
    EXPECT_FALSE(parse_festival_line(bad, &w, &ph)) << bad;
}

void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

TEST(G2PTest, LoadsWordsWithAllPronunciationsInOneSplit) {
  testing::TempDir dir;
  // "zebra" (train) has two pronunciations and a duplicate POS entry.
  write(dir.file("d"),
        "MNCL\n"
        "(\"zebra\" n (((z iy) 1) ((b r ax) 0)))\n"
        "(\"zebra\" v (((z iy) 1) ((b r ax) 0)))\n"
        "(\"zebra\" nil (((z eh) 1) ((b r ax) 0)))\n"
        "(\"testing\" nil (((t eh) 1) ((s t ih ng) 0)))\n"
        "(\"hello\" nil (((hh ax) 0) ((l ow) 1)))\n"
        "(\"a\" dt (((ax) 0)))\n");
  auto c = load_lexicon(dir.file("d"));
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  ASSERT_EQ(c->train.size(), 2u);
  EXPECT_EQ(c->train[0].word, "zebra");
  ASSERT_EQ(c->train[0].prons.size(), 2u);
  EXPECT_EQ(c->valid.size(), 1u);
  EXPECT_EQ(c->test.size(), 1u);
  EXPECT_EQ(c->skipped_lines, 0);
  // Vocabularies come from training data only: 'h' is not a training letter.
  EXPECT_EQ(c->letters.id("h"), Vocabulary::kUnk);
  EXPECT_NE(c->letters.id("z"), Vocabulary::kUnk);
  G2PDataset train(&*c, Split::kTrain);
  EXPECT_EQ(train.size(), 3);  // zebra x2, testing
  const Example e = train.get(0);
  EXPECT_EQ(e.src.size(), 6u);  // z e b r a </s>
  EXPECT_EQ(e.src.back(), Vocabulary::kEos);
  EXPECT_EQ(e.tgt_in.front(), Vocabulary::kBos);
  EXPECT_EQ(e.tgt_out.back(), Vocabulary::kEos);
  EXPECT_EQ(std::vector<int32_t>(e.tgt_in.begin() + 1, e.tgt_in.end()),
            std::vector<int32_t>(e.tgt_out.begin(), e.tgt_out.end() - 1));
}

TEST(G2PTest, BadFilesAreClearErrors) {
  testing::TempDir dir;
  auto missing = load_lexicon(dir.file("nope"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find(dir.file("nope")), std::string::npos);

  write(dir.file("empty"), "");
  auto empty = load_lexicon(dir.file("empty"));
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("empty"), std::string::npos);

  write(dir.file("garbage"), "MNCL\nthis is not a dictionary\n");
  auto garbage = load_lexicon(dir.file("garbage"));
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(garbage.status().message().find("line 2"), std::string::npos) << garbage.status().message();

  // Few malformed lines are skipped and counted; many are an error.
  std::string text;
  for (int i = 0; i < 300; ++i) text += "(\"zebra" + std::to_string(i) + "\" nil (((z iy) 1)))\n";
  write(dir.file("few"), text + "(\"broken\" nil (((z\n");
  auto few = load_lexicon(dir.file("few"));
  ASSERT_TRUE(few.ok()) << few.status().to_string();
  EXPECT_EQ(few->skipped_lines, 1);
  EXPECT_EQ(few->first_skipped_line, 301);
  write(dir.file("many"), text + std::string(10, '\n') + "bad\nbad\nbad\nbad\n");
  auto many = load_lexicon(dir.file("many"));
  ASSERT_FALSE(many.ok());
  EXPECT_NE(many.status().message().find("first at line"), std::string::npos) << many.status().message();
}

// CMU's cmudict.dict: variants as word(2), comments, stress digits dropped
// as Festival's file has them.
TEST(G2PTest, ParsesCmudictDictEntries) {
  std::string w;
  std::vector<std::string> ph;
  ASSERT_TRUE(parse_cmudict_dict_line("hello HH AH0 L OW1", &w, &ph));
  EXPECT_EQ(w, "hello");
  EXPECT_EQ(ph, (std::vector<std::string>{"hh", "ah", "l", "ow"}));
  ASSERT_TRUE(parse_cmudict_dict_line("Hello(2)  HH EH0 L OW1 # a comment", &w, &ph));
  EXPECT_EQ(w, "hello");
  EXPECT_EQ(ph, (std::vector<std::string>{"hh", "eh", "l", "ow"}));
  ASSERT_TRUE(parse_cmudict_dict_line("d'artagnan D AH0 R T AE1 NG Y AH0 N\r", &w, &ph));
  EXPECT_EQ(w, "d'artagnan");
  for (const char* bad : {"", "hello", "hello(x) HH", "hello( HH", "(2) HH", "hello HH 1", "hello HH-AH"})
    EXPECT_FALSE(parse_cmudict_dict_line(bad, &w, &ph)) << bad;
}

// word<TAB>phones: UTF-8 words, phones as written (IPA here).
TEST(G2PTest, ParsesTabSeparatedEntries) {
  std::string w;
  std::vector<std::string> ph;
  ASSERT_TRUE(parse_tsv_line("Café\tk a f e\u02d0", &w, &ph));
  EXPECT_EQ(w, "caf\u00e9");  // ASCII letters lowercased
  EXPECT_EQ(ph, (std::vector<std::string>{"k", "a", "f", "e\u02d0"}));
  ASSERT_TRUE(parse_tsv_line("stra\u00dfe\t\u0283 t \u0281 a\u02d0 s \u0259", &w, &ph));
  EXPECT_EQ(ph.size(), 6u);
  for (const std::string& bad :
       std::vector<std::string>{"word", "word\t", "two words\tp", "\tp", "bad\xff\tp", "ok\tp\xc3"})
    EXPECT_FALSE(parse_tsv_line(bad, &w, &ph)) << bad;
  // A phone named as a special would take its id (</s> would end the output):
  // the line is malformed. Found by fuzz_lexicon.
  for (const char* special : {"<pad>", "<s>", "</s>", "<unk>"})
    EXPECT_FALSE(parse_tsv_line(std::string("zebra\tz ") + special + " b", &w, &ph)) << special;
  EXPECT_TRUE(parse_tsv_line("zebra\tz <x> b", &w, &ph));
  // A second tab means another column (an aligner's dictionary may give a
  // pronunciation's probability there): not read as a phone "0.99".
  EXPECT_FALSE(parse_tsv_line("hello\t0.99\th \u0259 l o", &w, &ph));
  EXPECT_FALSE(parse_tsv_line("hello\th \u0259\tl o", &w, &ph));
  ASSERT_TRUE(parse_tsv_line("hello\th \u0259 l o\t \t", &w, &ph));  // trailing blanks are no column
  EXPECT_EQ(ph.size(), 4u);
  testing::TempDir dir;
  write(dir.file("probabilities"), "hello\t0.99\th \u0259 l o\nzebra\t1.0\tz i b r a\n");
  auto lex = load_lexicon(dir.file("probabilities"));
  ASSERT_FALSE(lex.ok());
  EXPECT_NE(lex.status().message().find("line 1 is the first bad one"), std::string::npos) << lex.status().message();
  EXPECT_NE(lex.status().message().find("one tab a line"), std::string::npos) << lex.status().message();
}

TEST(G2PTest, SplitsUtf8IntoCodePoints) {
  std::vector<std::string> s;
  ASSERT_TRUE(utf8_symbols("na\u00efve\u20ac\U0001F600", &s));
  EXPECT_EQ(s, (std::vector<std::string>{"n", "a", "\u00ef", "v", "e", "\u20ac", "\U0001F600"}));
  // Truncated, overlong, a surrogate, past U+10FFFF, a stray continuation byte.
  for (const std::string& bad :
       std::vector<std::string>{"\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\x80"}) {
    EXPECT_FALSE(utf8_symbols(bad, &s)) << bad;
    EXPECT_EQ(s.size(), bad.size()) << "byte by byte: " << bad;
  }
}

// Each format loads from a file, detected from its first entry or named;
// the vocabularies come from the data (UTF-8 letters, IPA phones), and a
// file read as another format is an error that says what was expected.
TEST(G2PTest, LoadsEveryLexiconFormat) {
  testing::TempDir dir;
  // "zebra" and "testing" fall in the training split, "hello" in valid, "a" in test.
  write(dir.file("dict"),
        ";;; cmudict.dict\n# another comment\nzebra Z IY1 B R AH0\nzebra(2) Z EH1 B R AH0\n"
        "testing T EH1 S T IH0 NG\nhello HH AH0 L OW1\na AH0\n");
  write(dir.file("tsv"),
        "# word<TAB>phones\nzebra\tz \u025b b \u0279 \u0259\nzebra\tz i\u02d0 b \u0279 \u0259\n"
        "t\u00e9sting\tt \u025b s t \u026a \u014b\nhello\th \u0259 l o\u028a\na\t\u0259\n");
  auto dict = load_lexicon(dir.file("dict"));
  ASSERT_TRUE(dict.ok()) << dict.status().to_string();
  EXPECT_EQ(dict->format, LexiconFormat::kCmudict);
  ASSERT_EQ(dict->train.size(), 2u);
  EXPECT_EQ(dict->train[0].prons,
            (std::vector<std::vector<std::string>>{{"z", "iy", "b", "r", "ah"}, {"z", "eh", "b", "r", "ah"}}));
  EXPECT_EQ(dict->valid.size(), 1u);
  EXPECT_EQ(dict->test.size(), 1u);
  auto tsv = load_lexicon(dir.file("tsv"));
  ASSERT_TRUE(tsv.ok()) << tsv.status().to_string();
  EXPECT_EQ(tsv->format, LexiconFormat::kTsv);
  // "tésting" hashes elsewhere than "testing"; "zebra" trains with two IPA pronunciations.
  EXPECT_EQ(tsv->train[0].word, "zebra");
  EXPECT_EQ(tsv->train[0].prons.size(), 2u);
  EXPECT_NE(tsv->phones.id("\u025b"), Vocabulary::kUnk);
  EXPECT_NE(tsv->phones.id("i\u02d0"), Vocabulary::kUnk);
  const int64_t all = static_cast<int64_t>(tsv->train.size() + tsv->valid.size() + tsv->test.size());
  EXPECT_EQ(all, 4);
  // A word of UTF-8 letters is one id per code point.
  Vocabulary letters;
  letters.add("t");
  letters.add("\u00e9");
  EXPECT_EQ(encode_letters(letters, "t\u00e9x"),
            (std::vector<int32_t>{letters.id("t"), letters.id("\u00e9"), Vocabulary::kUnk, Vocabulary::kEos}));
  EXPECT_EQ(word_symbols("t\u00e9sting"), 7);
  // Named formats: the right one loads, another is a clear error.
  EXPECT_TRUE(load_lexicon(dir.file("dict"), LexiconFormat::kCmudict).ok());
  auto wrong = load_lexicon(dir.file("dict"), LexiconFormat::kTsv);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("line 3"), std::string::npos) << wrong.status().message();
  EXPECT_NE(wrong.status().message().find("word<TAB>phone"), std::string::npos) << wrong.status().message();
  auto festival = load_lexicon(dir.file("tsv"), LexiconFormat::kFestival);
  ASSERT_FALSE(festival.ok());
  EXPECT_NE(festival.status().message().find("data.format = festival"), std::string::npos)
      << festival.status().message();
}

// A UTF-8 byte order mark before the first line (Windows editors write one)
// is not part of the first word: "zebra" keeps its split and no letter
// U+FEFF enters the vocabulary; Festival's header is still recognised.
TEST(G2PTest, AByteOrderMarkIsNotPartOfTheFirstWord) {
  testing::TempDir dir;
  write(dir.file("dict"), "\xEF\xBB\xBFzebra Z IY1 B R AH0\ntesting T EH1 S T IH0 NG\n");
  write(dir.file("tsv"), "\xEF\xBB\xBFzebra\tz i b r a\ntesting\tt e s t i n g\n");
  write(dir.file("festival"), "\xEF\xBB\xBFMNCL\n(\"zebra\" nil (((z iy1) 1) ((b r ah0) 0)))\n");
  for (const char* name : {"dict", "tsv", "festival"}) {
    auto lex = load_lexicon(dir.file(name));
    ASSERT_TRUE(lex.ok()) << name << ": " << lex.status().to_string();
    EXPECT_EQ(lex->skipped_lines, 0) << name;
    ASSERT_FALSE(lex->train.empty()) << name;
    EXPECT_EQ(lex->train[0].word, "zebra") << name;
    EXPECT_EQ(lex->letters.id("\uFEFF"), Vocabulary::kUnk) << name;
  }
  EXPECT_EQ(load_lexicon(dir.file("festival"))->format, LexiconFormat::kFestival);
  // The mark comes off once, from the start of the line only.
  std::string line = "\xEF\xBB\xBFhello";
  EXPECT_TRUE(strip_utf8_bom(&line));
  EXPECT_EQ(line, "hello");
  EXPECT_FALSE(strip_utf8_bom(&line));
  EXPECT_EQ(line, "hello");
}

// A lexicon given for one split goes there whole, vocabularies from its
// training words only (none for a held-out file).
TEST(G2PTest, AWholeLexiconGoesToItsSplit) {
  testing::TempDir dir;
  write(dir.file("dict"), "zebra Z IY1 B R AH0\ntesting T EH1 S T IH0 NG\nhello HH AH0 L OW1\nquiz K W IH1 Z\n");
  auto test = load_lexicon(dir.file("dict"), LexiconFormat::kAuto, 0, Split::kTest);
  ASSERT_TRUE(test.ok()) << test.status().to_string();
  EXPECT_TRUE(test->train.empty());
  EXPECT_TRUE(test->valid.empty());
  ASSERT_EQ(test->test.size(), 4u);
  EXPECT_EQ(test->test[2].word, "hello");
  EXPECT_EQ(test->letters.size(), 4);  // specials only
  auto train = load_lexicon(dir.file("dict"), LexiconFormat::kAuto, 3, Split::kTrain);
  ASSERT_TRUE(train.ok());
  ASSERT_EQ(train->train.size(), 3u);  // max_train_words
  EXPECT_NE(train->letters.id("h"), Vocabulary::kUnk);
  EXPECT_EQ(train->letters.id("q"), Vocabulary::kUnk);  // only in the word cut
  EXPECT_EQ(train->phones.id("k"), Vocabulary::kUnk);
}

// The real dictionary of festlex-cmu (installed by scripts/setup) gives the
// split sizes of docs/design.md (Data), counted independently with Python's hashlib.
TEST(G2PTest, DebianCmudictSplit) {
  auto c = load_lexicon(kDefaultCmudictPath);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->train.size() + c->valid.size() + c->test.size(), 105664u);
  EXPECT_EQ(c->train.size(), 95042u);
  EXPECT_EQ(c->valid.size(), 5338u);
  EXPECT_EQ(c->test.size(), 5284u);
  EXPECT_EQ(c->skipped_lines, 0);
  EXPECT_EQ(c->letters.size(), 4 + 26);
  EXPECT_EQ(c->phones.size(), 4 + 40);
  // After the specials, each vocabulary's symbols in sorted order: a to z,
  // and the phones (the ids a run's model and its results depend on).
  for (int i = 0; i < 26; ++i) EXPECT_EQ(c->letters.id(std::string(1, static_cast<char>('a' + i))), 4 + i);
  for (int32_t id = 5; id < c->phones.size(); ++id) EXPECT_LT(c->phones.token(id - 1), c->phones.token(id)) << id;
  EXPECT_EQ(c->phones.token(4), "aa");
  EXPECT_EQ(c->phones.token(4 + 39), "zh");
}

}  // namespace
}  // namespace pst
