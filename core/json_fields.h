// Integer fields of the JSON files pst reads (checkpoint manifests, the
// safetensors header, a study's journal). nlohmann's get<T>() converts a
// number with a fraction or an exponent by a plain cast, which is undefined
// behaviour past T's range (the fuzzer found "seed": 1e+30 in a manifest),
// and wraps an unsigned number past T's range; a file pst writes holds plain
// integers in range, so anything else is a damaged or hostile file.
#pragma once

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace pst {

// True when v is a JSON integer (no fraction, no exponent) within T's range.
template <typename T>
bool json_integer_fits(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
  if (!v.is_number_integer()) return false;
  const int64_t x = v.get<int64_t>();
  if (x < 0) return std::numeric_limits<T>::is_signed && x >= static_cast<int64_t>(std::numeric_limits<T>::min());
  return static_cast<uint64_t>(x) <= static_cast<uint64_t>(std::numeric_limits<T>::max());
}

// v as a T, or std::invalid_argument naming the field `what`, the value and
// the range allowed.
template <typename T>
T json_integer(const nlohmann::json& v, std::string_view what) {
  if (!json_integer_fits<T>(v))
    throw std::invalid_argument(fmt::format("{} is {}, not an integer in [{}, {}]", what, v.dump(),
                                            std::numeric_limits<T>::min(), std::numeric_limits<T>::max()));
  return v.is_number_unsigned() ? static_cast<T>(v.get<uint64_t>()) : static_cast<T>(v.get<int64_t>());
}

// A list of such integers (int64_t), or std::invalid_argument naming `what`.
inline std::vector<int64_t> json_integers(const nlohmann::json& v, std::string_view what) {
  if (!v.is_array()) throw std::invalid_argument(fmt::format("{} is {}, not a list", what, v.dump()));
  std::vector<int64_t> out;
  for (const auto& e : v) out.push_back(json_integer<int64_t>(e, what));
  return out;
}

}  // namespace pst
