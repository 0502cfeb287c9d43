// C++ CPU kernel for sgd_step (semantics: ddfast/ops/sgd_step/reference.py): theta' = theta - lr * g, or
// with momentum v' = mu * v + g, theta' = theta - lr * v', in one pass in the accumulate type.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <tuple>

#include "flat/flat.h"
#include "shared/compile_time.h"
#include "shared/tensors.h"

namespace ddfast {
namespace sgd_step {
namespace {

constexpr const char* kOp = "sgd_step";

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& theta, const at::Tensor& grad, const at::Tensor& lr,
                                               const c10::optional<at::Tensor>& velocity, double momentum,
                                               bool with_velocity) {
  flat::check_vectors(kOp, {{"theta", &theta}, {"grad", &grad}, {"velocity", optional_ptr(velocity)}});
  const bool has_v = velocity.has_value();
  TORCH_CHECK(with_velocity || !has_v, kOp, ": a velocity needs with_velocity");
  at::Tensor theta_new = at::empty_like(theta);
  at::Tensor v_new = with_velocity ? at::empty_like(theta) : theta.new_empty({0});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, theta.scalar_type(), "sgd_step_forward", [&] {
    using Acc = at::opmath_type<scalar_t>;
    const Acc step = flat::scalar_value<Acc>(lr, kOp, "lr");
    const Acc mu = static_cast<Acc>(momentum);
    const scalar_t* __restrict__ th = theta.const_data_ptr<scalar_t>();
    const scalar_t* __restrict__ g = grad.const_data_ptr<scalar_t>();
    const scalar_t* __restrict__ v = has_v ? velocity->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* __restrict__ out = theta_new.data_ptr<scalar_t>();
    scalar_t* __restrict__ vout = with_velocity ? v_new.data_ptr<scalar_t>() : nullptr;
    with_bool(v != nullptr, [&](auto has_v) {
      with_bool(vout != nullptr, [&](auto with_v) {
        flat::for_chunks<0, Acc>(theta.numel(), [&](int64_t b, int64_t e, Acc*) {
          for (int64_t i = b; i < e; ++i) {
            Acc d = static_cast<Acc>(g[i]);
            if constexpr (decltype(has_v)::value) d = mu * static_cast<Acc>(v[i]) + d;
            if constexpr (decltype(with_v)::value) vout[i] = static_cast<scalar_t>(d);
            out[i] = static_cast<scalar_t>(static_cast<Acc>(th[i]) - step * d);
          }
        });
      });
    });
  });
  return {theta_new, v_new};
}

}  // namespace

TORCH_LIBRARY_IMPL(ddfast, CPU, m) { m.impl("_sgd_step_forward", &forward_cpu); }

}  // namespace sgd_step
}  // namespace ddfast
