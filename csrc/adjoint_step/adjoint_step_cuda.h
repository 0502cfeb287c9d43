// Launcher of the adjoint_step CUDA kernels (also sgd_step's backward). Torch-free: raw device pointers,
// sizes and a stream, so adjoint_step.cu compiles with plain nvcc (CI compile check without a CUDA torch).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/hd.h"
#include "flat/flat_cuda.h"

namespace ddfast {
namespace adjoint_step {

// u = nu - lr * lam (nu null: u = -lr * lam) and, when nu_next is not null, nu_next = momentum * u, in one
// pass; with a direction, the same pass writes per-block partial sums of lam * direction into
// partials[flat::num_blocks(numel)] and a one-block finalize writes dlr = -sum (two launches); without
// one, dlr = 0 (one launch). dlr and partials are in the accumulate type; lr is one element of lr_dtype,
// read in-kernel. `aligned`: every non-null vector starts on a 16-byte boundary.
cudaError_t launch(DType dtype, const void* lam, const void* nu, const void* direction, const void* lr, DType lr_dtype,
                   double momentum, int64_t numel, void* u, void* nu_next, void* partials, void* dlr, bool aligned,
                   cudaStream_t stream);

}  // namespace adjoint_step
}  // namespace ddfast
