// Element-wise loops split over the OpenMP threads only when they are large.
#pragma once

#include <cstdint>

namespace pst {

// Runs body(i) for i in [0, n): in an OpenMP region over every thread when
// n > min_parallel, else on the calling thread outside any region. libgomp
// makes a system call (a futex wake) for every region it enters, even one
// whose if clause keeps it on one thread: 2.2 us against 0.12 us for a loop
// over 1,024 floats (docs/benchmarks.md, pushpull --latency), so a small
// loop must not enter one. Each index is computed the same way either way
// (the loop is vectorised in both), so the bits do not depend on n's side of
// the threshold or on the thread count.
template <class Body>
void elementwise(int64_t n, int64_t min_parallel, const Body& body) {
  if (n > min_parallel) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) body(i);
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) body(i);
  }
}

}  // namespace pst
