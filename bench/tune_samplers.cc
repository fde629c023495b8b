// pst's samplers on objectives with known optima: for each seed, the first
// trial whose point is within reach of the optimum (trials-to-target), one
// line per (objective, sampler, seed). bench/tune_samplers.sh runs Optuna's
// TPESampler on the same objectives and compares the medians.
//
// Usage: tune_samplers [SEEDS] [BUDGET]
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>

#include <fmt/format.h>

#include "core/philox.h"
#include "tune/sampler.h"
#include "tune/test_functions.h"

namespace {

using pst::Observation;
using pst::Param;
using pst::ParamKind;
using pst::Point;
using pst::SearchSpace;

struct Problem {
  const char* name;
  SearchSpace space;
  std::function<double(const Point&)> f;  // the true objective
  double noise;                           // sd of Gaussian noise the sampler sees
  double target;                          // reached when the true objective is at most this
};

std::vector<Problem> problems() {
  SearchSpace br;
  br.params = {Param::range("x1", ParamKind::kUniform, -5, 10), Param::range("x2", ParamKind::kUniform, 0, 15)};
  auto fb = [](const Point& p) { return pst::branin(*p[0], *p[1]); };
  SearchSpace h6;
  for (int j = 0; j < 6; ++j) h6.params.push_back(Param::range(fmt::format("x{}", j), ParamKind::kUniform, 0, 1));
  auto fh = [](const Point& p) {
    std::vector<double> x;
    for (const auto& v : p) x.push_back(*v);
    return pst::hartmann6(x);
  };
  return {{"branin", br, fb, 0.0, 0.5}, {"hartmann6", h6, fh, 0.0, -3.0}, {"noisy_branin", br, fb, 1.0, 0.5}};
}

}  // namespace

int main(int argc, char** argv) {
  const int seeds = argc > 1 ? std::atoi(argv[1]) : 20;
  const int budget = argc > 2 ? std::atoi(argv[2]) : 300;
  for (const Problem& pr : problems()) {
    for (pst::SamplerKind kind : {pst::SamplerKind::kTpe, pst::SamplerKind::kRandom}) {
      for (int seed = 1; seed <= seeds; ++seed) {
        auto sampler = pst::make_sampler(kind, pr.space, static_cast<uint64_t>(seed));
        if (!sampler.ok()) return 1;
        const pst::Philox noise(static_cast<uint64_t>(seed), 0x6e6f697365);
        std::vector<Observation> done;
        int reached = budget + 1;  // not within the budget
        for (int n = 0; n < budget; ++n) {
          const Point p = (*sampler)->suggest(n, done);
          const double truth = pr.f(p);
          if (truth <= pr.target) {
            reached = n + 1;
            break;
          }
          done.push_back({p, truth + pr.noise * noise.normal(static_cast<uint64_t>(n))});
        }
        std::printf("%s pst_%s %d %d\n", pr.name, pst::to_string(kind), seed, reached);
      }
    }
  }
  return 0;
}
