// Synthetic objectives with known optima, for the samplers' tests and
// bench/tune_samplers (the constants are the published ones, e.g. Surjanovic
// and Bingham's Virtual Library of Simulation Experiments).
#pragma once

#include <cmath>
#include <vector>

namespace pst {

// Branin on x1 in [-5, 10], x2 in [0, 15]; minimum 0.397887 at three points.
inline double branin(double x1, double x2) {
  const double pi = 3.14159265358979323846;
  const double b = 5.1 / (4 * pi * pi), c = 5 / pi, t = 1 / (8 * pi);
  const double u = x2 - b * x1 * x1 + c * x1 - 6;
  return u * u + 10 * (1 - t) * std::cos(x1) + 10;
}
constexpr double kBraninMin = 0.397887;

// Hartmann-6 on [0, 1]^6; minimum -3.32237 at
// (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573).
inline double hartmann6(const std::vector<double>& x) {
  static const double alpha[4] = {1.0, 1.2, 3.0, 3.2};
  static const double a[4][6] = {
      {10, 3, 17, 3.5, 1.7, 8}, {0.05, 10, 17, 0.1, 8, 14}, {3, 3.5, 1.7, 10, 17, 8}, {17, 8, 0.05, 10, 0.1, 14}};
  static const double p[4][6] = {{0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886},
                                 {0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991},
                                 {0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650},
                                 {0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381}};
  double f = 0;
  for (int i = 0; i < 4; ++i) {
    double s = 0;
    for (int j = 0; j < 6; ++j)
      s += a[i][j] * (x[static_cast<size_t>(j)] - p[i][j]) * (x[static_cast<size_t>(j)] - p[i][j]);
    f -= alpha[i] * std::exp(-s);
  }
  return f;
}
constexpr double kHartmann6Min = -3.32237;

}  // namespace pst
