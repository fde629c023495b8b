#include "core/ports.h"

#include "core/config.h"

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
  const auto first = parse_count(std::string_view(text).substr(0, dash));
  const auto last = parse_count(std::string_view(text).substr(dash + 1));
  if (!first || !last || *first < 1 || *first > *last || *last > 65535) return bad();
  PortRange r{static_cast<int>(*first), static_cast<int>(*last)};
  return r;
}

}  // namespace pst
