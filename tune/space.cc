#include "tune/space.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "core/config.h"

namespace pst {
namespace {

const char* kTypes = "uniform, log_uniform, int, choice";

Result<double> number(const toml::table& t, const char* name, const std::string& where) {
  const toml::node* n = t.get(name);
  if (!n) return invalid_argument("{}: missing '{}'", where, name);
  if (!n->is_number()) return invalid_argument("{}: '{}' must be a number", where, name);
  return *n->value<double>();
}

// Checks that the job file takes `text` for p.key, as --set would.
Status check_value(const Param& p, const std::string& text, const std::string& where) {
  JobConfig probe;
  const Status s = apply_override(probe, p.key + "=" + text);
  if (!s.ok()) return invalid_argument("{}: {}", where, s.message());
  return Status();
}

Result<Param> parse_param(const std::string& key, const toml::node& node, const std::string& where) {
  Param p;
  p.key = key;
  const toml::table* t = node.as_table();
  if (!t) return invalid_argument("{}: expected a table such as {{ type = \"uniform\", low = 0, high = 1 }}", where);
  static const std::vector<std::string> kFields = {"type", "low", "high", "step", "log", "values", "points", "when"};
  for (const auto& [name, value] : *t) {
    (void)value;
    if (std::find(kFields.begin(), kFields.end(), std::string(name.str())) == kFields.end())
      return invalid_argument("{}: unknown field '{}' (allowed: type, low, high, step, log, values, points, when)",
                              where, name.str());
  }
  const std::string type = t->get("type") ? t->get("type")->value_or(std::string()) : std::string();
  if (type == "uniform") {
    p.kind = ParamKind::kUniform;
  } else if (type == "log_uniform") {
    p.kind = ParamKind::kLogUniform;
  } else if (type == "int") {
    p.kind = ParamKind::kInt;
  } else if (type == "choice") {
    p.kind = ParamKind::kChoice;
  } else {
    return invalid_argument("{}: type '{}' (allowed: {})", where, type, kTypes);
  }
  if (p.kind == ParamKind::kChoice) {
    const toml::array* values = t->get("values") ? t->get("values")->as_array() : nullptr;
    if (!values || values->empty()) return invalid_argument("{}: a choice needs values = [ ... ] (one or more)", where);
    for (const toml::node& v : *values) {
      PST_ASSIGN_OR_RETURN(std::string text, toml_scalar_text(v, where + " values"));
      if (std::find(p.values.begin(), p.values.end(), text) != p.values.end())
        return invalid_argument("{}: value '{}' is listed twice", where, text);
      PST_RETURN_IF_ERROR(check_value(p, text, where));
      p.values.push_back(text);
    }
    for (const char* f : {"low", "high", "step", "log", "points"})
      if (t->get(f)) return invalid_argument("{}: '{}' is for ranges, not for a choice", where, f);
  } else {
    PST_ASSIGN_OR_RETURN(p.low, number(*t, "low", where));
    PST_ASSIGN_OR_RETURN(p.high, number(*t, "high", where));
    if (!std::isfinite(p.low) || !std::isfinite(p.high) || !(p.low < p.high))
      return invalid_argument("{}: low = {} and high = {}: need finite low < high", where, p.low, p.high);
    if (t->get("values")) return invalid_argument("{}: 'values' is for a choice", where);
    if (p.kind == ParamKind::kInt) {
      p.step = 1;
      if (t->get("step")) {
        PST_ASSIGN_OR_RETURN(p.step, number(*t, "step", where));
      }
      if (p.low != std::floor(p.low) || p.high != std::floor(p.high) || p.step < 1 || p.step != std::floor(p.step))
        return invalid_argument("{}: an int range needs integer low, high and step >= 1", where);
      if (std::fmod(p.high - p.low, p.step) != 0)
        return invalid_argument("{}: high - low = {} is not a multiple of step = {}", where, p.high - p.low, p.step);
      if (const toml::node* l = t->get("log")) {
        if (!l->is_boolean()) return invalid_argument("{}: 'log' must be true or false", where);
        p.log = *l->value<bool>();
      }
      if (p.log && (p.low < 1 || p.step != 1))
        return invalid_argument("{}: a log int range needs low >= 1 and step = 1", where);
    } else {
      if (t->get("step") || t->get("log"))
        return invalid_argument("{}: 'step' and 'log' are for int ranges (use type = \"log_uniform\" for a log scale)",
                                where);
      if (p.kind == ParamKind::kLogUniform && p.low <= 0)
        return invalid_argument("{}: a log_uniform range needs low > 0 (low = {})", where, p.low);
    }
    if (const toml::node* n = t->get("points")) {
      if (!n->is_integer() || *n->value<int64_t>() < 2)
        return invalid_argument("{}: points (the grid's values over the range) must be an integer >= 2", where);
      p.points = *n->value<int64_t>();
    }
    if (p.kind != ParamKind::kInt) {
      // A value inside the range that is not a whole number: an integer key wants type = "int".
      const double inside = p.low + (p.high - p.low) * 0.3717;
      if (inside != std::floor(inside) && !check_value(p, fmt::format("{}", inside), where).ok())
        return invalid_argument("{}: the key takes integers; use type = \"int\"", where);
    }
    PST_RETURN_IF_ERROR(check_value(p, to_override(p, p.low).substr(key.size() + 1), where + " low"));
    PST_RETURN_IF_ERROR(check_value(p, to_override(p, p.high).substr(key.size() + 1), where + " high"));
  }
  if (const toml::node* w = t->get("when")) {
    const toml::table* wt = w->as_table();
    if (!wt || wt->size() != 1)
      return invalid_argument("{}: when must name one choice, e.g. when = {{ \"schedule.kind\" = \"cosine\" }}", where);
    const auto first = wt->begin();
    p.when_key = std::string(first->first.str());
    const toml::node& wvalue = first->second;
    if (const toml::array* a = wvalue.as_array()) {
      for (const toml::node& v : *a) {
        PST_ASSIGN_OR_RETURN(std::string text, toml_scalar_text(v, where + " when"));
        p.when_values.push_back(text);
      }
    } else {
      PST_ASSIGN_OR_RETURN(std::string text, toml_scalar_text(wvalue, where + " when"));
      p.when_values.push_back(text);
    }
    if (p.when_values.empty()) return invalid_argument("{}: when lists no value", where);
  }
  return p;
}

}  // namespace

Result<std::string> toml_scalar_text(const toml::node& n, const std::string& where) {
  if (n.is_string()) return *n.value<std::string>();
  if (n.is_integer()) return std::to_string(*n.value<int64_t>());
  if (n.is_floating_point()) return fmt::format("{}", *n.value<double>());
  if (n.is_boolean()) return std::string(*n.value<bool>() ? "true" : "false");
  return invalid_argument("{}: expected a string, number or boolean", where);
}

int SearchSpace::index_of(const std::string& key) const {
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].key == key) return static_cast<int>(i);
  return -1;
}

