// Device helpers shared by the flat-vector CUDA kernels (param_match_loss.cu, sgd_step.cu,
// adjoint_step.cu). Torch-free (compiles with plain nvcc).
//
// Each block owns the fixed range [blockIdx.x * kBlockElements, ...) of the vector(s). With ALIGNED
// (every vector starts on a 16-byte boundary) the range is read and written as 16-byte vectors plus a
// scalar tail; otherwise element by element. Reductions: each thread adds its elements in order, the
// block adds the threads' values in a fixed tree (block_sum) and writes one partial per block; a
// one-block finalize adds the partials in a fixed order (sum_partials). No atomics: deterministic.
//
// Products go through mul() (__fmul_rn/__dmul_rn), which nvcc never contracts into an FMA, so each
// element rounds exactly as in the C++ CPU kernels and the reference (no FMA there either).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "common/hd.h"
#include "flat/flat_cuda.h"

namespace ddfast {
namespace flat {

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
static_assert(kBlockElements % Vec16<__half>::kWidth == 0, "blocks must start on 16-byte boundaries");

// Calls visit(i) for the elements of this block's range; with ALIGNED, visit_vec(i) for each 16-byte
// vector of its body (the kWidth elements from i) and visit(i) for its tail.
template <typename T, bool ALIGNED, typename Scalar, typename Vector>
__device__ __forceinline__ void for_block_elements(int64_t numel, Scalar&& visit, Vector&& visit_vec) {
  const int64_t start = int64_t(blockIdx.x) * kBlockElements;
  const int64_t end = start + kBlockElements < numel ? start + kBlockElements : numel;
  int64_t tail = start;
  if (ALIGNED) {
    constexpr int W = Vec16<T>::kWidth;
    tail = start + (end - start) / W * W;
    for (int64_t i = start + int64_t(threadIdx.x) * W; i < tail; i += int64_t(kThreads) * W) visit_vec(i);
  }
  for (int64_t i = tail + threadIdx.x; i < end; i += kThreads) visit(i);
}

// Sum of `value` over the block (all kThreads threads must call it); valid in thread 0. Fixed order.
template <typename Acc>
__device__ Acc block_sum(Acc value, Acc* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  value = threadIdx.x < kThreads / 32 ? shared[threadIdx.x] : Acc(0);
  if (warp == 0) {
    for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  return value;
}

// The finalize of a reduction, run by one block: row k of the per-block partials (partials + k *
// num_blocks) summed in a fixed order (thread j adds blocks j, j + kThreads, ... in turn, then
// block_sum). total[] is valid in thread 0.
template <int NSUMS, typename Acc>
__device__ void sum_partials(const Acc* __restrict__ partials, int64_t num_blocks, Acc (&total)[NSUMS]) {
  __shared__ Acc shared[kThreads / 32];
#pragma unroll
  for (int k = 0; k < NSUMS; ++k) {
    Acc s(0);
#pragma unroll 4
    for (int64_t b = threadIdx.x; b < num_blocks; b += kThreads) s += partials[k * num_blocks + b];
    total[k] = block_sum(s, shared);
  }
}

// Host side: turn runtime choices into template arguments. f receives a value of T (a type tag),
// std::bool_constant<...> or std::integral_constant<int, ...>.
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

template <typename F>
cudaError_t with_bool(bool value, F&& f) {
  return value ? f(std::true_type{}) : f(std::false_type{});
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

}  // namespace flat
}  // namespace ddfast
