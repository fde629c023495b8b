#include "tune/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "core/philox.h"

namespace pst {
namespace {

constexpr double kSqrt2 = 1.4142135623730951;
constexpr double kLogSqrt2Pi = 0.9189385332046727;

// Uniform in [0, 1) with 53 bits from element i of a Philox stream.
double uniform53(const Philox& r, uint64_t i) {
  const PhiloxOut b = r.block(i);
  const uint64_t bits = (static_cast<uint64_t>(b.v[0]) << 21) ^ (static_cast<uint64_t>(b.v[1]) >> 11);
  return static_cast<double>(bits & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

double normal_cdf(double z) { return 0.5 * std::erfc(-z / kSqrt2); }

class RandomSampler : public Sampler {
 public:
  RandomSampler(const SearchSpace& s, uint64_t seed) : space_(s), seed_(seed) {}
  Point suggest(int64_t number, const std::vector<Observation>&) override {
    const Philox r(seed_, mix_stream(0x72616e64, static_cast<uint64_t>(number)));
    std::vector<double> u(space_.size());
    for (size_t i = 0; i < u.size(); ++i) u[i] = uniform53(r, i);
    return point_from_unit(space_, u);
  }

 private:
  const SearchSpace& space_;
  uint64_t seed_;
};

constexpr uint64_t kPrimes[] = {2,  3,  5,  7,  11, 13, 17, 19, 23, 29,  31,  37,  41,  43,  47,  53,
                                59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131};

// Halton points (one prime base per dimension), shifted modulo 1 by a
// random vector of the seed (a Cranley-Patterson rotation: the shifted set
// keeps its low discrepancy, and each seed gives another one).
class HaltonSampler : public Sampler {
 public:
  HaltonSampler(const SearchSpace& s, uint64_t seed) : space_(s) {
    const Philox r(seed, 0x68616c746f6e);
    for (size_t i = 0; i < s.size(); ++i) shift_.push_back(uniform53(r, i));
  }
  Point suggest(int64_t number, const std::vector<Observation>&) override {
    std::vector<double> u(space_.size());
    for (size_t i = 0; i < u.size(); ++i) {
      const double x = radical_inverse(static_cast<uint64_t>(number) + 1, kPrimes[i]) + shift_[i];
      u[i] = x - std::floor(x);
    }
    return point_from_unit(space_, u);
  }

 private:
  const SearchSpace& space_;
  std::vector<double> shift_;
};

class GridSampler : public Sampler {
 public:
  explicit GridSampler(std::vector<Point> points) : points_(std::move(points)) {}
  Point suggest(int64_t number, const std::vector<Observation>&) override {
    return points_[static_cast<size_t>(number) % points_.size()];
  }
  int64_t size() const override { return static_cast<int64_t>(points_.size()); }

 private:
  std::vector<Point> points_;
};

// The values a grid takes along one dimension.
Result<std::vector<double>> grid_values(const Param& p) {
  std::vector<double> v;
  if (p.kind == ParamKind::kChoice) {
    for (size_t i = 0; i < p.values.size(); ++i) v.push_back(static_cast<double>(i));
    return v;
  }
  if (p.points == 0) {
    if (p.kind != ParamKind::kInt)
      return invalid_argument("[space] \"{}\": the grid needs points = N for a {} range", p.key,
                              p.kind == ParamKind::kUniform ? "uniform" : "log_uniform");
    for (double x = p.low; x <= p.high; x += p.step) v.push_back(x);
    return v;
  }
  // Evenly spaced on the range's own scale, ends included.
  for (int64_t k = 0; k < p.points; ++k) {
    const double t = static_cast<double>(k) / static_cast<double>(p.points - 1);
    double x;
    if (p.kind == ParamKind::kUniform) {
      x = p.low + t * (p.high - p.low);
    } else if (p.kind == ParamKind::kLogUniform || p.log) {
      x = std::exp(std::log(p.low) + t * (std::log(p.high) - std::log(p.low)));
      if (p.kind == ParamKind::kInt) x = std::round(x);
    } else {
      x = p.low + std::round(t * (p.high - p.low) / p.step) * p.step;
    }
    if (v.empty() || v.back() != x) v.push_back(x);
  }
  return v;
}

class TpeSampler : public Sampler {
 public:
  TpeSampler(const SearchSpace& s, uint64_t seed, const TpeOptions& o) : space_(s), seed_(seed), opt_(o) {}

  Point suggest(int64_t number, const std::vector<Observation>& done) override {
    const Philox r(seed_, mix_stream(0x747065, static_cast<uint64_t>(number)));
    if (static_cast<int64_t>(done.size()) < opt_.startup) {
      std::vector<double> u(space_.size());
      for (size_t i = 0; i < u.size(); ++i) u[i] = uniform53(r, i);
      return point_from_unit(space_, u);
    }
    Point p(space_.size());
    // The unconditional dimensions first: the conditions read them.
    for (int pass = 0; pass < 2; ++pass) {
      for (size_t i = 0; i < space_.size(); ++i) {
        const Param& q = space_.params[i];
        if (q.when_key.empty() != (pass == 0)) continue;
        if (!space_.active(p, i)) continue;
        const Philox d(seed_, mix_stream(mix_stream(0x747065, static_cast<uint64_t>(number)), i + 1));
        p[i] = sample_dimension(i, done, d);
      }
    }
    return p;
  }

 private:
  // Splits the observations of dimension i (those where it was active) into
  // the best n_good and the rest, each part in the order the trials ran
  // (the weights favour the recent ones).
  void split(size_t i, const std::vector<Observation>& done, std::vector<double>* good,
             std::vector<double>* bad) const {
    std::vector<size_t> obs;
    for (size_t k = 0; k < done.size(); ++k)
      if (done[k].point[i]) obs.push_back(k);
    std::vector<size_t> ranked = obs;
    std::stable_sort(ranked.begin(), ranked.end(), [&](size_t a, size_t b) {
      if (done[a].step != done[b].step) return done[a].step > done[b].step;
      return done[a].value < done[b].value;
    });
    const int64_t n = static_cast<int64_t>(obs.size());
    const int64_t n_good =
        std::min<int64_t>(static_cast<int64_t>(std::ceil(opt_.gamma * static_cast<double>(n))), opt_.max_good);
    std::vector<bool> is_good(done.size(), false);
    for (int64_t k = 0; k < n_good; ++k) is_good[ranked[static_cast<size_t>(k)]] = true;
    for (size_t k : obs) (is_good[k] ? good : bad)->push_back(*done[k].point[i]);
  }

  double sample_dimension(size_t i, const std::vector<Observation>& done, const Philox& d) const {
    const Param& q = space_.params[i];
    std::vector<double> good, bad;
    split(i, done, &good, &bad);
    if (good.empty()) return from_unit(q, uniform53(d, 0));  // never active so far: nothing to model
    uint64_t draw = 1;
    if (q.kind == ParamKind::kChoice) {
      const size_t k = q.values.size();
      std::vector<double> wl(k, 1.0 / static_cast<double>(k)), wg(k, 1.0 / static_cast<double>(k));
      const std::vector<double> gw = recency_weights(good.size()), bw = recency_weights(bad.size());
      for (size_t j = 0; j < good.size(); ++j) wl[static_cast<size_t>(good[j])] += gw[j];
      for (size_t j = 0; j < bad.size(); ++j) wg[static_cast<size_t>(bad[j])] += bw[j];
      const double sl = std::accumulate(wl.begin(), wl.end(), 0.0), sg = std::accumulate(wg.begin(), wg.end(), 0.0);
      double best_score = -INFINITY;
      size_t best = 0;
      for (int64_t c = 0; c < opt_.candidates; ++c) {
        double u = uniform53(d, draw++) * sl;
        size_t pick = 0;
        while (pick + 1 < k && u >= wl[pick]) u -= wl[pick++];
        const double score = std::log(wl[pick] / sl) - std::log(wg[pick] / sg);
        if (score > best_score) best_score = score, best = pick;
      }
      return static_cast<double>(best);
    }
    std::vector<double> ul, ug;
    for (double v : good) ul.push_back(to_unit(q, v));
    for (double v : bad) ug.push_back(to_unit(q, v));
    const Parzen l(ul, recency_weights(ul.size())), g(ug, recency_weights(ug.size()));
    double best_score = -INFINITY, best = 0;
    uint64_t normals = 1;
    for (int64_t c = 0; c < opt_.candidates; ++c) {
      const double pick = uniform53(d, draw++);
      const double z = l.sample(
          pick, [&](int) { return d.normal(1000000 + normals++); }, [&](int) { return uniform53(d, draw++); });
      const double v = from_unit(q, z);
      const double at = q.kind == ParamKind::kInt ? to_unit(q, v) : z;  // an int scores at its cell's middle
      const double score = l.log_score(at) - g.log_score(at);
      if (score > best_score) best_score = score, best = v;
    }
    return best;
  }

  const SearchSpace& space_;
  uint64_t seed_;
  TpeOptions opt_;
};

}  // namespace

Result<SamplerKind> parse_sampler(const std::string& name) {
  if (name == "grid") return SamplerKind::kGrid;
  if (name == "random") return SamplerKind::kRandom;
  if (name == "halton") return SamplerKind::kHalton;
  if (name == "tpe") return SamplerKind::kTpe;
  return invalid_argument("sampler '{}' (allowed: grid, random, halton, tpe)", name);
}

const char* to_string(SamplerKind k) {
  switch (k) {
    case SamplerKind::kGrid: return "grid";
    case SamplerKind::kRandom: return "random";
    case SamplerKind::kHalton: return "halton";
    case SamplerKind::kTpe: return "tpe";
  }
  return "?";
}

double radical_inverse(uint64_t n, uint64_t base) {
  double inv = 1.0 / static_cast<double>(base), f = inv, x = 0;
  while (n > 0) {
    x += static_cast<double>(n % base) * f;
    n /= base;
    f *= inv;
  }
  return x;
}

std::vector<double> recency_weights(size_t n) {
  std::vector<double> w(n, 1.0);
  if (n <= 25) return w;
  const size_t ramp = n - 25;
  for (size_t k = 0; k < ramp; ++k)
    w[k] = 1.0 / static_cast<double>(n) +
           (ramp == 1 ? 0.0
                      : (1.0 - 1.0 / static_cast<double>(n)) * static_cast<double>(k) / static_cast<double>(ramp - 1));
  return w;
}

Parzen::Parzen(std::vector<double> mus, std::vector<double> weights) {
  if (weights.empty()) weights.assign(mus.size(), 1.0);
  mus.push_back(0.5);  // the prior
  weights.push_back(1.0);
  std::vector<size_t> order(mus.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return mus[a] < mus[b]; });
  const double min_sigma = 1.0 / std::min(100.0, 1.0 + static_cast<double>(mus.size()));
  sigmas_.assign(mus.size(), 1.0);
  const size_t m = order.size();
  for (size_t k = 0; k < m; ++k) {
    // The larger gap to a neighbour; the outermost components look inwards
    // only (the range's ends are not neighbours).
    const double left = k == 0 ? 0.0 : mus[order[k]] - mus[order[k - 1]];
    const double right = k + 1 == m ? 0.0 : mus[order[k + 1]] - mus[order[k]];
    double sigma = std::max(left, right);
    if (m == 1) sigma = 1.0;
    sigmas_[order[k]] = std::clamp(sigma, min_sigma, 1.0);
  }
  sigmas_.back() = 1.0;  // the prior is wide whatever its neighbours
  double total = 0;
  for (double w : weights) total += w;
  for (double& w : weights) w /= total;
  mus_ = std::move(mus);
  weights_ = std::move(weights);
}

double Parzen::log_mixture(double x, bool per_mass) const {
  double top = -INFINITY;
  std::vector<double> terms(mus_.size());
  for (size_t k = 0; k < mus_.size(); ++k) {
    const double s = sigmas_[k], z = (x - mus_[k]) / s;
    const double mass = normal_cdf((1 - mus_[k]) / s) - normal_cdf(-mus_[k] / s);
    terms[k] = std::log(weights_[k]) - 0.5 * z * z - kLogSqrt2Pi - std::log(std::max(mass, 1e-300)) -
               (per_mass ? std::log(s) : 0.0);
    top = std::max(top, terms[k]);
  }
  double sum = 0;
  for (double t : terms) sum += std::exp(t - top);
  return top + std::log(sum);
}

double Parzen::log_pdf(double x) const { return log_mixture(x, true); }

double Parzen::log_score(double x) const { return log_mixture(x, false); }

double Parzen::sample(double pick, const std::function<double(int)>& normal,
                      const std::function<double(int)>& u) const {
  size_t k = 0;
  for (double acc = weights_[0]; k + 1 < mus_.size() && pick >= acc; acc += weights_[++k]) {
  }
  for (int tries = 0; tries < 100; ++tries) {
    const double x = mus_[k] + sigmas_[k] * normal(tries);
    if (x >= 0 && x < 1) return x;
  }
  return u(0);  // (a component's mass in [0, 1] is at least a third: not reached in practice)
}

Result<std::unique_ptr<Sampler>> make_sampler(SamplerKind kind, const SearchSpace& space, uint64_t seed,
                                              const TpeOptions& tpe) {
  switch (kind) {
    case SamplerKind::kRandom: return std::unique_ptr<Sampler>(new RandomSampler(space, seed));
    case SamplerKind::kTpe: return std::unique_ptr<Sampler>(new TpeSampler(space, seed, tpe));
    case SamplerKind::kHalton:
      if (space.size() > std::size(kPrimes))
        return invalid_argument("the halton sampler takes at most {} dimensions (the space has {})", std::size(kPrimes),
                                space.size());
      return std::unique_ptr<Sampler>(new HaltonSampler(space, seed));
    case SamplerKind::kGrid: {
      std::vector<std::vector<double>> axes;
      double total = 1;
      for (const Param& p : space.params) {
        PST_ASSIGN_OR_RETURN(auto v, grid_values(p));
        total *= static_cast<double>(v.size());
        axes.push_back(std::move(v));
      }
      if (total > 1e6) return invalid_argument("the grid has {:.0f} points; at most 1,000,000", total);
      // Every combination, the inactive dimensions cleared, each distinct
      // point once, in an order shuffled by the seed (a budget smaller than
      // the grid then spreads over it).
      std::vector<Point> points;
      std::set<std::vector<double>> seen;
      std::vector<size_t> at(axes.size(), 0);
      for (;;) {
        Point p(axes.size());
        for (size_t i = 0; i < axes.size(); ++i) p[i] = axes[i][at[i]];
        std::vector<double> keyv;
        for (size_t i = 0; i < axes.size(); ++i) {
          if (!space.active(p, i)) p[i].reset();  // (choices, which conditions read, are never cleared)
          keyv.push_back(p[i] ? *p[i] : -INFINITY);
        }
        if (seen.insert(keyv).second) points.push_back(p);
        size_t d = 0;
        while (d < axes.size() && ++at[d] == axes[d].size()) at[d++] = 0;
        if (d == axes.size()) break;
      }
      const Philox r(seed, 0x67726964);
      for (size_t i = points.size(); i > 1; --i)
        std::swap(points[i - 1], points[static_cast<size_t>(uniform53(r, i) * static_cast<double>(i))]);
      return std::unique_ptr<Sampler>(new GridSampler(std::move(points)));
    }
  }
  return invalid_argument("unknown sampler");
}

}  // namespace pst
