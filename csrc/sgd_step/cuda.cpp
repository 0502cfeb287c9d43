// Torch glue for the sgd_step CUDA kernel: tensor checks, outputs, the stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "flat/flat.h"
#include "sgd_step/sgd_step_cuda.h"
#include "shared/tensors.h"

namespace ddfast {
namespace sgd_step {
namespace {

constexpr const char* kOp = "sgd_step";

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& theta, const at::Tensor& grad, const at::Tensor& lr,
                                                const c10::optional<at::Tensor>& velocity, double momentum,
                                                bool with_velocity) {
  flat::check_vectors(kOp, {{"theta", &theta}, {"grad", &grad}, {"velocity", optional_ptr(velocity)}},
                      at::kCUDA);
  const bool has_v = velocity.has_value();
  TORCH_CHECK(with_velocity || !has_v, kOp, ": a velocity needs with_velocity");
  TORCH_CHECK(lr.dim() == 0, kOp, ": lr must be a 0-d floating-point tensor");
  flat::check_scalar(lr, theta, kOp, "lr");
  const c10::cuda::CUDAGuard guard(theta.device());
  at::Tensor theta_new = at::empty_like(theta);
  at::Tensor v_new = with_velocity ? at::empty_like(theta) : theta.new_empty({0});
  C10_CUDA_CHECK(launch_forward(kernel_dtype(theta.scalar_type(), kOp), theta.const_data_ptr(),
                                grad.const_data_ptr(), has_v ? velocity->const_data_ptr() : nullptr,
                                lr.const_data_ptr(), kernel_dtype(lr.scalar_type(), kOp), momentum,
                                theta.numel(), theta_new.data_ptr(), with_velocity ? v_new.data_ptr() : nullptr,
                                aligned16({&theta, &grad, optional_ptr(velocity), &theta_new, &v_new}),
                                c10::cuda::getCurrentCUDAStream()));
  return {theta_new, v_new};
}

}  // namespace

TORCH_LIBRARY_IMPL(ddfast, CUDA, m) { m.impl("_sgd_step_forward", &forward_cuda); }

}  // namespace sgd_step
}  // namespace ddfast
