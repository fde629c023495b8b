// The samplers against brute force and formulas, and TPE against random
// search on objectives with known optima (tune/sampler.h).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "tune/sampler.h"
#include "tune/test_functions.h"

namespace pst {
namespace {

SearchSpace space_of(std::vector<Param> params) {
  SearchSpace s;
  s.params = std::move(params);
  return s;
}

Param uniform(const std::string& key, double lo, double hi) { return Param::range(key, ParamKind::kUniform, lo, hi); }

Param choice(const std::string& key, std::vector<std::string> values) { return Param::choice(key, std::move(values)); }

TEST(SamplerTest, RadicalInverseIsTheMirroredDigits) {
  EXPECT_DOUBLE_EQ(radical_inverse(1, 2), 0.5);
  EXPECT_DOUBLE_EQ(radical_inverse(2, 2), 0.25);
  EXPECT_DOUBLE_EQ(radical_inverse(3, 2), 0.75);
  EXPECT_DOUBLE_EQ(radical_inverse(6, 2), 0.375);              // 110 -> 0.011
  EXPECT_DOUBLE_EQ(radical_inverse(7, 3), 1.0 / 3 + 2.0 / 9);  // 21 in base 3 -> 0.12
}

TEST(SamplerTest, TheGridIsEveryDistinctPointOnce) {
  // a: 2 values; b: ints 1..3; c: 2 points, only when a = x. Brute force:
  // a = x gives 3 x 2 points, a = y gives 3 (c inactive): 9.
  Param b = Param::range("b", ParamKind::kInt, 1, 3, 1);
  Param c = uniform("c", 0, 1);
  c.points = 2;
  c.when_key = "a";
  c.when_values = {"x"};
  const SearchSpace s = space_of({choice("a", {"x", "y"}), b, c});
  auto grid = make_sampler(SamplerKind::kGrid, s, 7);
  ASSERT_TRUE(grid.ok()) << grid.status().message();
  ASSERT_EQ((*grid)->size(), 9);
  std::set<std::vector<double>> seen;
  for (int64_t n = 0; n < 9; ++n) {
    const Point p = (*grid)->suggest(n, {});
    ASSERT_TRUE(p[0] && p[1]);
    EXPECT_EQ(p[2].has_value(), *p[0] == 0) << "c is active exactly when a = x";
    seen.insert({*p[0], *p[1], p[2] ? *p[2] : -1});
  }
  std::set<std::vector<double>> expect;
  for (double bv : {1.0, 2.0, 3.0}) {
    expect.insert({0, bv, 0.0});
    expect.insert({0, bv, 1.0});
    expect.insert({1, bv, -1});
  }
  EXPECT_EQ(seen, expect);
  // A float range without points has no grid.
  auto bad = make_sampler(SamplerKind::kGrid, space_of({uniform("u", 0, 1)}), 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("points = N"), std::string::npos);
}

// Kolmogorov-Smirnov distance of the sample to U(0, 1).
double ks_uniform(std::vector<double> u) {
  std::sort(u.begin(), u.end());
  double d = 0;
  const double n = static_cast<double>(u.size());
  for (size_t i = 0; i < u.size(); ++i)
    d = std::max({d, std::abs(u[i] - static_cast<double>(i) / n), std::abs(static_cast<double>(i + 1) / n - u[i])});
  return d;
}

// The largest gap between the share of points in an anchored box [0, a) x
// [0, b) and its area, over a grid of boxes: the star discrepancy, from below.
double star_discrepancy(const std::vector<std::pair<double, double>>& pts) {
  double d = 0;
  for (int i = 1; i <= 64; ++i)
    for (int j = 1; j <= 64; ++j) {
      const double a = i / 64.0, b = j / 64.0;
      const double in = static_cast<double>(
          std::count_if(pts.begin(), pts.end(), [&](auto& p) { return p.first < a && p.second < b; }));
      d = std::max(d, std::abs(in / static_cast<double>(pts.size()) - a * b));
    }
  return d;
}

TEST(SamplerTest, RandomIsUniformAndHaltonMoreEven) {
  const SearchSpace s = space_of({uniform("x", 0, 1), uniform("y", 0, 1)});
  auto random = make_sampler(SamplerKind::kRandom, s, 3);
  auto halton = make_sampler(SamplerKind::kHalton, s, 3);
  ASSERT_TRUE(random.ok() && halton.ok());
  std::vector<double> xs;
  std::vector<std::pair<double, double>> rp, hp;
  for (int64_t n = 0; n < 2000; ++n) {
    const Point p = (*random)->suggest(n, {});
    xs.push_back(*p[0]);
    if (n < 256) rp.emplace_back(*p[0], *p[1]);
    const Point h = (*halton)->suggest(n, {});
    if (n < 256) hp.emplace_back(*h[0], *h[1]);
  }
  // KS at the 1% level: 1.63 / sqrt(n).
  EXPECT_LT(ks_uniform(xs), 1.63 / std::sqrt(2000.0));
  // Halton's 256 points: discrepancy of order log^2(n)/n; random points' of order 1/sqrt(n).
  const double dh = star_discrepancy(hp), dr = star_discrepancy(rp);
  EXPECT_LT(dh, 0.03);
  EXPECT_LT(dh, dr);
  // The same seed, the same points; another seed, others.
  auto again = make_sampler(SamplerKind::kHalton, s, 3);
  auto other = make_sampler(SamplerKind::kHalton, s, 4);
  EXPECT_EQ((*again)->suggest(5, {}), (*halton)->suggest(5, {}));
  EXPECT_NE((*other)->suggest(5, {}), (*halton)->suggest(5, {}));
}

TEST(SamplerTest, ParzenIsADensityAndSamplesIt) {
  const Parzen pz({0.1, 0.15, 0.8});
  // Integrates to 1 over [0, 1] (midpoint rule).
  double mass = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) mass += std::exp(pz.log_pdf((i + 0.5) / n)) / n;
  EXPECT_NEAR(mass, 1.0, 1e-3);
  // Widths: the larger gap to a neighbour, the prior's 1.
  EXPECT_NEAR(pz.sigmas()[0], 0.2, 1e-12);  // 0.1 to the edge, clipped up to 1 / (1 + 4 components)
  EXPECT_NEAR(pz.sigmas()[2], 0.3, 1e-12);  // the prior at 0.5 is 0.3 away
  EXPECT_DOUBLE_EQ(pz.sigmas()[3], 1.0);
  // TPE's score: Optuna 3.1's _ParzenEstimator.log_pdf on the same
  // observations (its defaults: prior weight 1, magic clip, no endpoints)
  // gives these values.
  const double x[] = {0.05, 0.3, 0.7, 0.99};
  const double optuna[] = {-0.64147416, -0.66468312, -0.8490007, -1.05198071};
  for (int k = 0; k < 4; ++k) EXPECT_NEAR(pz.log_score(x[k]), optuna[k], 1e-6) << x[k];
  // The density by hand at 0.05: sum over components of w N(x; mu, s) / mass.
  double by_hand = 0;
  for (int k = 0; k < 4; ++k) {
    const double mu = pz.mus()[static_cast<size_t>(k)], s = pz.sigmas()[static_cast<size_t>(k)];
    const double mass = 0.5 * (std::erf((1 - mu) / s / std::sqrt(2.0)) - std::erf(-mu / s / std::sqrt(2.0)));
    by_hand += 0.25 * std::exp(-0.5 * (0.05 - mu) * (0.05 - mu) / (s * s)) / (s * std::sqrt(2 * M_PI)) / mass;
  }
  EXPECT_NEAR(pz.log_pdf(0.05), std::log(by_hand), 1e-12);
  // Draws follow the density: the share in [0, 0.25) against its integral.
  std::mt19937 g(5);
  std::normal_distribution<double> norm;
  std::uniform_real_distribution<double> uni;
  int in = 0;
  const int draws = 20000;
  for (int k = 0; k < draws; ++k) {
    const double x = pz.sample(
        uni(g), [&](int) { return norm(g); }, [&](int) { return uni(g); });
    ASSERT_GE(x, 0);
    ASSERT_LT(x, 1);
    if (x < 0.25) ++in;
  }
  double want = 0;
  for (int i = 0; i < n / 4; ++i) want += std::exp(pz.log_pdf((i + 0.5) / n)) / n;
  const double sd = std::sqrt(want * (1 - want) / draws);
  EXPECT_NEAR(static_cast<double>(in) / draws, want, 4 * sd);
}

// Best figure after `trials` trials of a sampler on f over the space.
double best_after(SamplerKind kind, const SearchSpace& s, uint64_t seed, int trials,
                  const std::function<double(const Point&)>& f) {
  auto sampler = make_sampler(kind, s, seed);
  std::vector<Observation> done;
  double best = INFINITY;
  for (int n = 0; n < trials; ++n) {
    const Point p = (*sampler)->suggest(n, done);
    const double v = f(p);
    done.push_back({p, v});
    best = std::min(best, v);
  }
  return best;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

TEST(SamplerTest, TpeBeatsRandomSearchOnBraninAndHartmann) {
  const SearchSpace br = space_of({uniform("x1", -5, 10), uniform("x2", 0, 15)});
  auto fb = [](const Point& p) { return branin(*p[0], *p[1]); };
  std::vector<Param> h;
  for (int j = 0; j < 6; ++j) h.push_back(uniform("x" + std::to_string(j), 0, 1));
  const SearchSpace hs = space_of(h);
  auto fh = [](const Point& p) {
    std::vector<double> x;
    for (const auto& v : p) x.push_back(*v);
    return hartmann6(x);
  };
  // The oracle's own check: the published minimiser.
  EXPECT_NEAR(hartmann6({0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573}), kHartmann6Min, 1e-4);
  EXPECT_NEAR(branin(3.14159265358979, 2.275), kBraninMin, 1e-5);
  std::vector<double> tb, rb, th, rh;
  for (uint64_t seed = 1; seed <= 9; ++seed) {
    tb.push_back(best_after(SamplerKind::kTpe, br, seed, 60, fb));
    rb.push_back(best_after(SamplerKind::kRandom, br, seed, 60, fb));
    th.push_back(best_after(SamplerKind::kTpe, hs, seed, 80, fh));
    rh.push_back(best_after(SamplerKind::kRandom, hs, seed, 80, fh));
  }
  EXPECT_LT(median(tb), median(rb));
  EXPECT_LT(median(tb), 1.0);  // within 0.6 of the optimum after 60 trials
  EXPECT_LT(median(th), median(rh));
}

TEST(SamplerTest, TpeRanksATrialStoppedEarlyAfterThoseThatWentFurther) {
  // 20 trials: the 10 that ran to step 100 all sit at x near 0.9; those
  // stopped at step 10 at x near 0.1 have far smaller figures. Ranked by
  // (step, figure) the good part is the finished trials', so the model's pick
  // lands near 0.9; ranked by figure alone it would land near 0.1.
  const SearchSpace s = space_of({uniform("x", 0, 1)});
  std::vector<Observation> done;
  for (int k = 0; k < 10; ++k) {
    done.push_back({{0.88 + 0.004 * k}, 0.5 + 0.01 * k, 100});
    done.push_back({{0.08 + 0.004 * k}, 0.1 + 0.01 * k, 10});
  }
  auto tpe = make_sampler(SamplerKind::kTpe, s, 1);
  int near_finished = 0;
  for (int64_t n = 20; n < 40; ++n)
    if (*(*tpe)->suggest(n, done)[0] > 0.5) ++near_finished;
  EXPECT_GE(near_finished, 18);
}

TEST(SamplerTest, TpeLearnsAChoiceAndItsConditionalKey) {
  // Value 2 of the choice is best; y only counts (and exists) for it, best at 0.8.
  Param y = uniform("y", 0, 1);
  y.when_key = "c";
  y.when_values = {"c"};
  const SearchSpace s = space_of({choice("c", {"a", "b", "c", "d"}), y});
  auto f = [](const Point& p) {
    const int c = static_cast<int>(*p[0]);
    return c == 2 ? std::abs(*p[1] - 0.8) : 1.0 + 0.1 * c;
  };
  auto sampler = make_sampler(SamplerKind::kTpe, s, 11);
  std::vector<Observation> done;
  int picked = 0;
  for (int n = 0; n < 60; ++n) {
    const Point p = (*sampler)->suggest(n, done);
    ASSERT_EQ(p[1].has_value(), *p[0] == 2);
    if (n >= 20 && *p[0] == 2) ++picked;
    done.push_back({p, f(p)});
  }
  EXPECT_GT(picked, 25) << "after its start-up, TPE should pick the best value most of the time (random: 1 in 4)";
}

}  // namespace
}  // namespace pst
