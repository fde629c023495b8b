// What a finished study says (docs/tuning.md, Report): how much of the
// objective's variance each key explains, and a plot of the objective
// against each key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "tune/sampler.h"
#include "tune/space.h"

namespace pst {

// The share of y's variance that the groups explain, corrected for the
// groups' number (epsilon squared: (SSB - (G-1) MSW) / (SST + MSW), clipped
// at 0), so noise alone scores about 0 whatever the number of trials.
// group[i]: the group of observation i (0 .. groups-1).
double explained_variance(const std::vector<int>& group, const std::vector<double>& y, int groups);

struct Importance {
  std::string key;
  double explained = 0;  // explained_variance over the trials where the key was active
  double share = 0;      // explained / the sum over all keys (0 when that sum is 0)
  int64_t trials = 0;
};
// Per dimension: a choice groups by its value, a range by equal-count bins
// of its values (about sqrt(n) of them, 2 to 10). Sorted by share, largest
// first. A first-order, variance-based estimate: interactions between keys
// are not apportioned.
std::vector<Importance> importance(const SearchSpace& space, const std::vector<Observation>& done);

// An RGB image and what it takes to write it as a PNG.
struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // row-major, 3 bytes a pixel
  Image(int w, int h) : width(w), height(h), rgb(static_cast<size_t>(w) * static_cast<size_t>(h) * 3, 255) {}
  void set(int x, int y, uint8_t r, uint8_t g, uint8_t b);
};
// The PNG file (8-bit RGB, zlib-compressed, every row with filter 0).
std::string png_bytes(const Image& image);

// The scatter plot of y (the objective) against dimension p's values (log
// axis for log ranges, one column per value for a choice), min and max of
// each axis written at its ends, as a PNG file.
Status write_scatter_png(const std::string& path, const Param& p, const std::vector<double>& x,
                         const std::vector<double>& y);

// Where write_scatter_png puts the point (x, y) in its image, for tests.
struct PlotFrame {
  int left = 0, top = 0, width = 0, height = 0;
  double x_lo = 0, x_hi = 0, y_lo = 0, y_hi = 0;
  bool log_x = false;
  int px(double x) const;
  int py(double y) const;
};
PlotFrame plot_frame(const Param& p, const std::vector<double>& x, const std::vector<double>& y);

}  // namespace pst