bool SearchSpace::active(const Point& p, size_t i) const {
  const Param& q = params[i];
  if (q.when_key.empty()) return true;
  const int c = index_of(q.when_key);
  if (c < 0 || !p[static_cast<size_t>(c)]) return false;
  const std::string& v = params[static_cast<size_t>(c)].values[static_cast<size_t>(*p[static_cast<size_t>(c)])];
  return std::find(q.when_values.begin(), q.when_values.end(), v) != q.when_values.end();
}

Result<SearchSpace> parse_space(const toml::table& space, const std::string& where) {
  SearchSpace s;
  for (const auto& [key, node] : space) {
    const std::string k(key.str());
    const std::string at = fmt::format("{} [space] \"{}\"", where, k);
    const auto keys = config_keys();
    if (std::find(keys.begin(), keys.end(), k) == keys.end())
      return invalid_argument("{}: not a setting of the job file (pst config defaults lists them, as section.key)", at);
    PST_ASSIGN_OR_RETURN(Param p, parse_param(k, node, at));
    s.params.push_back(std::move(p));
  }
  if (s.params.empty()) return invalid_argument("{}: [space] has no dimension", where);
  std::sort(s.params.begin(), s.params.end(), [](const Param& a, const Param& b) { return a.key < b.key; });
  for (const Param& p : s.params) {
    if (p.when_key.empty()) continue;
    const int c = s.index_of(p.when_key);
    if (c < 0 || s.params[static_cast<size_t>(c)].kind != ParamKind::kChoice ||
        !s.params[static_cast<size_t>(c)].when_key.empty())
      return invalid_argument("{} [space] \"{}\": when names '{}', which is not an unconditional choice of the space",
                              where, p.key, p.when_key);
    const Param& choice = s.params[static_cast<size_t>(c)];
    for (const std::string& v : p.when_values)
      if (std::find(choice.values.begin(), choice.values.end(), v) == choice.values.end())
        return invalid_argument("{} [space] \"{}\": when {} = '{}', which is not one of its values", where, p.key,
                                p.when_key, v);
  }
  return s;
}

