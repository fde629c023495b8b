// Files written whole or not at all.
#pragma once

#include <string>

#include "core/status.h"

namespace pst {

// Writes path atomically: a temp file beside it, fsync, rename, fsync of
// the directory. A reader sees the old bytes or the new, never a mix.
Status write_atomic(const std::string& path, const std::string& bytes);

}  // namespace pst
