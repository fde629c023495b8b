#include "core/safetensors.h"

#include <fstream>

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace pst {
namespace {

SafetensorsFile sample() {
  SafetensorsFile f;
  const float a[6] = {1, -2, 3.5f, 0, 1e-30f, 7};
  const int32_t b[3] = {-1, 0, 42};
  f.add_f32("a", {2, 3}, a);
  f.add_i32("b", {3}, b);
  f.set_metadata("note", "hello");
  return f;
}

TEST(SafetensorsTest, RoundTrip) {
  testing::TempDir dir;
  ASSERT_TRUE(sample().write(dir.file("x.safetensors")).ok());
  auto r = SafetensorsFile::read(dir.file("x.safetensors"));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const StoredTensor* a = r->find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->to_f32(), (std::vector<float>{1, -2, 3.5f, 0, 1e-30f, 7}));
  EXPECT_EQ(r->find("b")->to_i32(), (std::vector<int32_t>{-1, 0, 42}));
  EXPECT_EQ(r->metadata().at("note"), "hello");
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.safetensors.tmp")));
}

// The layout is the documented one: 8-byte little-endian header size, JSON,
// data; checked by reading the bytes by hand.
TEST(SafetensorsTest, LayoutMatchesFormat) {
  testing::TempDir dir;
  SafetensorsFile f;
  const float v[2] = {1.0f, 2.0f};
  f.add_f32("v", {2}, v);
  ASSERT_TRUE(f.write(dir.file("v.st")).ok());
  std::ifstream in(dir.file("v.st"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  const std::string header = bytes.substr(8, n);
  EXPECT_NE(header.find("\"v\""), std::string::npos);
  EXPECT_NE(header.find("\"F32\""), std::string::npos);
  ASSERT_EQ(bytes.size(), 8 + n + 8);
  float back[2];
  std::memcpy(back, bytes.data() + 8 + n, 8);
  EXPECT_EQ(back[0], 1.0f);
  EXPECT_EQ(back[1], 2.0f);
}

void write_bytes(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

std::string with_header(const std::string& json, const std::string& data) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((json.size() >> (8 * i)) & 0xff);
  return s + json + data;
}

TEST(SafetensorsTest, CorruptFilesAreClearErrors) {
  testing::TempDir dir;
  const std::string p = dir.file("bad.st");
  struct Case {
    std::string bytes, fragment;
  };
  const std::vector<Case> cases = {
      {"abc", "too short"},
      {with_header("{", ""), "not valid JSON"},
      {std::string("\xff\xff\xff\xff\x00\x00\x00\x00", 8) + "{}",
       "is not a safetensors file: its first 8 bytes give a header length of 4294967295"},
      {with_header(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, '\0')), "outside"},
      {with_header(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')),
       "its shape needs 12"},
      {with_header(R"({"x":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}})", std::string(8, '\0')), "BF16"},
      {with_header(R"({"x":{"dtype":"F32"}})", ""), "needs dtype, shape and data_offsets"},
      // Shapes whose element count overflows 64 bits: 2^32 x 2^32 wrapped to 0
      // elements, which the 0 bytes matched, and a dimension past int64's range
      // read as a negative one.
      {with_header(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", ""),
       "has more elements than"},
      {with_header(R"({"x":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", ""),
       "has more elements than"},
      {with_header(R"({"x":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,4]}})",
                   std::string(4, '\0')),
       "has a bad shape entry"},
  };
  for (const Case& c : cases) {
    write_bytes(p, c.bytes);
    auto r = SafetensorsFile::read(p);
    ASSERT_FALSE(r.ok()) << c.fragment;
    EXPECT_NE(r.status().message().find(c.fragment), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(p), std::string::npos);
  }
  EXPECT_EQ(SafetensorsFile::read(dir.file("missing")).status().code(), StatusCode::kNotFound);
}

TEST(SafetensorsTest, TruncatedWriteOfRealFileIsDetected) {
  testing::TempDir dir;
  ASSERT_TRUE(sample().write(dir.file("x.st")).ok());
  std::filesystem::resize_file(dir.file("x.st"), std::filesystem::file_size(dir.file("x.st")) - 4);
  EXPECT_FALSE(SafetensorsFile::read(dir.file("x.st")).ok());
}

}  // namespace
}  // namespace pst