double from_unit(const Param& p, double u) {
  u = std::clamp(u, 0.0, std::nextafter(1.0, 0.0));
  switch (p.kind) {
    case ParamKind::kChoice: return std::floor(u * static_cast<double>(p.values.size()));
    case ParamKind::kUniform: return p.low + u * (p.high - p.low);
    case ParamKind::kLogUniform: return std::exp(std::log(p.low) + u * (std::log(p.high) - std::log(p.low)));
    case ParamKind::kInt: {
      double v;
      if (p.log) {
        // Each integer owns the stretch of log space between its halves.
        const double lo = std::log(p.low - 0.5), hi = std::log(p.high + 0.5);
        v = std::round(std::exp(lo + u * (hi - lo)));
      } else {
        const double cells = (p.high - p.low) / p.step + 1;
        v = p.low + std::floor(u * cells) * p.step;
      }
      return std::clamp(v, p.low, p.high);
    }
  }
  return 0;
}

double to_unit(const Param& p, double v) {
  switch (p.kind) {
    case ParamKind::kChoice: return (v + 0.5) / static_cast<double>(p.values.size());
    case ParamKind::kUniform: return (v - p.low) / (p.high - p.low);
    case ParamKind::kLogUniform: return (std::log(v) - std::log(p.low)) / (std::log(p.high) - std::log(p.low));
    case ParamKind::kInt:
      if (p.log) {
        const double lo = std::log(p.low - 0.5), hi = std::log(p.high + 0.5);
        return (std::log(v) - lo) / (hi - lo);
      }
      return ((v - p.low) / p.step + 0.5) / ((p.high - p.low) / p.step + 1);
  }
  return 0;
}

std::string value_text(const Param& p, double v) {
  switch (p.kind) {
    case ParamKind::kChoice: return p.values[static_cast<size_t>(v)];
    case ParamKind::kInt: return fmt::format("{}", static_cast<int64_t>(v));
    default: return fmt::format("{:.6g}", v);
  }
}

std::string to_override(const Param& p, double v) {
  // Full precision for floats, so the trial runs the value the journal holds.
  if (p.kind == ParamKind::kUniform || p.kind == ParamKind::kLogUniform) return fmt::format("{}={}", p.key, v);
  return p.key + "=" + value_text(p, v);
}

Point point_from_unit(const SearchSpace& s, const std::vector<double>& u) {
  Point p(s.size());
  for (size_t i = 0; i < s.size(); ++i) p[i] = from_unit(s.params[i], u[i]);
  for (size_t i = 0; i < s.size(); ++i)
    if (!s.active(p, i)) p[i].reset();
  return p;
}

}  // namespace pst
