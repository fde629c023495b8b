#include "core/philox.h"

#include "core/status.h"
#include "core/x86_intrinsics.h"

namespace pst {
namespace {

#if defined(__x86_64__)
// lo and hi of m * a in each 32-bit lane: vpmuludq multiplies the even
// lanes' words into 64 bits, and the odd lanes' once shifted down to them.
__attribute__((target("avx512f"))) inline __m512i mulhilo_avx512(__m512i m, __m512i a, __m512i* hi) {
  const __m512i even = _mm512_mul_epu32(m, a);
  const __m512i odd = _mm512_mul_epu32(m, _mm512_srli_epi64(a, 32));
  constexpr __mmask16 kOdd = 0xAAAA;
  *hi = _mm512_mask_blend_epi32(kOdd, _mm512_srli_epi64(even, 32), odd);
  return _mm512_mask_blend_epi32(kOdd, even, _mm512_slli_epi64(odd, 32));
}

// Blocks first .. first + n - 1 (n <= 16 * G) in G groups of 16 lanes, a
// register per counter word and group. The groups' rounds are independent,
// so they hide each other's latency: one group alone waits on its products
// (2.0 ns a block on a Zen 5, against 1.0 with four).
template <int G>
__attribute__((target("avx512f"))) void avx512_group(uint64_t key, uint64_t stream, uint64_t first, int64_t n,
                                                     uint32_t* out) {
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i one = _mm512_set1_epi32(1);
  __m512i c0[G], c1[G], c2[G], c3[G];
  for (int g = 0; g < G; ++g) {
    // Counter words of blocks b + 0 .. b + 15: the low word plus the lane,
    // and the high word plus the carry where that wrapped.
    const uint64_t b = first + static_cast<uint64_t>(16 * g);
    const __m512i lo = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(b)));
    const __m512i hi = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(b >> 32)));
    c0[g] = _mm512_add_epi32(lo, iota);
    c1[g] = _mm512_mask_add_epi32(hi, _mm512_cmplt_epu32_mask(c0[g], lo), hi, one);
    c2[g] = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream)));
    c3[g] = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream >> 32)));
  }
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(kPhiloxM1));
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < kPhiloxRounds; ++round) {  // philox_round in every lane
    const __m512i rk0 = _mm512_set1_epi32(static_cast<int>(k0)), rk1 = _mm512_set1_epi32(static_cast<int>(k1));
    for (int g = 0; g < G; ++g) {
      __m512i hi0, hi1;
      const __m512i lo0 = mulhilo_avx512(m0, c0[g], &hi0);
      const __m512i lo1 = mulhilo_avx512(m1, c2[g], &hi1);
      c0[g] = _mm512_ternarylogic_epi32(hi1, c1[g], rk0, 0x96);  // three-way xor
      c2[g] = _mm512_ternarylogic_epi32(hi0, c3[g], rk1, 0x96);
      c1[g] = lo1;
      c3[g] = lo0;
    }
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  for (int g = 0; g < G; ++g) {
    // The words of block l go to out[4 l + w]: a 4 x 16 transpose. After
    // the unpacks u_q holds blocks q, q + 4, q + 8, q + 12 (one per 128-bit
    // lane); the shuffles gather four consecutive blocks per register.
    const __m512i t0 = _mm512_unpacklo_epi32(c0[g], c1[g]), t1 = _mm512_unpackhi_epi32(c0[g], c1[g]);
    const __m512i t2 = _mm512_unpacklo_epi32(c2[g], c3[g]), t3 = _mm512_unpackhi_epi32(c2[g], c3[g]);
    const __m512i u0 = _mm512_unpacklo_epi64(t0, t2), u1 = _mm512_unpackhi_epi64(t0, t2);
    const __m512i u2 = _mm512_unpacklo_epi64(t1, t3), u3 = _mm512_unpackhi_epi64(t1, t3);
    constexpr int kLanes02 = 0x88, kLanes13 = 0xDD;  // 128-bit lanes (0, 2, 0, 2) and (1, 3, 1, 3)
    const __m512i x0 = _mm512_shuffle_i32x4(u0, u1, kLanes02), x1 = _mm512_shuffle_i32x4(u2, u3, kLanes02);
    const __m512i x2 = _mm512_shuffle_i32x4(u0, u1, kLanes13), x3 = _mm512_shuffle_i32x4(u2, u3, kLanes13);
    const __m512i words[4] = {_mm512_shuffle_i32x4(x0, x1, kLanes02), _mm512_shuffle_i32x4(x2, x3, kLanes02),
                              _mm512_shuffle_i32x4(x0, x1, kLanes13), _mm512_shuffle_i32x4(x2, x3, kLanes13)};
    const int64_t left = n - 16 * g;  // blocks of this group to write
    for (int q = 0; q < 4 && 4 * q < left; ++q) {
      uint32_t* o = out + 64 * g + 16 * q;
      if (left >= 4 * q + 4)
        _mm512_storeu_si512(o, words[q]);
      else  // the last blocks: only theirs
        _mm512_mask_storeu_epi32(o, static_cast<__mmask16>((1u << (4 * (left - 4 * q))) - 1u), words[q]);
    }
  }
}

