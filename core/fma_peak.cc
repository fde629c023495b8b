#include "core/fma_peak.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>

#include <fmt/format.h>

#include "core/bf16.h"
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
#define PST_FMA_KERNEL(NAME, TARGET, VEC, SET1, OPERAND, FMADD, STORE, LANES)                                          \
  __attribute__((target(TARGET), noinline)) double NAME(int64_t iterations, float a, float b, float init) {            \
    const VEC va = OPERAND(a), vb = OPERAND(b);                                                                        \
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

PST_FMA_KERNEL(avx2_kernel, "avx2,fma", __m256, _mm256_set1_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_store_ps, 8)
PST_FMA_KERNEL(avx512_kernel, "avx512f", __m512, _mm512_set1_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_store_ps, 16)

// The bf16 dot kernel from the same body: its operands are 32 copies of a
// value rounded to bf16 (to nearest even), and each step adds to each
// float32 lane the products of the two pairs in it, so the kernel's (a, b)
// adds 2ab a round. (4 chains already kept the instruction's units busy on
// the Xeon of model 207; the twelve cover more.)
__attribute__((target("avx512f,avx512bf16"))) inline __m512 bf16_pairs(float x) {
  return reinterpret_cast<__m512>(_mm512_cvtne2ps_pbh(_mm512_set1_ps(x), _mm512_set1_ps(x)));
}
__attribute__((target("avx512f,avx512bf16"))) inline __m512 bf16_dot(__m512 acc, __m512 a, __m512 b) {
  return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(a), reinterpret_cast<__m512bh>(b));
}
PST_FMA_KERNEL(avx512_bf16_kernel, "avx512f,avx512bf16", __m512, _mm512_set1_ps, bf16_pairs, bf16_dot, _mm512_store_ps,
               16)
#undef PST_FMA_KERNEL
#endif

// The bf16 dot kernel's recurrence in plain C++: each round adds a's two
// products, one after the other, to every lane.
double portable_bf16_kernel(int64_t iterations, float a, float init) {
  const float b = from_bf16(to_bf16(a));  // a rounded to bf16, to nearest even
  float acc = init;
  for (int64_t it = 0; it < iterations; ++it) acc = (acc + b) + b;
  return static_cast<double>(acc) * kFmaChains * 16;
}

// The best GFLOP/s of run(chunks) on `threads` threads over `repeats` runs
// of about `seconds`: each chunk does `flops` operations and returns
// `expect`; a run whose sum is not chunks x expect is not counted (the
// kernel did not do the work counted).
template <typename Chunk>
double best_gflops(int threads, double seconds, int repeats, double flops, double expect, Chunk run) {
  double best = 0;
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
        sink += run();
        ++chunks;
      }
    }
    const double elapsed = sw.seconds();
    if (sink != static_cast<double>(chunks) * expect) continue;
    best = std::max(best, static_cast<double>(chunks) * flops / elapsed * 1e-9);
  }
  return best;
}

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
    // Each chunk's sum is kFmaChains x lanes.
    const double gflops =
        best_gflops(threads, seconds, repeats, 2.0 * fma_lanes(isa) * kFmaChains * static_cast<double>(chunk),
                    static_cast<double>(kFmaChains) * fma_lanes(isa), [&] { return fma_kernel(isa, chunk, a, b, a); });
    if (gflops > best.gflops) best = {gflops, isa};
  }
  return best;
}

bool has_bf16_dot() {
#if defined(__x86_64__)
  static const bool bf16 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
  return bf16;
#else
  return false;
#endif
}

double bf16_dot_kernel(int64_t iterations, float a, float init, bool vector) {
#if defined(__x86_64__)
  if (vector && has_bf16_dot()) return avx512_bf16_kernel(iterations, a, 1.0f, init);
#endif
  return portable_bf16_kernel(iterations, a, init);
}

double measure_bf16_dot_peak(int threads, double seconds, int repeats) {
  if (!has_bf16_dot()) return 0;
  // a = 0.5 from 0: each lane counts the rounds, exactly (below 2^24).
  volatile float half = 0.5f;
  const float a = half;
  const int64_t chunk = 1 << 16;
  return best_gflops(std::max(1, threads), seconds, repeats, 4.0 * 16 * kFmaChains * static_cast<double>(chunk),
                     16.0 * kFmaChains * static_cast<double>(chunk), [&] { return bf16_dot_kernel(chunk, a, 0.0f); });
}

std::string bf16_products_note(double bf16_gflops, double fp32_gflops, bool* slower) {
  *slower = !(bf16_gflops >= fp32_gflops);
  const std::string figures = fmt::format(
      "this CPU's bf16 dot products (AVX512_BF16) measured {:.0f} GFLOP/s a core, its float32 multiply-adds {:.0f}",
      bf16_gflops, fp32_gflops);
  if (*slower)
    return figures +
           ": bf16 products run slower than float32 ones here (they also round their operands); "
           "train.matmul = \"fp32\" is likely faster";
  return figures + fmt::format(" ({:.2f}x)", bf16_gflops / fp32_gflops);
}

}  // namespace pst
