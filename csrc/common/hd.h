// Shared helpers for code compiled both by the host compiler and by nvcc. Torch-free.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define DDFAST_HD __host__ __device__ __forceinline__
#else
#define DDFAST_HD inline
#endif

namespace ddfast {

// Element types the kernels serve; the torch glue maps at::ScalarType onto these.
enum class DType : int { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2, kFloat64 = 3 };

// Accumulate in fp32 for fp16/bf16/fp32 and in fp64 for fp64 (docs/semantics.md#op-contract).
template <typename T> struct AccumulateType { using type = float; };
template <> struct AccumulateType<double> { using type = double; };
template <typename T> using acc_t = typename AccumulateType<T>::type;

// Correctly rounded square root for both accumulate types (no fast-math anywhere in ddfast).
DDFAST_HD float dd_sqrt(float x) { return sqrtf(x); }
DDFAST_HD double dd_sqrt(double x) { return sqrt(x); }

}  // namespace ddfast
