// Launchers of the param_match_loss CUDA kernels. Torch-free: raw device pointers, sizes and a stream,
// so param_match_loss.cu compiles with plain nvcc (CI compile check without a CUDA torch).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/hd.h"
#include "flat/flat_cuda.h"

namespace ddfast {
namespace param_match_loss {

// Two launches: per-block partial sums of (theta_n - theta_target)^2 and (theta_start - theta_target)^2
// into partials[2 * flat::num_blocks(numel)], then one block writes sums[2] = [A, B] and loss = A / B.
// partials, sums and loss are in the accumulate type (fp64 for fp64, else fp32). `aligned`: every
// vector starts on a 16-byte boundary.
cudaError_t launch_forward(DType dtype, const void* theta_n, const void* theta_start, const void* theta_target,
                           int64_t numel, void* partials, void* sums, void* loss, bool aligned, cudaStream_t stream);

// One launch: the gradients whose output pointer is not null (d_n, d_start, d_target, in the vectors'
// dtype) from the forward's sums and the upstream gradient grad_out (one element of grad_out_dtype,
// read in-kernel). `aligned`: the inputs and the non-null outputs start on 16-byte boundaries.
cudaError_t launch_backward(DType dtype, const void* theta_n, const void* theta_start, const void* theta_target,
                            int64_t numel, const void* sums, const void* grad_out, DType grad_out_dtype, void* d_n,
                            void* d_start, void* d_target, bool aligned, cudaStream_t stream);

}  // namespace param_match_loss
}  // namespace ddfast
