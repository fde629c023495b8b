#include "tune/asha.h"

namespace pst {

Asha::Asha(int64_t min_steps, int64_t reduction, int64_t max_steps) : reduction_(reduction) {
  for (int64_t r = min_steps; r > 0 && r < max_steps; r *= reduction) {
    rungs_.push_back(r);
    if (reduction < 2) break;
  }
}

std::vector<int> Asha::passed(int64_t previous_step, int64_t step) const {
  std::vector<int> out;
  for (size_t k = 0; k < rungs_.size(); ++k)
    if (rungs_[k] > previous_step && rungs_[k] <= step) out.push_back(static_cast<int>(k));
  return out;
}

bool Asha::report(int rung, int64_t trial, double value) {
  auto& at = values_[rung];
  at[trial] = value;
  const int64_t n = static_cast<int64_t>(at.size());
  if (n < reduction_) return true;
  int64_t better = 0;
  for (const auto& [t, v] : at)
    if (v < value) ++better;
  return better < n / reduction_;
}

}  // namespace pst
