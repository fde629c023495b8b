#include "tune/report.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include <fmt/format.h>

#include "core/files.h"

namespace pst {

double explained_variance(const std::vector<int>& group, const std::vector<double>& y, int groups) {
  const size_t n = y.size();
  if (n < 3 || groups < 2) return 0;
  const double mean = std::accumulate(y.begin(), y.end(), 0.0) / static_cast<double>(n);
  std::vector<double> sum(static_cast<size_t>(groups), 0.0), count(static_cast<size_t>(groups), 0.0);
  for (size_t i = 0; i < n; ++i) {
    sum[static_cast<size_t>(group[i])] += y[i];
    count[static_cast<size_t>(group[i])] += 1;
  }
  double sst = 0, ssb = 0;
  for (double v : y) sst += (v - mean) * (v - mean);
  int used = 0;
  for (size_t g = 0; g < sum.size(); ++g) {
    if (count[g] == 0) continue;
    ++used;
    const double m = sum[g] / count[g];
    ssb += count[g] * (m - mean) * (m - mean);
  }
  if (used < 2 || sst <= 0 || static_cast<int64_t>(n) <= used) return 0;
  const double msw = (sst - ssb) / static_cast<double>(static_cast<int64_t>(n) - used);
  return std::max(0.0, (ssb - static_cast<double>(used - 1) * msw) / (sst + msw));
}

std::vector<Importance> importance(const SearchSpace& space, const std::vector<Observation>& done) {
  std::vector<Importance> out;
  double total = 0;
  for (size_t i = 0; i < space.size(); ++i) {
    const Param& p = space.params[i];
    std::vector<double> x, y;
    for (const Observation& o : done)
      if (o.point[i]) x.push_back(*o.point[i]), y.push_back(o.value);
    const size_t n = x.size();
    std::vector<int> group(n);
    int groups;
    if (p.kind == ParamKind::kChoice) {
      for (size_t k = 0; k < n; ++k) group[k] = static_cast<int>(x[k]);
      groups = static_cast<int>(p.values.size());
    } else {
      groups = std::clamp(static_cast<int>(std::lround(std::sqrt(static_cast<double>(n)))), 2, 10);
      std::vector<size_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
      // Equal-count bins by rank; equal values share the bin of the first.
      for (size_t r = 0; r < n; ++r) {
        const size_t k = order[r];
        group[k] = (r > 0 && x[k] == x[order[r - 1]]) ? group[order[r - 1]]
                                                      : static_cast<int>(r * static_cast<size_t>(groups) / n);
      }
    }
    Importance imp{p.key, explained_variance(group, y, groups), 0, static_cast<int64_t>(n)};
    total += imp.explained;
    out.push_back(imp);
  }
  for (Importance& imp : out) imp.share = total > 0 ? imp.explained / total : 0;
  std::stable_sort(out.begin(), out.end(), [](const Importance& a, const Importance& b) { return a.share > b.share; });
  return out;
}

void Image::set(int x, int y, uint8_t r, uint8_t g, uint8_t b) {
  if (x < 0 || y < 0 || x >= width || y >= height) return;
  uint8_t* px = &rgb[(static_cast<size_t>(y) * static_cast<size_t>(width) + static_cast<size_t>(x)) * 3];
  px[0] = r, px[1] = g, px[2] = b;
}

namespace {

void put_u32(std::string& s, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) s.push_back(static_cast<char>((v >> shift) & 0xff));
}

void chunk(std::string& out, const char* type, const std::string& data) {
  put_u32(out, static_cast<uint32_t>(data.size()));
  const std::string body = std::string(type, 4) + data;
  out += body;
  put_u32(out,
          static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()))));
}

// A 3x5 font for the axis labels: each glyph five rows of three bits.
int glyph(char c, int row) {
  static const char* kChars = "0123456789.-e+";
  static const uint8_t kRows[][5] = {{7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 7, 1, 7},
                                     {5, 5, 7, 1, 1}, {7, 4, 7, 1, 7}, {7, 4, 7, 5, 7}, {7, 1, 1, 1, 1},
                                     {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7}, {0, 0, 0, 0, 2}, {0, 0, 7, 0, 0},
                                     {0, 7, 5, 6, 7}, {0, 2, 7, 2, 0}};
  const char* at = std::strchr(kChars, c);
  if (!at || c == 0) return 0;
  return kRows[at - kChars][row];
}

