// C++ CPU kernel for adjoint_step (semantics: ddfast/ops/adjoint_step/reference.py): in one pass,
// u = nu - lr * lam, nu_next = mu * u and dlr = -<lam, direction> in one loop, the dot product over fixed chunks
// added in chunk order (csrc/flat/flat.h): deterministic for any thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "flat/flat.h"
#include "shared/compile_time.h"
#include "shared/tensors.h"

namespace ddfast {
namespace adjoint_step {
namespace {

constexpr const char* kOp = "adjoint_step";

std::tuple<at::Tensor, at::Tensor, at::Tensor> adjoint_cpu(const at::Tensor& lam, const c10::optional<at::Tensor>& nu,
                                                           const c10::optional<at::Tensor>& direction,
                                                           const at::Tensor& lr, double momentum, bool with_velocity) {
  flat::check_vectors(kOp,
                      {{"lam", &lam}, {"nu", optional_ptr(nu)}, {"direction", optional_ptr(direction)}});
  const auto acc_type = accumulate_type(lam.scalar_type());
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
    std::array<Acc, 1> total{};
    with_bool(n != nullptr, [&](auto has_nu) {
      with_bool(nout != nullptr, [&](auto with_v) {
        with_bool(d != nullptr, [&](auto has_dir) {
          total = flat::for_chunks<1, Acc>(lam.numel(), [&](int64_t b, int64_t e, Acc* partial) {
            flat::lane_sums<1, scalar_t, Acc>(b, e, partial, [&](const auto& at, auto* v) {
              const auto li = at(l);
              auto ui = -(step * li);
              if constexpr (decltype(has_nu)::value) ui = at(n) - step * li;
              at.store(out, ui);
              if constexpr (decltype(with_v)::value) at.store(nout, mu * ui);
              if constexpr (decltype(has_dir)::value) {
                v[0] = li * at(d);
              } else {
                v[0] = decltype(li){};
              }
            });
          });
        });
      });
    });
    dlr.data_ptr<Acc>()[0] = -total[0];
  });
  return {u, dlr, nu_next};
}

}  // namespace

TORCH_LIBRARY_IMPL(ddfast, CPU, m) { m.impl("_adjoint_step", &adjoint_cpu); }

}  // namespace adjoint_step
}  // namespace ddfast
