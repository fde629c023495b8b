#include "core/logging.h"

namespace pst {

void init_logging(const std::string& level, const std::string& who) {
  spdlog::set_pattern(who.empty() ? "[%H:%M:%S.%e] [%^%l%$] %v" : "[%H:%M:%S.%e] [%^%l%$] [" + who + "] %v");
  spdlog::level::level_enum lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") lvl = spdlog::level::info;
  spdlog::set_level(lvl);
}

}  // namespace pst