// Text at (x, y), its top left corner, 2 pixels a font pixel.
void text(Image& img, int x, int y, const std::string& s) {
  for (char c : s) {
    for (int row = 0; row < 5; ++row)
      for (int col = 0; col < 3; ++col)
        if (glyph(c, row) & (4 >> col))
          for (int dy = 0; dy < 2; ++dy)
            for (int dx = 0; dx < 2; ++dx) img.set(x + col * 2 + dx, y + row * 2 + dy, 0, 0, 0);
    x += 8;
  }
}

std::string label(double v) { return fmt::format("{:.3g}", v); }

constexpr int kWidth = 480, kHeight = 320;

}  // namespace

std::string png_bytes(const Image& image) {
  std::string out("\x89PNG\r\n\x1a\n", 8);
  std::string ihdr;
  put_u32(ihdr, static_cast<uint32_t>(image.width));
  put_u32(ihdr, static_cast<uint32_t>(image.height));
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8 bits, RGB, deflate, filter 0, no interlace
  chunk(out, "IHDR", ihdr);
  std::string raw;
  const size_t row = static_cast<size_t>(image.width) * 3;
  for (int y = 0; y < image.height; ++y) {
    raw.push_back(0);
    raw.append(reinterpret_cast<const char*>(&image.rgb[static_cast<size_t>(y) * row]), row);
  }
  uLongf size = compressBound(static_cast<uLong>(raw.size()));
  std::string z(size, '\0');
  compress2(reinterpret_cast<Bytef*>(z.data()), &size, reinterpret_cast<const Bytef*>(raw.data()),
            static_cast<uLong>(raw.size()), 6);
  z.resize(size);
  chunk(out, "IDAT", z);
  chunk(out, "IEND", "");
  return out;
}

int PlotFrame::px(double x) const {
  const double a = log_x ? std::log(x) : x, lo = log_x ? std::log(x_lo) : x_lo, hi = log_x ? std::log(x_hi) : x_hi;
  return left + static_cast<int>(std::lround((a - lo) / (hi - lo) * (width - 1)));
}

int PlotFrame::py(double y) const {
  return top + height - 1 - static_cast<int>(std::lround((y - y_lo) / (y_hi - y_lo) * (height - 1)));
}

PlotFrame plot_frame(const Param& p, const std::vector<double>& x, const std::vector<double>& y) {
  PlotFrame f;
  f.left = 60, f.top = 16, f.width = kWidth - 80, f.height = kHeight - 48;
  f.log_x = p.kind == ParamKind::kLogUniform || (p.kind == ParamKind::kInt && p.log);
  if (p.kind == ParamKind::kChoice) {
    f.x_lo = -0.5, f.x_hi = static_cast<double>(p.values.size()) - 0.5;
  } else {
    f.x_lo = p.low, f.x_hi = p.high;
  }
  (void)x;
  f.y_lo = y.empty() ? 0 : *std::min_element(y.begin(), y.end());
  f.y_hi = y.empty() ? 1 : *std::max_element(y.begin(), y.end());
  if (f.y_hi - f.y_lo < 1e-12) f.y_lo -= 0.5, f.y_hi += 0.5;
  return f;
}

Status write_scatter_png(const std::string& path, const Param& p, const std::vector<double>& x,
                         const std::vector<double>& y) {
  Image img(kWidth, kHeight);
  const PlotFrame f = plot_frame(p, x, y);
  for (int i = -1; i <= f.width; ++i)
    img.set(f.left + i, f.top + f.height, 0, 0, 0), img.set(f.left + i, f.top - 1, 0, 0, 0);
  for (int j = -1; j <= f.height; ++j)
    img.set(f.left - 1, f.top + j, 0, 0, 0), img.set(f.left + f.width, f.top + j, 0, 0, 0);
  for (size_t k = 0; k < x.size(); ++k) {
    const int cx = f.px(x[k]), cy = f.py(y[k]);
    for (int dy = -2; dy <= 2; ++dy)
      for (int dx = -2; dx <= 2; ++dx) img.set(cx + dx, cy + dy, 31, 119, 180);
  }
  // Axis ends: the y range at the left, the x range (or the choices' indices) below.
  text(img, 2, f.top, label(f.y_hi));
  text(img, 2, f.top + f.height - 10, label(f.y_lo));
  if (p.kind == ParamKind::kChoice) {
    for (size_t c = 0; c < p.values.size(); ++c)
      text(img, f.px(static_cast<double>(c)) - 3, f.top + f.height + 6, std::to_string(c));
  } else {
    text(img, f.left, f.top + f.height + 6, label(f.x_lo));
    const std::string hi = label(f.x_hi);
    text(img, f.left + f.width - 8 * static_cast<int>(hi.size()), f.top + f.height + 6, hi);
  }
  return write_atomic(path, png_bytes(img));
}

}  // namespace pst
