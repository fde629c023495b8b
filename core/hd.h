// PST_HD marks small inline functions that both the CPU backend and CUDA
// kernels call, so the CPU tests exercise the same formulas.
#pragma once

#if defined(__CUDACC__)
#define PST_HD __host__ __device__ __forceinline__
#else
#define PST_HD inline
#endif
