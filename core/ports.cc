#include "core/ports.h"

#include <charconv>

namespace pst {

std::string PortRange::to_string() const { return any() ? "" : fmt::format("{}-{}", first, last); }

Result<PortRange> parse_port_range(const std::string& text) {
  if (text.empty()) return PortRange{};
  const auto bad = [&text] {
    return invalid_argument(
        "cluster.port_range = \"{}\": allowed is FIRST-LAST with 1 <= FIRST <= LAST <= 65535 (e.g. 30000-30100), or "
        "\"\" for ephemeral ports",
        text);
  };
  const auto dash = text.find('-');
  if (dash == std::string::npos) return bad();
  PortRange r;
  const char* end = text.data() + text.size();
  auto [p1, e1] = std::from_chars(text.data(), text.data() + dash, r.first);
  auto [p2, e2] = std::from_chars(text.data() + dash + 1, end, r.last);
  if (e1 != std::errc() || p1 != text.data() + dash || dash == 0 || e2 != std::errc() || p2 != end ||
      dash + 1 == text.size())
    return bad();
  if (r.first < 1 || r.first > r.last || r.last > 65535) return bad();
  return r;
}

}  // namespace pst
