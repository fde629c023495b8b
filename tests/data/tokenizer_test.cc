// The LM tokenizers: bytes, and SentencePiece models trained by
// train_sentencepiece on a small text. Each id's byte count is checked
// against the text it decodes to, so bits per byte stay per byte of text.
#include "data/tokenizer.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "data/text.h"
#include "tests/test_util.h"

namespace pst {
namespace {

std::vector<uint8_t> as_bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

// Lines of a small made-up language: enough repetition for BPE merges.
std::string training_text() {
  const char* words[] = {"the", "cat", "sat", "on", "mat", "a", "dog", "ran", "to", "park", "and", "then", "home"};
  std::string text;
  uint32_t x = 12345;
  for (int line = 0; line < 400; ++line) {
    const int n = 3 + line % 7;
    for (int w = 0; w < n; ++w) {
      x = x * 1664525u + 1013904223u;
      text += std::string(w ? " " : "") + words[(x >> 16) % 13];
    }
    text += line % 5 == 0 ? ".\n" : "\n";
  }
  return text;
}

class SentencePieceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    TokenizerTraining t;
    t.vocab = 300;
    ASSERT_TRUE(train_sentencepiece(as_bytes(training_text()), t, dir_->file("m.model")).ok());
  }
  static void TearDownTestSuite() { delete dir_; }
  static testing::TempDir* dir_;
};
testing::TempDir* SentencePieceTest::dir_ = nullptr;

TEST(TokenizerTest, BytesAreTheirOwnIds) {
  const Tokenizer t;
  EXPECT_TRUE(t.is_bytes());
  EXPECT_EQ(t.vocab_size(), 256);
  const std::string text = "h\xc3\xa9\n\tx";
  std::vector<int32_t> ids, bytes;
  t.encode(text, &ids, &bytes);
  EXPECT_EQ(ids, (std::vector<int32_t>{'h', 0xc3, 0xa9, '\n', '\t', 'x'}));
  EXPECT_EQ(bytes, std::vector<int32_t>(6, 1));
  EXPECT_EQ(t.decode(ids), text);
}

TEST_F(SentencePieceTest, RoundTripsAnyTextAndCountsItsBytes) {
  auto t = Tokenizer::sentencepiece_file(dir_->file("m.model"));
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_FALSE(t->is_bytes());
  EXPECT_EQ(t->vocab_size(), 300);
  // Line breaks, blank lines, runs of spaces, tabs, and characters the
  // training text never had (byte fallback), including multi-byte UTF-8.
  for (const std::string& text :
       {std::string("the cat sat on the mat\n"), std::string("\n\nthe  dog\tran   to the park\n\n"),
        std::string("  leading and trailing  "), std::string("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac ZQX!\n#"),
        std::string("")}) {
    std::vector<int32_t> ids, bytes;
    t->encode(text, &ids, &bytes);
    ASSERT_EQ(ids.size(), bytes.size());
    EXPECT_EQ(t->decode(ids), text) << "'" << text << "'";
    int64_t sum = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      sum += bytes[i];
      EXPECT_GE(ids[i], 0);
      EXPECT_LT(ids[i], t->vocab_size());
      if (ids[i] == t->newline_id()) {
        EXPECT_EQ(bytes[i], 1);
      }
    }
    EXPECT_EQ(sum, static_cast<int64_t>(text.size())) << "'" << text << "'";
  }
  // Merges learnt: the training text takes fewer ids than bytes.
  std::vector<int32_t> ids;
  const std::string text = training_text();
  t->encode(text, &ids, nullptr);
  EXPECT_LT(ids.size() * 2, text.size());
  EXPECT_EQ(t->decode(ids), text);
}

// A window's target bytes are the bytes its target ids decode to.
TEST_F(SentencePieceTest, WindowsCountTheBytesTheirTargetsDecodeTo) {
  auto t = Tokenizer::sentencepiece_file(dir_->file("m.model"));
  ASSERT_TRUE(t.ok());
  const TokenStream stream = tokenize(*t, as_bytes(training_text()));
  ASSERT_EQ(stream.byte_prefix.back(), static_cast<int64_t>(training_text().size()));
  TextDataset d(&stream, 16);
  ASSERT_GT(d.size(), 10);
  for (int64_t w : {int64_t{0}, int64_t{3}, d.size() - 1}) {
    const Example e = d.get(w);
    // Decoded on its own a piece may lose the leading space marker's byte
    // at the start of a line; the pieces' own surfaces are what count.
    std::vector<int32_t> with_context(stream.ids.begin(), stream.ids.begin() + (w + 1) * 16 + 1);
    std::vector<int32_t> before(stream.ids.begin(), stream.ids.begin() + w * 16 + 1);
    const int64_t expect =
        static_cast<int64_t>(t->decode(with_context).size()) - static_cast<int64_t>(t->decode(before).size());
    EXPECT_EQ(d.target_bytes(w), expect) << "window " << w;
    EXPECT_EQ(e.tgt_out.size(), 16u);
  }
}

TEST_F(SentencePieceTest, BadModelsAreClearErrors) {
  auto missing = Tokenizer::sentencepiece_file(dir_->file("absent.model"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("absent.model"), std::string::npos);
  std::ofstream(dir_->file("junk.model")) << "not a model";
  auto junk = Tokenizer::sentencepiece_file(dir_->file("junk.model"));
  ASSERT_FALSE(junk.ok());
  EXPECT_NE(junk.status().message().find("not a SentencePiece model"), std::string::npos);
  TokenizerTraining tiny;
  tiny.vocab = 300;
  EXPECT_FALSE(train_sentencepiece(as_bytes("\n\n"), tiny, dir_->file("empty.model")).ok());
}

}  // namespace
}  // namespace pst
