// Launchers of the grad_distance CUDA kernels. Torch-free: raw device pointers, sizes and a stream,
// so grad_distance.cu compiles with plain nvcc (CI compile check without a CUDA torch).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/hd.h"

namespace ddfast {
namespace grad_distance {

// Device arrays: pointer_table[2T] (absolute addresses of g_syn[0..T) then g_real[0..T)),
// items[W, 5], item_weight[W], part_ptr[K+1], part_weight[P]; partials[P*3] and stats in the
// accumulate type (fp64 for fp64 inputs, else fp32), as is out[K]. `aligned`: every
// tensor starts on a 16-byte boundary (16-byte vector loads are then legal).
cudaError_t launch_forward(DType dtype, int metric, const int64_t* pointer_table, int64_t num_tensors,
                           const int64_t* items, const double* item_weight, int64_t num_items,
                           const int64_t* part_ptr, const double* part_weight, int64_t num_classes, void* partials,
                           void* stats, void* out, bool aligned, cudaStream_t stream);

// pointer_table[4T]: g_syn, g_real, then the outputs dL/dg_syn and dL/dg_real (each group used only
// when need_syn / need_real); stats as produced by launch_forward; grad_out[K] in the accumulate type.
cudaError_t launch_backward(DType dtype, int metric, const int64_t* pointer_table, int64_t num_tensors,
                            const int64_t* items, const double* item_weight, int64_t num_items,
                            const void* stats, const void* grad_out, bool need_syn, bool need_real, bool aligned,
                            cudaStream_t stream);

}  // namespace grad_distance
}  // namespace ddfast
