// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC'11): a counter-based generator. A (key, counter) pair maps to four
// independent 32-bit words, so any element of any random stream can be drawn
// in any order on any device. pst keys dropout by (seed, step, worker, site)
// and initial weights by (seed, parameter name).
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>

#include "core/hd.h"

namespace pst {

struct PhiloxOut {
  uint32_t v[4];
};

PST_HD uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// The round's multipliers, the key's increment after each round (Weyl
// constants), and the rounds of Philox4x32-10.
constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;
constexpr int kPhiloxRounds = 10;

// One round on the counter (c0, c1, c2, c3) with the round key (k0, k1).
PST_HD void philox_round(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0, uint32_t k1) {
  uint32_t hi0, hi1;
  const uint32_t lo0 = mulhilo32(kPhiloxM0, c0, &hi0);
  const uint32_t lo1 = mulhilo32(kPhiloxM1, c2, &hi1);
  const uint32_t n0 = hi1 ^ c1 ^ k0;
  const uint32_t n2 = hi0 ^ c3 ^ k1;
  c0 = n0;
  c1 = lo1;
  c2 = n2;
  c3 = lo0;
}

// key: 64 bits; counter: 128 bits as (c0, c1, c2, c3).
PST_HD PhiloxOut philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < kPhiloxRounds; ++round) {
    philox_round(c0, c1, c2, c3, k0, k1);
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return PhiloxOut{{c0, c1, c2, c3}};
}

// Block `index` of the stream `stream` under the key `key`: the counter is
// (index, stream) and the key (key), each 64-bit value split low word first.
PST_HD PhiloxOut philox_block(uint64_t key, uint64_t stream, uint64_t index) {
  return philox4x32_10(static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), static_cast<uint32_t>(stream),
                       static_cast<uint32_t>(stream >> 32), static_cast<uint32_t>(key),
                       static_cast<uint32_t>(key >> 32));
}

// Uniform in [0, 1) with 24 bits of resolution (exactly representable floats).
PST_HD float uniform01(uint32_t bits) { return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f); }

// A stream of random numbers addressed by element index.
// Thread-safe: every call is a pure function of (key, stream, index).
class Philox {
 public:
  Philox(uint64_t key, uint64_t stream) : key_(key), stream_(stream) {}

  PhiloxOut block(uint64_t index) const { return philox_block(key_, stream_, index); }

  // How blocks() draws many blocks (core/philox.cc): 64 at a time through
  // the rounds in registers of 16 lanes (AVX-512), 32 at a time in
  // registers of 8 (AVX2), or a loop over block(). Every way gives
  // block()'s words.
  enum class Lanes { kPortable, kAvx2, kAvx512 };
  // Every way, the narrowest first (best_lanes(), the tests and benchmarks walk it).
  static constexpr Lanes kLanes[] = {Lanes::kPortable, Lanes::kAvx2, Lanes::kAvx512};
  // Whether this CPU has the instructions (asked once, when first needed).
  static bool has(Lanes lanes);
  // The widest this CPU has: what blocks() uses.
  static Lanes best_lanes();
  static const char* name(Lanes lanes);

  // Blocks first .. first + count - 1: word w of block first + j goes to
  // out[4 * j + w], as block() gives them one at a time.
  void blocks(uint64_t first, int64_t count, uint32_t* out) const;
  // The same in the given way, which this CPU must have (has(lanes)): for
  // the tests and benchmarks, which hold every way to block().
  void blocks(Lanes lanes, uint64_t first, int64_t count, uint32_t* out) const;
  // Element i of the uniform [0,1) stream.
  float uniform(uint64_t i) const { return uniform01(block(i / 4).v[i % 4]); }
  // Element i of the standard normal stream (Box-Muller on block i's first two words).
  double normal(uint64_t i) const {
    const PhiloxOut b = block(i);
    const double u1 = (static_cast<double>(b.v[0]) + 1.0) / 4294967297.0;  // (0, 1)
    const double u2 = static_cast<double>(b.v[1]) / 4294967296.0;          // [0, 1)
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  uint64_t key_;
  uint64_t stream_;
};

// FNV-1a over a string: the stream id of a named tensor's initial values.
constexpr uint64_t fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

// Mixes several ids into one stream id (splitmix64 finaliser on each step).
constexpr uint64_t mix_stream(uint64_t a, uint64_t b) {
  uint64_t z = a ^ (b + 0x9e3779b97f4a7c15ull + (a << 6) + (a >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace pst
