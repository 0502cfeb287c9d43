// Device helpers shared by the CUDA kernels (the flat-vector kernels in csrc/param_match_loss,
// csrc/sgd_step, csrc/adjoint_step): element conversion to and from the accumulate type, products that
// are never contracted into an FMA, 16-byte vector accesses, and the host-side dispatch of runtime
// choices onto template arguments. Torch-free (compiles with plain nvcc).
//
// Products go through mul() (__fmul_rn/__dmul_rn), which nvcc never contracts into an FMA, so each
// element rounds exactly as in the C++ CPU kernels and the reference (no FMA there either).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "common/hd.h"

namespace ddfast {

template <typename T>
__device__ __forceinline__ acc_t<T> to_acc(T x) { return static_cast<acc_t<T>>(x); }
template <>
__device__ __forceinline__ float to_acc<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_acc<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> x) { return static_cast<T>(x); }
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// A product that is never fused with a neighbouring add.
__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul(double a, double b) { return __dmul_rn(a, b); }

// Read-only inputs: load through the non-coherent path.
template <typename T>
__device__ __forceinline__ acc_t<T> load_acc(const T* p) { return to_acc(__ldg(p)); }

// A one-element tensor (lr, the upstream gradient) read in its own dtype and converted like
// tensor.to(acc): read in-kernel, so there is no device-to-host synchronisation.
template <typename Acc>
__device__ __forceinline__ Acc load_scalar(const void* p, DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return static_cast<Acc>(__half2float(*static_cast<const __half*>(p)));
    case DType::kBFloat16: return static_cast<Acc>(__bfloat162float(*static_cast<const __nv_bfloat16*>(p)));
    case DType::kFloat32: return static_cast<Acc>(*static_cast<const float*>(p));
    default: return static_cast<Acc>(*static_cast<const double*>(p));
  }
}

// 16 bytes of T, moved as one uint4 so that every element type gets a single 16-byte access.
template <typename T>
struct Vec16 {
  static constexpr int kWidth = 16 / sizeof(T);
  union {
    uint4 raw;
    T v[kWidth];
  };
  __device__ __forceinline__ Vec16() {}
  __device__ __forceinline__ static Vec16 load(const T* p) {
    Vec16 x;
    x.raw = __ldg(reinterpret_cast<const uint4*>(p));
    return x;
  }
  __device__ __forceinline__ void store(T* p) const { *reinterpret_cast<uint4*>(p) = raw; }
};

// Host side: turn runtime choices into template arguments. f receives a value of T (a type tag) or
// std::integral_constant<int, ...>; with_bool (csrc/shared/compile_time.h) does the same for a flag.
template <typename F>
cudaError_t with_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat16: return f(__half{});
    case DType::kBFloat16: return f(__nv_bfloat16{});
    case DType::kFloat32: return f(float{});
    case DType::kFloat64: return f(double{});
  }
  return cudaErrorInvalidValue;
}

// value in [0, N); flags are ints, not bools, so that only ALIGNED shows as a bool in mangled kernel
// names (tests/test_compile_gpu.py finds the aligned hot kernels by `Lb1E`).
template <int N, int I = 0, typename F>
cudaError_t with_int(int value, F&& f) {
  if constexpr (I < N) {
    return value == I ? f(std::integral_constant<int, I>{}) : with_int<N, I + 1>(value, f);
  } else {
    return cudaErrorInvalidValue;
  }
}

}  // namespace ddfast
