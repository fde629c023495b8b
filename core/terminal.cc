#include "core/terminal.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace pst {
namespace {

std::atomic<bool> progress_disabled{false};

bool own_terminal() {
  if (::isatty(STDOUT_FILENO) == 0 || launched_by_mpirun()) return false;
  const char* term = std::getenv("TERM");
  return term == nullptr || std::strcmp(term, "dumb") != 0;
}

}  // namespace

bool launched_by_mpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr ||
         std::getenv("PMIX_RANK") != nullptr;
}

bool color_allowed() {
  const char* no_color = std::getenv("NO_COLOR");
  return own_terminal() && (no_color == nullptr || no_color[0] == '\0');
}

bool progress_allowed() { return own_terminal() && !progress_disabled.load(); }

void disable_progress() { progress_disabled = true; }

}  // namespace pst
