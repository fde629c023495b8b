// The x86 vector intrinsics (immintrin.h) for code that picks its
// instruction set at run time with target attributes (core/philox.cc,
// core/fma_peak.cc); nothing on other CPUs.
#pragma once

#if defined(__x86_64__)
// GCC 12's AVX-512 intrinsics pass an uninitialised vector as the operand a
// mask would keep, and warn of it in the header where they are inlined.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif
