// Logging goes through spdlog. init_logging() sets the pattern and level once
// per process; after that use spdlog::info/warn/error directly.
#pragma once

#include <string>

#include <spdlog/spdlog.h>

namespace pst {

// level: trace, debug, info, warn, error, critical, off (config validation
// rejects others; here an unknown name keeps "info"). who, when not empty,
// tags every line (e.g. "worker 1"), for jobs whose processes share one
// terminal. Levels are coloured only where core/terminal.h allows it.
void init_logging(const std::string& level, const std::string& who = "");

}  // namespace pst
