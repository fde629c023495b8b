#include "core/fma_peak.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "core/timer.h"
#include "core/x86_intrinsics.h"

namespace pst {
namespace {

// Each accumulator's chain waits on its own last result only, so the
// kFmaChains chains keep max(latency x units) FMAs in flight: 12 covers
// 4-cycle latency on 2 units with room to spare (Zen 4, Skylake-X and later).
__attribute__((noinline)) double portable_kernel(int64_t iterations, float a, float b, float init) {
  constexpr int kLanes = 8;
  std::array<std::array<float, kLanes>, kFmaChains> acc;
  for (auto& v : acc) v.fill(init);
  // As in the vector kernels below: the compiler may not take the equal
  // chains for one.
  asm volatile("" : : "r"(acc.data()) : "memory");
  for (int64_t it = 0; it < iterations; ++it)
    for (auto& v : acc)
#pragma omp simd
      for (int l = 0; l < kLanes; ++l) v[static_cast<size_t>(l)] = std::fma(v[static_cast<size_t>(l)], a, b);
  double sum = 0;
  for (const auto& v : acc)
    for (float x : v) sum += x;
  return sum;
}

#if defined(__x86_64__)
// One kernel per vector type, from one body: the intrinsics differ only in
// name and width, and each function needs its own target attribute.
// Twelve named accumulators, so that they stay in registers whatever the
// optimisation level (an array of them was kept in memory at -O2, and the
// chains then waited on stores and loads).
#define PST_FMA_KERNEL(NAME, TARGET, VEC, SET1, FMADD, STORE, LANES)                                                   \
  __attribute__((target(TARGET), noinline)) double NAME(int64_t iterations, float a, float b, float init) {            \
    const VEC va = SET1(a), vb = SET1(b);                                                                              \
    VEC c0 = SET1(init), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0,    \
        c11 = c0;                                                                                                      \
    static_assert(kFmaChains == 12);                                                                                   \
    /* Equal chains would be one chain to the compiler, which then computes */                                         \
    /* it once: an empty statement that may have changed each makes them */                                            \
    /* distinct. */                                                                                                    \
    asm volatile(""                                                                                                    \
                 : "+v"(c0), "+v"(c1), "+v"(c2), "+v"(c3), "+v"(c4), "+v"(c5), "+v"(c6), "+v"(c7), "+v"(c8), "+v"(c9), \
                   "+v"(c10), "+v"(c11));                                                                              \
    for (int64_t it = 0; it < iterations; ++it) {                                                                      \
      c0 = FMADD(c0, va, vb);                                                                                          \
      c1 = FMADD(c1, va, vb);                                                                                          \
      c2 = FMADD(c2, va, vb);                                                                                          \
      c3 = FMADD(c3, va, vb);                                                                                          \
      c4 = FMADD(c4, va, vb);                                                                                          \
      c5 = FMADD(c5, va, vb);                                                                                          \
      c6 = FMADD(c6, va, vb);                                                                                          \
      c7 = FMADD(c7, va, vb);                                                                                          \
      c8 = FMADD(c8, va, vb);                                                                                          \
      c9 = FMADD(c9, va, vb);                                                                                          \
      c10 = FMADD(c10, va, vb);                                                                                        \
      c11 = FMADD(c11, va, vb);                                                                                        \
    }                                                                                                                  \
    const VEC acc[kFmaChains] = {c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11};                                    \
    alignas(64) float lanes[LANES];                                                                                    \
    double sum = 0;                                                                                                    \
    for (const VEC& v : acc) {                                                                                         \
      STORE(lanes, v);                                                                                                 \
      for (float x : lanes) sum += x;                                                                                  \
    }                                                                                                                  \
    return sum;                                                                                                        \
  }

PST_FMA_KERNEL(avx2_kernel, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_store_ps, 8)
PST_FMA_KERNEL(avx512_kernel, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_store_ps, 16)
#undef PST_FMA_KERNEL
#endif

}  // namespace

const char* to_string(FmaIsa isa) {
  switch (isa) {
    case FmaIsa::kAvx512: return "avx512";
    case FmaIsa::kAvx2: return "avx2";
    default: return "portable";
  }
}

bool has_fma_isa(FmaIsa isa) {
  switch (isa) {
    case FmaIsa::kPortable: return true;
#if defined(__x86_64__)
    case FmaIsa::kAvx2: {
      static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
      return avx2;
    }
    case FmaIsa::kAvx512: {
      static const bool avx512 = __builtin_cpu_supports("avx512f");
      return avx512;
    }
#endif
    default: return false;
  }
}

std::vector<FmaIsa> fma_isas() {
  std::vector<FmaIsa> isas;
  for (FmaIsa isa : {FmaIsa::kPortable, FmaIsa::kAvx2, FmaIsa::kAvx512})
    if (has_fma_isa(isa)) isas.push_back(isa);
  return isas;
}

int fma_lanes(FmaIsa isa) {
  switch (isa) {
    case FmaIsa::kAvx512: return 16;
    default: return 8;  // AVX2's 256 bits, and the portable kernel's 8 floats
  }
}

double fma_kernel(FmaIsa isa, int64_t iterations, float a, float b, float init) {
  switch (isa) {
#if defined(__x86_64__)
    case FmaIsa::kAvx512:
      if (has_fma_isa(isa)) return avx512_kernel(iterations, a, b, init);
      break;
    case FmaIsa::kAvx2:
      if (has_fma_isa(isa)) return avx2_kernel(iterations, a, b, init);
      break;
#endif
    default: break;
  }
  return portable_kernel(iterations, a, b, init);
}

FmaPeak measure_fma_peak(int threads, double seconds, int repeats) {
  threads = std::max(1, threads);
  FmaPeak best;
  std::vector<FmaIsa> isas = fma_isas();
  // The portable kernel only where no vector kernel runs: it is what the
  // compiler makes of plain C++, far below the vector units' peak when it
  // is built for a generic CPU.
  if (isas.size() > 1) isas.erase(isas.begin());
  for (FmaIsa isa : isas) {
    // Chunks of 0.2-0.5 ms on current cores; a = 1 and b = 0 keep the values (no
    // overflow, no subnormals) whatever the count. Read from volatiles, so
    // that no compiler sees the constants (x * 1 + 0 is not x for x = -0,
    // but the kernels should not depend on that).
    volatile float one = 1.0f, zero = 0.0f;
    const float a = one, b = zero;
    const int64_t chunk = 1 << 17;
    const double flops_per_chunk = 2.0 * fma_lanes(isa) * kFmaChains * static_cast<double>(chunk);
    for (int r = 0; r < repeats; ++r) {
      int64_t chunks = 0;
      double sink = 0;
      Stopwatch sw;
#pragma omp parallel num_threads(threads) reduction(+ : chunks, sink)
      {
        // Every thread runs until the time is up; the work counted is the
        // chunks done, so a thread that started late costs nothing but its
        // share.
        while (sw.seconds() < seconds) {
          sink += fma_kernel(isa, chunk, a, b, a);
          ++chunks;
        }
      }
      const double elapsed = sw.seconds();
      // sink is kFmaChains x lanes per chunk; a wrong value means the
      // kernel did not run as counted.
      if (sink != static_cast<double>(chunks) * kFmaChains * fma_lanes(isa)) continue;
      const double gflops = static_cast<double>(chunks) * flops_per_chunk / elapsed * 1e-9;
      if (gflops > best.gflops) best = {gflops, isa};
    }
  }
  return best;
}

}  // namespace pst
