#include "core/logging.h"

#include <chrono>

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

std::string WarnThrottle::admit(const std::string& line, double now_s) {
  if (now_s - period_start_ >= period_s_) {
    const int64_t dropped = left_out_;
    period_start_ = now_s;
    in_period_ = 0;
    left_out_ = 0;
    if (dropped > 0) {
      ++in_period_;
      return fmt::format("{} ({} more like it in the last {:.0f} s were not logged)", line, dropped, period_s_);
    }
  }
  if (in_period_ < burst_) {
    ++in_period_;
    return line;
  }
  ++left_out_;
  return "";
}

void WarnThrottle::warn(const std::string& line) {
  const double now = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  const std::string out = admit(line, now);
  if (!out.empty()) spdlog::warn("{}", out);
}

}  // namespace pst
