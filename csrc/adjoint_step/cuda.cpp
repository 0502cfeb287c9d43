// Torch glue for the adjoint_step CUDA kernels: tensor checks, outputs, the stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "adjoint_step/adjoint_step_cuda.h"
#include "flat/flat.h"
#include "shared/tensors.h"

namespace ddfast {
namespace adjoint_step {
namespace {

constexpr const char* kOp = "adjoint_step";

std::tuple<at::Tensor, at::Tensor, at::Tensor> adjoint_cuda(const at::Tensor& lam,
                                                            const c10::optional<at::Tensor>& nu,
                                                            const c10::optional<at::Tensor>& direction,
                                                            const at::Tensor& lr, double momentum,
                                                            bool with_velocity) {
  flat::check_vectors(kOp,
                      {{"lam", &lam}, {"nu", optional_ptr(nu)}, {"direction", optional_ptr(direction)}},
                      at::kCUDA);
  TORCH_CHECK(lr.dim() == 0, kOp, ": lr must be a 0-d floating-point tensor");
  flat::check_scalar(lr, lam, kOp, "lr");
  const c10::cuda::CUDAGuard guard(lam.device());
  const auto acc = lam.options().dtype(accumulate_type(lam.scalar_type()));
  at::Tensor u = at::empty_like(lam);
  at::Tensor nu_next = with_velocity ? at::empty_like(lam) : lam.new_empty({0});
  at::Tensor dlr = at::empty({}, acc);
  at::Tensor partials = at::empty({direction.has_value() ? flat::num_blocks(lam.numel()) : 0}, acc);
  C10_CUDA_CHECK(launch(kernel_dtype(lam.scalar_type(), kOp), lam.const_data_ptr(),
                        nu.has_value() ? nu->const_data_ptr() : nullptr,
                        direction.has_value() ? direction->const_data_ptr() : nullptr, lr.const_data_ptr(),
                        kernel_dtype(lr.scalar_type(), kOp), momentum, lam.numel(), u.data_ptr(),
                        with_velocity ? nu_next.data_ptr() : nullptr, partials.data_ptr(), dlr.data_ptr(),
                        aligned16({&lam, optional_ptr(nu), optional_ptr(direction), &u, &nu_next}),
                        c10::cuda::getCurrentCUDAStream()));
  return {u, dlr, nu_next};
}

}  // namespace

TORCH_LIBRARY_IMPL(ddfast, CUDA, m) { m.impl("_adjoint_step", &adjoint_cuda); }

}  // namespace adjoint_step
}  // namespace ddfast
