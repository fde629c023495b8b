#include "data/text.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace pst {
namespace {

TEST(TextTest, BlocksGoToSplitsByHash) {
  testing::TempDir dir;
  std::string text;
  for (int i = 0; i < 40000; ++i) text.push_back(static_cast<char>('a' + i % 26));
  std::ofstream(dir.file("one.txt")) << text;
  std::ofstream(dir.file("bin.dat"), std::ios::binary) << std::string("ab\0cd", 5);
  std::filesystem::create_symlink(dir.file("one.txt"), dir.file("link.txt"));
  auto c = load_text(dir.path());
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->files.size(), 1u);
  EXPECT_EQ(c->skipped_files, 2);  // the binary file and the symbolic link
  EXPECT_EQ(c->train.size() + c->valid.size() + c->test.size(), text.size());
  // Recompute the split of each 4 KiB block with the documented rule.
  size_t train = 0;
  for (size_t b = 0; b * 4096 < text.size(); ++b)
    if (split_of("one.txt:" + std::to_string(b)) == Split::kTrain)
      train += std::min<size_t>(4096, text.size() - b * 4096);
  EXPECT_EQ(c->train.size(), train);
}

// A path given for one split (data.train, valid, test) goes there whole;
// another split's file may leave the training split empty.
TEST(TextTest, AWholePathGoesToItsSplit) {
  testing::TempDir dir;
  std::ofstream(dir.file("v.txt")) << std::string(20000, 'v');
  auto c = load_text(dir.file("v.txt"), Split::kValid);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_TRUE(c->train.empty());
  EXPECT_EQ(c->valid.size(), 20000u);
  EXPECT_TRUE(c->test.empty());
}

TEST(TextTest, WindowsShiftTargetsByOne) {
  std::vector<uint8_t> bytes;
  for (int i = 0; i < 100; ++i) bytes.push_back(static_cast<uint8_t>(i));
  const TokenStream tokens = tokenize(Tokenizer(), bytes);
  TextDataset d(&tokens, 10);
  EXPECT_EQ(d.size(), 9);  // (100 - 1) / 10
  const Example e = d.get(3);
  EXPECT_EQ(e.tgt_in.front(), 30);
  EXPECT_EQ(e.tgt_out.front(), 31);
  EXPECT_EQ(e.tgt_out.back(), 40);
  EXPECT_TRUE(e.src.empty());
  EXPECT_EQ(d.target_bytes(3), 10);  // a byte per target
}

// A window's targets stand for the bytes their tokens cover.
TEST(TextTest, TargetBytesFollowTheTokens) {
  TokenStream t;
  for (int i = 0; i < 21; ++i) {
    t.ids.push_back(i);
    t.byte_prefix.push_back(t.byte_prefix.back() + 1 + i % 3);  // token i covers 1 + i % 3 bytes
  }
  TextDataset d(&t, 5);
  ASSERT_EQ(d.size(), 4);
  for (int64_t w = 0; w < 4; ++w) {
    int64_t expect = 0;
    for (int64_t i = w * 5 + 1; i <= w * 5 + 5; ++i) expect += 1 + i % 3;
    EXPECT_EQ(d.target_bytes(w), expect) << w;
  }
}

TEST(TextTest, BadInputIsAClearError) {
  testing::TempDir dir;
  EXPECT_EQ(load_text(dir.file("missing")).status().code(), StatusCode::kNotFound);
  std::ofstream(dir.file("bin"), std::ios::binary) << std::string("a\0b", 3);
  auto bin = load_text(dir.file("bin"));
  ASSERT_FALSE(bin.ok());
  EXPECT_NE(bin.status().message().find("NUL"), std::string::npos);
  auto empty_dir = load_text(dir.path() + "/");
  EXPECT_FALSE(empty_dir.ok());
}

TEST(TextTest, DebianFortunesLoad) {
  auto c = load_text(kDefaultTextPath);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_GT(c->train.size(), 1000000u);
  EXPECT_GT(c->valid.size(), 20000u);
  EXPECT_GT(c->test.size(), 20000u);
}

}  // namespace
}  // namespace pst
