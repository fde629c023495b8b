// keep_freed_memory (core/memory.h): a block of megabytes freed and taken
// again is the same memory, not pages faulted in anew. The oracle is the
// kernel's count of minor page faults (getrusage), in a child process each
// so that the heap settings of one case do not leak into the other.
#include "core/memory.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <gtest/gtest.h>

namespace pst {
namespace {

constexpr size_t kBlock = 4 << 20;  // a frame of cluster.chunk_bytes' default
constexpr int kFrames = 6;          // a message of g2p-small's 22 MB
constexpr int kRounds = 20;
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kGlibcMalloc = false;  // AddressSanitizer's allocator stands in for glibc's
#else
constexpr bool kGlibcMalloc = true;
#endif
constexpr long kPages = static_cast<long>(kFrames * kBlock / 4096);

// In a child: the minor faults of kRounds rounds of a message (kFrames
// blocks malloc'd, every byte written as a receive does, then all freed);
// after keep_freed_memory() when `keep`. The exit status says how many
// rounds' worth of pages were faulted in (faults / pages of a message).
long faulted_rounds(bool keep) {
  const pid_t child = fork();
  if (child == 0) {
    if (keep && !keep_freed_memory()) _exit(255);
    auto message = [](int fill) {
      char* frames[kFrames];
      for (char*& f : frames) {
        f = static_cast<char*>(std::malloc(kBlock));
        std::memset(f, fill, kBlock);
      }
      for (char* f : frames) std::free(f);
    };
    message(0);  // the first message faults its pages in whatever the settings
    rusage before{}, after{};
    getrusage(RUSAGE_SELF, &before);
    for (int i = 1; i <= kRounds; ++i) message(i);
    getrusage(RUSAGE_SELF, &after);
    _exit(static_cast<int>(std::min<long>(200, (after.ru_minflt - before.ru_minflt) / kPages)));
  }
  int status = 0;
  waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(MemoryTest, FreedBlocksAreReusedNotFaultedInAgain) {
  if (!kGlibcMalloc) GTEST_SKIP() << "glibc's allocator is not in use (AddressSanitizer's is)";
  // No message's pages are faulted in again.
  EXPECT_EQ(faulted_rounds(/*keep=*/true), 0);
}

TEST(MemoryTest, WithGlibcsDefaultsEachMessageIsFaultedInAgain) {
  if (!kGlibcMalloc) GTEST_SKIP() << "glibc's allocator is not in use (AddressSanitizer's is)";
  // The case the setting is for, so the test above could fail: glibc
  // raises its mmap threshold past 4 MiB after the first free of such a
  // block, but then trims the heap's top (24 MiB free, more than twice the
  // threshold) after each message.
  EXPECT_GE(faulted_rounds(/*keep=*/false), kRounds - 2);
}

}  // namespace
}  // namespace pst
