// The search space of `pst tune` (docs/tuning.md): each dimension a config
// key with a range or a list of values, optionally active only when a choice
// of the space takes given values. Samplers work on points of this space;
// a point becomes the --set overrides of one trial.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <toml++/toml.h>

#include "core/status.h"

namespace pst {

enum class ParamKind { kUniform, kLogUniform, kInt, kChoice };

struct Param {
  std::string key;  // "section.key" of the job file
  ParamKind kind = ParamKind::kUniform;
  double low = 0, high = 0;         // uniform, log_uniform, int: the closed range
  double step = 0;                  // int: the step (>= 1); uniform: 0 (continuous)
  bool log = false;                 // int: sampled on a log scale
  std::vector<std::string> values;  // choice: each value as --set text
  int64_t points = 0;               // grid: points of a uniform or log_uniform range
  // Active only when the choice `when_key` (a dimension of the space) has one
  // of these values; empty: always active.
  std::string when_key;
  std::vector<std::string> when_values;

  // A range (uniform, log_uniform, int) and a choice, as parse_space makes them.
  static Param range(std::string key, ParamKind kind, double low, double high, double step = 0, bool log = false) {
    Param p;
    p.key = std::move(key), p.kind = kind, p.low = low, p.high = high, p.step = step, p.log = log;
    return p;
  }
  static Param choice(std::string key, std::vector<std::string> values) {
    Param p;
    p.key = std::move(key), p.kind = ParamKind::kChoice, p.values = std::move(values);
    return p;
  }
};

// A point: one entry per dimension, empty where the dimension is inactive.
// Numeric dimensions hold the value itself, choices the value's index.
using Point = std::vector<std::optional<double>>;

struct SearchSpace {
  std::vector<Param> params;  // sorted by key; each condition names an unconditional choice
  size_t size() const { return params.size(); }
  // The index of the dimension of `key`, or -1.
  int index_of(const std::string& key) const;
  // Whether dimension i is active at a point whose unconditional dimensions
  // are set.
  bool active(const Point& p, size_t i) const;
};

// Parses a [space] table: each key a config key ("section.key"), each value
// a table { type = "uniform" | "log_uniform" | "int" | "choice", low, high,
// step, log, values, points, when = { "section.key" = value or [values] } }.
// Every key must be a configuration key, and every bound or value one the
// key accepts; the error names the key and what is allowed.
Result<SearchSpace> parse_space(const toml::table& space, const std::string& where);

// The value of dimension p at unit coordinate u in [0, 1): uniform over the
// range (log scale for log_uniform and log ints), ints rounded to the step,
// choices the index floor(u * n).
double from_unit(const Param& p, double u);
// The inverse, to a point in [0, 1] (choices: the middle of the value's cell).
double to_unit(const Param& p, double v);
// A TOML scalar as --set text: a string as written, a number or boolean as
// TOML writes it (a choice's values and a job's values compare as this text).
Result<std::string> toml_scalar_text(const toml::node& n, const std::string& where);
// "section.key=value" for a trial's overrides.
std::string to_override(const Param& p, double v);
// The value as a reader wants it (a choice's text, an int without decimals).
std::string value_text(const Param& p, double v);
// A point with every dimension set from unit coordinates (one per
// dimension), the inactive ones then cleared.
Point point_from_unit(const SearchSpace& s, const std::vector<double>& u);

}  // namespace pst
