// Importance against constructed data, the PNG writer against zlib's own
// inflate and CRC (tune/report.h).
#include <zlib.h>

#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "tune/report.h"

namespace pst {
namespace {

TEST(ReportTest, ExplainedVarianceOfExactAndOfNoGroupEffect) {
  // y is its group's mean exactly: all of the variance is explained.
  EXPECT_NEAR(explained_variance({0, 0, 1, 1, 2, 2}, {1, 1, 3, 3, 5, 5}, 3), 1.0, 1e-12);
  // Groups that do not matter: noise alone scores about 0.
  std::mt19937 g(3);
  std::normal_distribution<double> n;
  std::vector<int> group;
  std::vector<double> y;
  for (int i = 0; i < 2000; ++i) group.push_back(i % 5), y.push_back(n(g));
  EXPECT_LT(explained_variance(group, y, 5), 0.01);
  // A known share: y = group effect (variance 1) + noise (variance 1): half.
  y.clear();
  for (int i = 0; i < 4000; ++i) y.push_back((i % 2 == 0 ? 1.0 : -1.0) + n(g));
  group.clear();
  for (int i = 0; i < 4000; ++i) group.push_back(i % 2);
  EXPECT_NEAR(explained_variance(group, y, 2), 0.5, 0.04);
}

TEST(ReportTest, ImportanceFindsTheKeyThatMatters) {
  SearchSpace s;
  s.params = {Param::range("a", ParamKind::kUniform, 0, 1), Param::range("b", ParamKind::kUniform, 0, 1),
              Param::choice("c", {})};
  s.params[2].values = {"x", "y", "z"};
  std::mt19937 g(9);
  std::uniform_real_distribution<double> u;
  std::normal_distribution<double> n;
  std::vector<Observation> obs;
  for (int i = 0; i < 200; ++i) {
    const double a = u(g), b = u(g), c = static_cast<double>(i % 3);
    obs.push_back({{a, b, c}, 10 * a + 0.1 * b + 0.01 * n(g)});
  }
  const auto imp = importance(s, obs);
  ASSERT_EQ(imp.size(), 3u);
  EXPECT_EQ(imp[0].key, "a");
  EXPECT_GT(imp[0].share, 0.95);
  EXPECT_GT(imp[0].explained, 0.85);  // binned in sqrt(200) -> 10 bins: a step function of a linear trend
  EXPECT_EQ(imp[0].trials, 200);
  double total = 0;
  for (const auto& i : imp) total += i.share;
  EXPECT_NEAR(total, 1.0, 1e-12);
}

uint32_t be32(const std::string& s, size_t at) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(s[at])) << 24) |
         (static_cast<uint32_t>(static_cast<uint8_t>(s[at + 1])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(s[at + 2])) << 8) | static_cast<uint8_t>(s[at + 3]);
}

TEST(ReportTest, ThePngDecodesAndPutsEachPointWhereTheFrameSays) {
  Param p = Param::range("optim.lr", ParamKind::kLogUniform, 1e-4, 1e-2);
  const std::vector<double> x = {1e-4, 1e-3, 1e-2}, y = {0.5, 0.3, 0.4};
  const PlotFrame f = plot_frame(p, x, y);
  // Drawn by write_scatter_png into a file; read it back.
  const std::string path = ::testing::TempDir() + "/plot.png";
  ASSERT_TRUE(write_scatter_png(path, p, x, y).ok());
  std::FILE* in = std::fopen(path.c_str(), "rb");
  ASSERT_NE(in, nullptr);
  std::string png;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, in)) > 0;) png.append(buf, n);
  std::fclose(in);
  ASSERT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  // Walk the chunks, checking each CRC with zlib's.
  size_t at = 8;
  std::string idat;
  uint32_t width = 0, height = 0;
  while (at < png.size()) {
    const uint32_t len = be32(png, at);
    const std::string type = png.substr(at + 4, 4), data = png.substr(at + 8, len);
    const uint32_t crc = be32(png, at + 8 + len);
    EXPECT_EQ(crc, crc32(0, reinterpret_cast<const Bytef*>(png.data() + at + 4), len + 4)) << type;
    if (type == "IHDR") width = be32(data, 0), height = be32(data, 4);
    if (type == "IDAT") idat += data;
    at += 12 + len;
  }
  ASSERT_EQ(width, 480u);
  ASSERT_EQ(height, 320u);
  std::string raw(static_cast<size_t>(height) * (1 + width * 3), '\0');
  uLongf size = raw.size();
  ASSERT_EQ(uncompress(reinterpret_cast<Bytef*>(raw.data()), &size, reinterpret_cast<const Bytef*>(idat.data()),
                       static_cast<uLong>(idat.size())),
            Z_OK);
  ASSERT_EQ(size, raw.size());
  auto pixel = [&](int px, int py) {
    const size_t o = static_cast<size_t>(py) * (1 + width * 3) + 1 + static_cast<size_t>(px) * 3;
    return std::vector<int>{static_cast<uint8_t>(raw[o]), static_cast<uint8_t>(raw[o + 1]),
                            static_cast<uint8_t>(raw[o + 2])};
  };
  const std::vector<int> blue = {31, 119, 180}, white = {255, 255, 255};
  // The log axis puts 1e-3 in the middle; the lowest y at the bottom.
  EXPECT_NEAR(f.px(1e-3), f.left + 0.5 * (f.width - 1), 1.0);
  EXPECT_EQ(f.py(0.3), f.top + f.height - 1);
  for (size_t k = 0; k < x.size(); ++k) EXPECT_EQ(pixel(f.px(x[k]), f.py(y[k])), blue) << k;
  EXPECT_EQ(pixel(f.left + f.width / 4, f.top + f.height / 2), white);
}

}  // namespace
}  // namespace pst
