// Helpers shared by the test suites.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "core/deadline.h"

namespace pst::testing {

inline std::string source_path(const std::string& rel) { return std::string(PST_SOURCE_DIR) + "/" + rel; }

// n draws of N(0, scale^2) from a seeded generator.
inline std::vector<float> random_vec(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// Polls `done` every `every_ms` until it holds or `limit_s` has passed (a
// limit far beyond what a busy machine needs); what `done` last returned.
template <typename Done>
bool poll_until(double limit_s, Done done, int every_ms = 1) {
  const Deadline d = Deadline::after(limit_s);
  while (!done() && !d.expired()) std::this_thread::sleep_for(std::chrono::milliseconds(every_ms));
  return done();
}

// A fresh directory under the system temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "pst-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Checks max |a - b| <= tol (per element) and prints the first mismatches
// with their indices.
inline ::testing::AssertionResult all_close(const float* a, const float* b, size_t n, double atol, double rtol,
                                            const std::string& what) {
  size_t bad = 0;
  std::string msg;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::abs(static_cast<double>(a[i]) - b[i]);
    if (!(d <= atol + rtol * std::abs(static_cast<double>(b[i])))) {
      if (bad < 5)
        msg +=
            what + "[" + std::to_string(i) + "]: got " + std::to_string(a[i]) + ", want " + std::to_string(b[i]) + "\n";
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << n << " mismatches\n" << msg;
}

// Weights after Adam steps against a reference. Adam divides by sqrt(v), so
// an element whose gradient is rounding noise (mathematically 0, such as an
// attention key bias: |g| <= 1e-6 max|g| of its tensor) moves by about +-lr
// whatever the noise is; those may differ by 2 * lr_sum. Every other element
// must agree to 1e-4 of its tensor's scale plus 1e-3 * lr_sum.
template <typename Table>
::testing::AssertionResult adam_weights_close(const Table& table, const float* mine, const float* ref,
                                              const float* ref_grad, const float* initial, double lr_sum) {
  std::string msg;
  size_t bad = 0;
  for (const auto& p : table.params()) {
    double gmax = 0, scale = 0;
    for (int64_t i = p.offset; i < p.offset + p.numel; ++i) {
      gmax = std::max(gmax, std::abs(static_cast<double>(ref_grad[i])));
      scale = std::max({scale, std::abs(static_cast<double>(ref[i])), std::abs(static_cast<double>(initial[i]))});
    }
    for (int64_t i = p.offset; i < p.offset + p.numel; ++i) {
      const bool noise = std::abs(ref_grad[i]) <= 1e-6 * gmax;
      const double tol = noise ? 2 * lr_sum : 1e-4 * scale + 1e-3 * lr_sum;
      const double d = std::abs(static_cast<double>(mine[i]) - ref[i]);
      if (!(d <= tol) && bad++ < 5)
        msg += p.name + "[" + std::to_string(i - p.offset) + "]: got " + std::to_string(mine[i]) + ", want " +
               std::to_string(ref[i]) + " (tolerance " + std::to_string(tol) + ")\n";
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " mismatches\n" << msg;
}

}  // namespace pst::testing
