// Device helpers of the flat-vector CUDA kernels (param_match_loss.cu, sgd_step.cu, adjoint_step.cu):
// the fixed block ranges and the deterministic reductions over them; the element conversions, mul() and
// Vec16 are in csrc/shared/cuda.cuh. Torch-free (compiles with plain nvcc).
//
// Each block owns the fixed range [blockIdx.x * kBlockElements, ...) of the vector(s). With ALIGNED
// (every vector starts on a 16-byte boundary) the range is read and written as 16-byte vectors plus a
// scalar tail; otherwise element by element. Reductions: each thread adds its elements in order, the
// block adds the threads' values in a fixed tree (block_sum) and writes one partial per block; a
// one-block finalize adds the partials in a fixed order (sum_partials). No atomics: deterministic.
#pragma once

#include <cuda_fp16.h>

#include "flat/flat_cuda.h"
#include "shared/cuda.cuh"

namespace ddfast {
namespace flat {

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

}  // namespace flat
}  // namespace ddfast
