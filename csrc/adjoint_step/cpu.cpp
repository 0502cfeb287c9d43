// C++ CPU kernel for adjoint_step (semantics: ddfast/ops/adjoint_step/reference.py): in one pass,
// u = nu - lr * lam, nu_next = mu * u and dlr = -<lam, direction>, the dot product over fixed chunks
// added in chunk order (csrc/flat/flat.h): deterministic for any thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <tuple>

#include "flat/flat.h"

namespace ddfast {
namespace adjoint_step {
namespace {

constexpr const char* kOp = "adjoint_step";

std::tuple<at::Tensor, at::Tensor, at::Tensor> adjoint_cpu(const at::Tensor& lam, const c10::optional<at::Tensor>& nu,
                                                           const c10::optional<at::Tensor>& direction,
                                                           const at::Tensor& lr, double momentum, bool with_velocity) {
  flat::check_vector(lam, lam, kOp, "lam");
  if (nu.has_value()) flat::check_vector(*nu, lam, kOp, "nu");
  if (direction.has_value()) flat::check_vector(*direction, lam, kOp, "direction");
  const auto acc_type = flat::accumulate_type(lam.scalar_type());
  at::Tensor u = at::empty_like(lam);
  at::Tensor nu_next = with_velocity ? at::empty_like(lam) : lam.new_empty({0});
  at::Tensor dlr = at::empty({}, lam.options().dtype(acc_type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, lam.scalar_type(), "adjoint_step", [&] {
    using Acc = at::opmath_type<scalar_t>;
    const Acc step = flat::scalar_value<Acc>(lr, kOp, "lr");
    const Acc mu = static_cast<Acc>(momentum);
    const scalar_t* __restrict__ l = lam.const_data_ptr<scalar_t>();
    const scalar_t* __restrict__ n = nu.has_value() ? nu->const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* __restrict__ d = direction.has_value() ? direction->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* __restrict__ out = u.data_ptr<scalar_t>();
    scalar_t* __restrict__ nout = with_velocity ? nu_next.data_ptr<scalar_t>() : nullptr;
    const auto total = flat::for_chunks<1, Acc>(lam.numel(), [&](int64_t b, int64_t e, Acc* partial) {
      for (int64_t i = b; i < e; ++i) {
        const Acc ui = (n ? static_cast<Acc>(n[i]) : Acc(0)) - step * static_cast<Acc>(l[i]);
        out[i] = static_cast<scalar_t>(ui);
        if (nout) nout[i] = static_cast<scalar_t>(mu * ui);
      }
      if (d) {
        flat::lane_sums<1, Acc>(b, e, partial, [&](int64_t i, Acc* v) {
          v[0] = static_cast<Acc>(l[i]) * static_cast<Acc>(d[i]);
        });
      }
    });
    dlr.data_ptr<Acc>()[0] = -total[0];
  });
  return {u, dlr, nu_next};
}

}  // namespace

TORCH_LIBRARY_IMPL(ddfast, CPU, m) { m.impl("_adjoint_step", &adjoint_cpu); }

}  // namespace adjoint_step
}  // namespace ddfast
