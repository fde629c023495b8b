#include "core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include "core/terminal.h"

namespace pst {

void init_logging(const std::string& level, const std::string& who) {
  // One stdout sink for the process, coloured or not; set up once, before
  // other threads log.
  static const bool replaced = [] {
    auto sink = std::make_shared<spdlog::sinks::stdout_color_sink_mt>(color_allowed() ? spdlog::color_mode::automatic
                                                                                      : spdlog::color_mode::never);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("", sink));
    return true;
  }();
  (void)replaced;
  spdlog::set_pattern(who.empty() ? "[%H:%M:%S.%e] [%^%l%$] %v" : "[%H:%M:%S.%e] [%^%l%$] [" + who + "] %v");
  spdlog::level::level_enum lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") lvl = spdlog::level::info;
  spdlog::set_level(lvl);
}

}  // namespace pst
