// The CPU's float32 multiply-add peak, measured rather than taken from a data
// sheet (a virtual machine's clock and vector units are whatever the host
// gives it): every thread runs independent chains of fused multiply-adds in
// the widest vectors the CPU offers, enough chains to cover the FMA units'
// latency. bench/train_throughput prints it beside the step's products, so a
// run says how far those products are from what the cores can do at all
// (docs/benchmarks.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pst {

// Vector widths the kernel is written for; kPortable is plain C++ (what the
// compiler makes of it).
enum class FmaIsa { kPortable, kAvx2, kAvx512 };
const char* to_string(FmaIsa isa);
// Whether this CPU runs `isa`, and every one it runs, narrowest first.
bool has_fma_isa(FmaIsa isa);
std::vector<FmaIsa> fma_isas();

// Floats in one vector of `isa`, and the independent accumulators (vectors)
// each thread's kernel keeps.
int fma_lanes(FmaIsa isa);
constexpr int kFmaChains = 12;

// One thread's kernel: `iterations` rounds of acc = acc * a + b on each of
// the kFmaChains vectors (every lane starting at `init`), then the sum of
// all lanes of all accumulators in double. 2 * lanes * kFmaChains * iterations
// floating-point operations. The value is returned so that no compiler drops
// the work, and so that a test can check it against the recurrence.
double fma_kernel(FmaIsa isa, int64_t iterations, float a, float b, float init);

struct FmaPeak {
  double gflops = 0;  // float32 GFLOP/s of all threads together, the best repeat
  FmaIsa isa = FmaIsa::kPortable;
};
// The kernel on `threads` OpenMP threads at once, for each ISA the CPU runs,
// `repeats` times for about `seconds` each; the fastest ISA's best repeat (the
// portable kernel only on a CPU with neither AVX2 nor AVX-512).
FmaPeak measure_fma_peak(int threads, double seconds = 0.1, int repeats = 3);

// The same for bf16 products with float32 sums, the instruction oneDNN's bf16
// products are built on where the CPU has no AMX: AVX512_BF16's vdpbf16ps,
// which adds to each of 16 float32 lanes the products of two pairs of bf16
// values (4 floating-point operations a lane). A CPU may run it at a lower
// rate than its float32 multiply-adds (an Intel Xeon of model 207 ran it at
// half: docs/benchmarks.md), and then bf16 products cannot beat float32 ones.
bool has_bf16_dot();
// One thread's kernel: `iterations` rounds of acc += a * 1 + a * 1 (a rounded
// to bf16, to nearest even) on each of kFmaChains vectors of 16 lanes that
// start at `init`, then the sum of all lanes in double; 4 * 16 * kFmaChains *
// iterations operations. Without AVX512_BF16 or `vector`, the same
// recurrence in plain C++ (for tests; measure_bf16_dot_peak does not time it).
double bf16_dot_kernel(int64_t iterations, float a, float init, bool vector = true);
// GFLOP/s of the kernel on `threads` threads, the best of `repeats` runs of
// about `seconds`; 0 without AVX512_BF16.
double measure_bf16_dot_peak(int threads, double seconds = 0.1, int repeats = 3);

// What the two peaks say of bf16 products, for the log of a job that asks for
// them: the figures, and whether bf16 products can be faster than float32 ones
// here at all (not where the bf16 peak is below the float32 one: they also
// round their operands). `slower` is set when they cannot.
std::string bf16_products_note(double bf16_gflops, double fp32_gflops, bool* slower);

}  // namespace pst
