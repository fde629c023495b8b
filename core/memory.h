// How pst's processes use the C library's heap.
#pragma once

namespace pst {

// Keeps freed memory in the process for the next allocation instead of
// handing it back to the kernel. Every push and pull arrives in buffers
// ZeroMQ allocates for each message and frees once it is read: with glibc's
// defaults, blocks of megabytes come from mmap and go back with munmap (or
// the heap is trimmed), so each message's pages are faulted in and zeroed
// anew; on a 2-core virtual machine, a job of 2 servers and 2 workers on
// one host spent 3x plain TCP's time on it. This sets M_MMAP_THRESHOLD to
// glibc's most (32 MiB: smaller blocks come from the heap) and
// M_TRIM_THRESHOLD to never, both needed. The price: a process keeps its
// peak heap. Returns false when glibc refused either setting. Call it
// first thing in main().
bool keep_freed_memory();

}  // namespace pst