__attribute__((target("avx512f"))) void avx512_blocks(uint64_t key, uint64_t stream, uint64_t first, int64_t count,
                                                      uint32_t* out) {
  int64_t j = 0;
  for (; j + 64 <= count; j += 64) avx512_group<4>(key, stream, first + static_cast<uint64_t>(j), 64, out + 4 * j);
  for (; j < count; j += 16)
    avx512_group<1>(key, stream, first + static_cast<uint64_t>(j), count - j < 16 ? count - j : 16, out + 4 * j);
}

// The same in AVX2's registers of 8 lanes, for CPUs without AVX-512: the
// products are vpmuludq's of 4 x 4 lanes, the carry into the counter's high
// word a signed comparison of the words with their top bits flipped (AVX2
// compares only signed), and the three-way xor two xors.
__attribute__((target("avx2"))) inline __m256i mulhilo_avx2(__m256i m, __m256i a, __m256i* hi) {
  const __m256i even = _mm256_mul_epu32(m, a);
  const __m256i odd = _mm256_mul_epu32(m, _mm256_srli_epi64(a, 32));
  constexpr int kOdd = 0xAA;
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, kOdd);
  return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), kOdd);
}

// Blocks first .. first + n - 1 (n <= 8 * G) in G groups of 8 lanes.
template <int G>
__attribute__((target("avx2"))) void avx2_group(uint64_t key, uint64_t stream, uint64_t first, int64_t n,
                                                uint32_t* out) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i top = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  __m256i c0[G], c1[G], c2[G], c3[G];
  for (int g = 0; g < G; ++g) {
    const uint64_t b = first + static_cast<uint64_t>(8 * g);
    const __m256i lo = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(b)));
    const __m256i hi = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(b >> 32)));
    c0[g] = _mm256_add_epi32(lo, iota);
    // All ones (-1) where the low word wrapped (c0 < lo as unsigned numbers).
    const __m256i wrapped = _mm256_cmpgt_epi32(_mm256_xor_si256(lo, top), _mm256_xor_si256(c0[g], top));
    c1[g] = _mm256_sub_epi32(hi, wrapped);
    c2[g] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream)));
    c3[g] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream >> 32)));
  }
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhiloxM1));
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < kPhiloxRounds; ++round) {  // philox_round in every lane
    const __m256i rk0 = _mm256_set1_epi32(static_cast<int>(k0)), rk1 = _mm256_set1_epi32(static_cast<int>(k1));
    for (int g = 0; g < G; ++g) {
      __m256i hi0, hi1;
      const __m256i lo0 = mulhilo_avx2(m0, c0[g], &hi0);
      const __m256i lo1 = mulhilo_avx2(m1, c2[g], &hi1);
      c0[g] = _mm256_xor_si256(_mm256_xor_si256(hi1, c1[g]), rk0);
      c2[g] = _mm256_xor_si256(_mm256_xor_si256(hi0, c3[g]), rk1);
      c1[g] = lo1;
      c3[g] = lo0;
    }
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  for (int g = 0; g < G; ++g) {
    // A 4 x 8 transpose: after the unpacks u_q holds blocks q and q + 4
    // (one per 128-bit lane); each store takes two consecutive blocks.
    const __m256i t0 = _mm256_unpacklo_epi32(c0[g], c1[g]), t1 = _mm256_unpackhi_epi32(c0[g], c1[g]);
    const __m256i t2 = _mm256_unpacklo_epi32(c2[g], c3[g]), t3 = _mm256_unpackhi_epi32(c2[g], c3[g]);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    constexpr int kLows = 0x20, kHighs = 0x31;  // the two low 128-bit lanes, the two high ones
    const __m256i pairs[4] = {_mm256_permute2x128_si256(u0, u1, kLows), _mm256_permute2x128_si256(u2, u3, kLows),
                              _mm256_permute2x128_si256(u0, u1, kHighs), _mm256_permute2x128_si256(u2, u3, kHighs)};
    const int64_t left = n - 8 * g;  // blocks of this group to write
    for (int q = 0; q < 4 && 2 * q < left; ++q) {
      uint32_t* o = out + 32 * g + 8 * q;
      if (left >= 2 * q + 2)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), pairs[q]);
      else  // the last block: only its 4 words
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o), _mm256_castsi256_si128(pairs[q]));
    }
  }
}

