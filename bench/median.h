// The median the push/pull benchmarks print of their alternated rounds (the
// mean of the two middle values of an even count).
#pragma once

#include <algorithm>
#include <vector>

namespace pst {

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

}  // namespace pst
