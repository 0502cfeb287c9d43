// Launcher of the sgd_step CUDA kernel. Torch-free: raw device pointers, sizes and a stream, so
// sgd_step.cu compiles with plain nvcc (CI compile check without a CUDA torch). The step's backward is
// adjoint_step's kernel (csrc/adjoint_step/adjoint_step_cuda.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/hd.h"

namespace ddfast {
namespace sgd_step {

// One launch: theta_new = theta - lr * d with d = grad, or d = momentum * velocity + grad when velocity
// is not null; v_new = d when v_new is not null (the momentum form). lr: one element of lr_dtype, read
// in-kernel. `aligned`: every non-null vector starts on a 16-byte boundary.
cudaError_t launch_forward(DType dtype, const void* theta, const void* grad, const void* velocity, const void* lr,
                           DType lr_dtype, double momentum, int64_t numel, void* theta_new, void* v_new, bool aligned,
                           cudaStream_t stream);

}  // namespace sgd_step
}  // namespace ddfast
