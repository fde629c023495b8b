// Asynchronous successive halving (Li et al., "A system for massively
// parallel hyperparameter tuning", MLSys 2020), in its stopping form: a
// trial that reaches a rung (min_steps x reduction^k steps) goes on only if
// its validation figure there is among the best 1/reduction of those the
// rung has seen, so about 1/reduction^k of the trials train past rung k and
// no trial waits for another.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

namespace pst {

class Asha {
 public:
  // Rungs at min_steps * reduction^k below max_steps (a trial at max_steps
  // is complete, not judged).
  Asha(int64_t min_steps, int64_t reduction, int64_t max_steps);
  const std::vector<int64_t>& rungs() const { return rungs_; }
  // The rungs a validation at `step` passes when the trial's previous one
  // was at `previous_step` (-1: none): those in (previous_step, step].
  std::vector<int> passed(int64_t previous_step, int64_t step) const;
  // Records trial's figure (lower better) at rung k and says whether the
  // trial goes on: yes while the rung has fewer than `reduction` figures
  // (too few to judge), else when fewer than floor(n / reduction) of the n
  // figures are strictly better. A trial's second report at a rung (a
  // resumed study replaying its journal) replaces the first.
  bool report(int rung, int64_t trial, double value);
  // The figures a rung holds.
  size_t seen(int rung) const { return values_.count(rung) ? values_.at(rung).size() : 0; }

 private:
  int64_t reduction_;
  std::vector<int64_t> rungs_;
  std::map<int, std::map<int64_t, double>> values_;  // rung -> trial -> figure
};

}  // namespace pst
