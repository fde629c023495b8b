// How `pst tune` picks the next trial's point (docs/tuning.md, Samplers):
// a grid, uniform random points, a scrambled Halton sequence, or the
// Tree-structured Parzen Estimator (Bergstra et al., "Algorithms for
// hyper-parameter optimization", NIPS 2011).
//
// Every sampler is a pure function of (seed, trial number, the finished
// trials), so a resumed study draws what the first run would have.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "tune/space.h"

namespace pst {

enum class SamplerKind { kGrid, kRandom, kHalton, kTpe };
Result<SamplerKind> parse_sampler(const std::string& name);
const char* to_string(SamplerKind k);

// A finished trial as samplers see it: its point and its objective, lower
// better (a maximised metric is negated first).
struct Observation {
  Point point;
  double value = 0;
  // The step of the figure. TPE ranks by (step, descending; then value), as
  // Optuna does: a trial stopped early ranks after every trial that went
  // further, whatever its figure (figures of different steps do not compare).
  int64_t step = 0;
};

struct TpeOptions {
  int64_t startup = 10;     // random trials before the model takes over
  int64_t candidates = 24;  // draws from l(x) scored by l(x) / g(x)
  double gamma = 0.1;       // share of the observations that are "good"...
  int64_t max_good = 25;    // ...at most this many
};

class Sampler {
 public:
  virtual ~Sampler() = default;
  // The point of trial `number` (0, 1, ...).
  virtual Point suggest(int64_t number, const std::vector<Observation>& done) = 0;
  // The grid's number of distinct points; -1 for samplers without an end.
  virtual int64_t size() const { return -1; }
};

// The grid needs every range to name its points (ints: every step unless
// `points` is given); the error names the range that does not.
Result<std::unique_ptr<Sampler>> make_sampler(SamplerKind kind, const SearchSpace& space, uint64_t seed,
                                              const TpeOptions& tpe = {});

// The radical inverse of n in base b (van der Corput): Halton's coordinate.
double radical_inverse(uint64_t n, uint64_t base);

// The weights of n observations in the order they were made: 1 each up to
// 25, beyond that a ramp from 1/n for the oldest to 1 for the 25 newest (so
// an old region the search has left weighs less).
std::vector<double> recency_weights(size_t n);

// One-dimensional Parzen estimator on [0, 1] (TPE's l(x) and g(x)): a
// weighted mixture of normals truncated to [0, 1], one at each observation
// and a prior N(0.5, 1) of weight 1. A component's width is the larger gap
// to its neighbours (the outermost ones: to their one neighbour), clipped to
// [1 / min(100, 1 + components), 1].
class Parzen {
 public:
  // weights: one per mu (empty: 1 each).
  explicit Parzen(std::vector<double> mus, std::vector<double> weights = {});
  // The log of the mixture's density (it integrates to 1 over [0, 1]).
  double log_pdf(double x) const;
  // The log of the score TPE ranks candidates by: the same mixture with each
  // kernel of height 1 / (sqrt(2 pi) mass) instead of area 1, so a wide
  // kernel (an isolated observation, the prior) counts for more than in the
  // density. Optuna up to 3.4 scored this way (its truncated normal left out
  // the 1 / sigma; fixed in 3.5, optuna/optuna#5109); in
  // bench/tune_samplers it needs about 30% fewer trials on Hartmann-6 than
  // the density does (docs/tuning.md).
  double log_score(double x) const;
  // A draw: `pick` in [0, 1) chooses the component by weight, then normals
  // until one lands in [0, 1] (u: a uniform fallback, never needed in practice).
  double sample(double pick, const std::function<double(int)>& normal, const std::function<double(int)>& u) const;
  const std::vector<double>& mus() const { return mus_; }
  const std::vector<double>& sigmas() const { return sigmas_; }
  const std::vector<double>& weights() const { return weights_; }

 private:
  double log_mixture(double x, bool per_mass) const;
  std::vector<double> mus_, sigmas_, weights_;
};

}  // namespace pst
