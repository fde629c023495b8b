// The median the push/pull benchmarks print of their alternated rounds (the
// mean of the two middle values of an even count), and the spread of a
// ratio they print beside it: median [min-max].
#pragma once

#include <algorithm>
#include <vector>

namespace pst {

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

struct Spread {
  double median = 0, min = 0, max = 0;
};

inline Spread spread(const std::vector<double>& v) {
  return {median(v), *std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end())};
}

}  // namespace pst
