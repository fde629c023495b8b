// The parameter table the push/pull benchmarks move: n floats in tensors of
// at most 1M floats.
#pragma once

#include <algorithm>

#include <fmt/format.h>

#include "model/param_table.h"

namespace pst {

inline ParamTable flat_table(int64_t n) {
  ParamTable t;
  for (int64_t off = 0, i = 0; off < n; off += 1 << 20, ++i) {
    ParamSpec p;
    p.name = fmt::format("w{}", i);
    p.shape = {std::min<int64_t>(1 << 20, n - off)};
    p.is_matrix_weight = true;
    t.add(p);
  }
  return t;
}

}  // namespace pst
