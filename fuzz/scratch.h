// The scratch directory of a fuzz target that reads files from a directory
// (a checkpoint's): /dev/shm/pst-fuzz-NAME-PID, made on the first call and
// removed with all it holds when the process exits (libFuzzer ends a run
// with exit()), so a run leaves nothing in /dev/shm. One per process.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace pst::fuzz {

inline const std::string& scratch_dir(const std::string& name) {
  static const std::string dir = "/dev/shm/pst-fuzz-" + name + "-" + std::to_string(::getpid());
  static const bool made = [] {
    std::filesystem::create_directories(dir);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    });
    return true;
  }();
  (void)made;
  return dir;
}

}  // namespace pst::fuzz