__attribute__((target("avx2"))) void avx2_blocks(uint64_t key, uint64_t stream, uint64_t first, int64_t count,
                                                 uint32_t* out) {
  int64_t j = 0;
  for (; j + 32 <= count; j += 32) avx2_group<4>(key, stream, first + static_cast<uint64_t>(j), 32, out + 4 * j);
  for (; j < count; j += 8)
    avx2_group<1>(key, stream, first + static_cast<uint64_t>(j), count - j < 8 ? count - j : 8, out + 4 * j);
}
#endif

// The blocks in the given way, which the caller knows this CPU has.
void draw(Philox::Lanes lanes, uint64_t key, uint64_t stream, uint64_t first, int64_t count, uint32_t* out) {
  switch (lanes) {
#if defined(__x86_64__)
    case Philox::Lanes::kAvx512: avx512_blocks(key, stream, first, count, out); return;
    case Philox::Lanes::kAvx2: avx2_blocks(key, stream, first, count, out); return;
#endif
    default:
      for (int64_t j = 0; j < count; ++j) {
        const PhiloxOut b = philox_block(key, stream, first + static_cast<uint64_t>(j));
        for (int w = 0; w < 4; ++w) out[4 * j + w] = b.v[w];
      }
  }
}

}  // namespace

bool Philox::has(Lanes lanes) {
  switch (lanes) {
    case Lanes::kPortable: return true;
#if defined(__x86_64__)
    case Lanes::kAvx2: {
      static const bool avx2 = __builtin_cpu_supports("avx2");
      return avx2;
    }
    case Lanes::kAvx512: {
      static const bool avx512 = __builtin_cpu_supports("avx512f");
      return avx512;
    }
#endif
    default: return false;
  }
}

Philox::Lanes Philox::best_lanes() {
  // The last way held in kLanes, which lists them narrowest first.
  static const Lanes best = [] {
    Lanes widest = Lanes::kPortable;
    for (Lanes lanes : kLanes)
      if (has(lanes)) widest = lanes;
    return widest;
  }();
  return best;
}

const char* Philox::name(Lanes lanes) {
  switch (lanes) {
    case Lanes::kAvx512: return "avx512";
    case Lanes::kAvx2: return "avx2";
    default: return "portable";
  }
}

void Philox::blocks(uint64_t first, int64_t count, uint32_t* out) const {
  draw(best_lanes(), key_, stream_, first, count, out);
}

void Philox::blocks(Lanes lanes, uint64_t first, int64_t count, uint32_t* out) const {
  PST_CHECK_MSG(has(lanes), "Philox::blocks: this CPU has no {} instructions", name(lanes));
  draw(lanes, key_, stream_, first, count, out);
}

}  // namespace pst
