// What a dropout mask costs on the CPU: Philox4x32-10 blocks drawn one at a
// time (Philox::block, the scalar rounds), then in every way
// Philox::blocks has on this CPU (a loop over block(), which the compiler
// may vectorise; AVX2 registers; AVX-512 registers), against the way
// blocks() takes here (the widest); then the CPU backend's dropout_forward
// over a g2p-modern FFN activation (2,560 rows x 683) against a copy of the
// same bytes, the least any pass over them costs. One thread. The sides
// alternate (A B C ...) --repeats times; it prints each side's median ns
// per block (per element for the kernel and the copy) and the ratios to
// blocks() (to the copy) as median [min-max] of the repeats' ratios.
//
//   dropout_masks [--repeats N]
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench/median.h"
#include "core/philox.h"
#include "core/timer.h"
#include "model/backend.h"

using namespace pst;

namespace {

constexpr int64_t kBlocks = 1 << 20;  // per timed pass
constexpr int64_t kChunk = 256;       // blocks per call, as the backend's 1,024 elements

uint32_t sink = 0;

// ns per block: block() one at a time (lanes empty), or blocks(lanes).
double time_blocks(const Philox& rng, std::optional<Philox::Lanes> lanes) {
  std::vector<uint32_t> out(4 * kChunk);
  const Stopwatch t;
  for (int64_t j = 0; j < kBlocks; j += kChunk) {
    if (!lanes) {
      for (int64_t b = 0; b < kChunk; ++b) {
        const PhiloxOut o = rng.block(static_cast<uint64_t>(j + b));
        std::memcpy(&out[static_cast<size_t>(4 * b)], o.v, sizeof o.v);
      }
    } else {
      rng.blocks(*lanes, static_cast<uint64_t>(j), kChunk, out.data());
    }
    sink += out[static_cast<size_t>(j % (4 * kChunk))];
  }
  return t.seconds() * 1e9 / kBlocks;
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--repeats" && i + 1 < argc) {
      repeats = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: dropout_masks [--repeats N]\n");
      return 2;
    }
  }
  if (repeats < 1) {
    std::fprintf(stderr, "dropout_masks: --repeats must be at least 1\n");
    return 2;
  }
  omp_set_num_threads(1);
  const Philox rng(0x5EEDull, mix_stream(7, 3));
  const std::unique_ptr<Backend> be = make_cpu_backend(1);
  const int64_t n = 2560 * 683;
  std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[static_cast<size_t>(i)] = static_cast<float>(i % 97) * 0.01f;
  const DropoutKey key = DropoutKey::make(1, 2, 0, 3);
  auto per_element = [&](bool kernel) {
    constexpr int kPasses = 20;
    const Stopwatch t;
    for (int r = 0; r < kPasses; ++r) {
      if (kernel)
        be->dropout_forward(y.data(), x.data(), n, 0.1f, key);
      else
        std::memcpy(y.data(), x.data(), static_cast<size_t>(n) * sizeof(float));
      sink += static_cast<uint32_t>(y[static_cast<size_t>(r)]);
    }
    return t.seconds() * 1e9 / (kPasses * static_cast<double>(n));
  };
  const Philox::Lanes best = Philox::best_lanes();
  // The sides: block(), then every way this CPU has, the widest (blocks()) last.
  std::vector<std::optional<Philox::Lanes>> sides = {std::nullopt};
  std::vector<std::string> names = {"block()"};
  for (Philox::Lanes lanes : Philox::kLanes)
    if (Philox::has(lanes)) {
      sides.push_back(lanes);
      names.push_back(std::string("blocks(") + Philox::name(lanes) + ")");
    }
  time_blocks(rng, best);  // warm up
  std::vector<std::vector<double>> ns(sides.size()), ratio(sides.size());
  std::vector<double> kernel, copy, r_kernel;
  for (int r = 0; r < repeats; ++r) {
    for (size_t s = 0; s < sides.size(); ++s) ns[s].push_back(time_blocks(rng, sides[s]));
    for (size_t s = 0; s < sides.size(); ++s) ratio[s].push_back(ns[s].back() / ns.back().back());
    kernel.push_back(per_element(true));
    copy.push_back(per_element(false));
    r_kernel.push_back(kernel.back() / copy.back());
  }
  auto show = [](const std::string& what, const std::vector<double>& v) {
    const Spread s = spread(v);
    std::printf("%s %.2f [%.2f-%.2f]", what.c_str(), s.median, s.min, s.max);
  };
  std::printf("blocks() here: blocks(%s)\nns per block:", Philox::name(best));
  for (size_t s = 0; s < sides.size(); ++s) std::printf("  %s %.2f", names[s].c_str(), median(ns[s]));
  std::printf("\nover blocks(%s):", Philox::name(best));
  for (size_t s = 0; s + 1 < sides.size(); ++s) show("  " + names[s], ratio[s]);
  std::printf("\nns per element, %lld elements: dropout_forward %.3f  copy %.3f\n", static_cast<long long>(n),
              median(kernel), median(copy));
  show("dropout_forward / copy", r_kernel);
  std::printf("\n(%u)\n", sink & 1u);
  return 0;
}
