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
  ASSERT_TRUE(parse_cmudict_line("(\"aaron\" nil (((eh) 1) ((r ax n) 0)))", &w, &ph));
  EXPECT_EQ(w, "aaron");
  EXPECT_EQ(ph, (std::vector<std::string>{"eh", "r", "ax", "n"}));
  ASSERT_TRUE(parse_cmudict_line("(\"McDonald\" n (((m ax k) 0) ((d aa n) 1) ((ax l d) 0)))", &w, &ph));
  EXPECT_EQ(w, "mcdonald");
  for (const char* bad : {"", "MNCL", "(\"x\" nil)", "(\"x\" nil (((a) 1))", "(\"\" nil (((a) 1)))",
                          "(\"x\" nil (((a) 1))) trailing", "(\"x\" nil ((a 1)))", "(\"x\" nil (((a) !)))"})
    EXPECT_FALSE(parse_cmudict_line(bad, &w, &ph)) << bad;
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
  auto c = load_cmudict(dir.file("d"));
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
  auto missing = load_cmudict(dir.file("nope"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find(dir.file("nope")), std::string::npos);

  write(dir.file("empty"), "");
  auto empty = load_cmudict(dir.file("empty"));
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("empty"), std::string::npos);

  write(dir.file("garbage"), "MNCL\nthis is not a dictionary\n");
  auto garbage = load_cmudict(dir.file("garbage"));
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(garbage.status().message().find("line 2"), std::string::npos) << garbage.status().message();

  // Few malformed lines are skipped and counted; many are an error.
  std::string text;
  for (int i = 0; i < 300; ++i) text += "(\"zebra" + std::to_string(i) + "\" nil (((z iy) 1)))\n";
  write(dir.file("few"), text + "(\"broken\" nil (((z\n");
  auto few = load_cmudict(dir.file("few"));
  ASSERT_TRUE(few.ok()) << few.status().to_string();
  EXPECT_EQ(few->skipped_lines, 1);
  EXPECT_EQ(few->first_skipped_line, 301);
  write(dir.file("many"), text + std::string(10, '\n') + "bad\nbad\nbad\nbad\n");
  auto many = load_cmudict(dir.file("many"));
  ASSERT_FALSE(many.ok());
  EXPECT_NE(many.status().message().find("first at line"), std::string::npos) << many.status().message();
}

// The real dictionary of festlex-cmu (installed by scripts/setup) gives the
// split sizes of docs/design.md (Data), counted independently with Python's hashlib.
TEST(G2PTest, DebianCmudictSplit) {
  auto c = load_cmudict(kDefaultCmudictPath);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->train.size() + c->valid.size() + c->test.size(), 105664u);
  EXPECT_EQ(c->train.size(), 95042u);
  EXPECT_EQ(c->valid.size(), 5338u);
  EXPECT_EQ(c->test.size(), 5284u);
  EXPECT_EQ(c->skipped_lines, 0);
  EXPECT_EQ(c->letters.size(), 4 + 26);
  EXPECT_EQ(c->phones.size(), 4 + 40);
}

}  // namespace
}  // namespace pst
