// Files written whole or not at all.
#pragma once

#include <string>

#include "core/status.h"

namespace pst {

// The whole file; kNotFound when it cannot be opened.
Result<std::string> read_all(const std::string& path);

// Writes all of bytes to fd (retrying short writes and EINTR); the errno of
// a failure, 0 when all went out.
int write_all(int fd, const std::string& bytes);

// Writes path atomically: a temp file beside it, fsync, rename, fsync of
// the directory. A reader sees the old bytes or the new, never a mix.
Status write_atomic(const std::string& path, const std::string& bytes);

}  // namespace pst
