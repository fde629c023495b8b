// Logging goes through spdlog. init_logging() sets the pattern and level once
// per process; after that use spdlog::info/warn/error directly.
#pragma once

#include <string>

#include <spdlog/spdlog.h>

namespace pst {

// level: trace, debug, info, warn, error, off. Unknown names keep "info".
void init_logging(const std::string& level);

}  // namespace pst
