#include "core/memory.h"

#include <malloc.h>

#include <climits>

namespace pst {

bool keep_freed_memory() {
  const bool mmap = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1;
  const bool trim = mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1;
  return mmap && trim;
}

}  // namespace pst
