// Torch glue for the param_match_loss CUDA kernels: tensor checks, outputs, the stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "flat/flat.h"
#include "param_match_loss/param_match_loss_cuda.h"
#include "shared/registration.h"
#include "shared/tensors.h"

namespace ddfast {
namespace param_match_loss {
namespace {

constexpr const char* kOp = "param_match_loss";

void check_inputs(const at::Tensor& n, const at::Tensor& s, const at::Tensor& t) {
  flat::check_vectors(kOp, {{"theta_n", &n}, {"theta_start", &s}, {"theta_target", &t}}, at::kCUDA);
}

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& theta_n, const at::Tensor& theta_start,
                                                const at::Tensor& theta_target) {
  check_inputs(theta_n, theta_start, theta_target);
  const c10::cuda::CUDAGuard guard(theta_n.device());
  const auto acc = theta_n.options().dtype(accumulate_type(theta_n.scalar_type()));
  at::Tensor partials = at::empty({2 * flat::num_blocks(theta_n.numel())}, acc);
  at::Tensor sums = at::empty({2}, acc);
  at::Tensor loss = at::empty({}, acc);
  C10_CUDA_CHECK(launch_forward(kernel_dtype(theta_n.scalar_type(), kOp), theta_n.const_data_ptr(),
                                theta_start.const_data_ptr(), theta_target.const_data_ptr(), theta_n.numel(),
                                partials.data_ptr(), sums.data_ptr(), loss.data_ptr(),
                                aligned16({&theta_n, &theta_start, &theta_target}),
                                c10::cuda::getCurrentCUDAStream()));
  return {loss, sums};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(const at::Tensor& grad_out, const at::Tensor& theta_n,
                                                             const at::Tensor& theta_start,
                                                             const at::Tensor& theta_target, const at::Tensor& sums,
                                                             bool need_n, bool need_start, bool need_target) {
  check_inputs(theta_n, theta_start, theta_target);
  TORCH_CHECK(sums.scalar_type() == accumulate_type(theta_n.scalar_type()) && sums.numel() == 2 &&
                  sums.is_contiguous() && sums.device() == theta_n.device(),
              kOp, ": sums must be the forward's two sums in the accumulate dtype");
  flat::check_scalar(grad_out, theta_n, kOp, "grad_out");
  const c10::cuda::CUDAGuard guard(theta_n.device());
  auto make = [&](bool need) { return need ? at::empty_like(theta_n) : theta_n.new_empty({0}); };
  at::Tensor d_n = make(need_n), d_s = make(need_start), d_t = make(need_target);
  const auto out = [](bool need, at::Tensor& t) { return need ? t.data_ptr() : nullptr; };
  C10_CUDA_CHECK(launch_backward(
      kernel_dtype(theta_n.scalar_type(), kOp), theta_n.const_data_ptr(), theta_start.const_data_ptr(),
      theta_target.const_data_ptr(), theta_n.numel(), sums.const_data_ptr(), grad_out.const_data_ptr(),
      kernel_dtype(grad_out.scalar_type(), kOp), out(need_n, d_n), out(need_start, d_s), out(need_target, d_t),
      aligned16({&theta_n, &theta_start, &theta_target, &d_n, &d_s, &d_t}), c10::cuda::getCurrentCUDAStream()));
  return {d_n, d_s, d_t};
}

}  // namespace

DDFAST_IMPL_FORWARD_BACKWARD(CUDA, param_match_loss, forward_cuda, backward_cuda)

}  // namespace param_match_loss
}  // namespace ddfast
