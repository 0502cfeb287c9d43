// C++ CPU kernels for param_match_loss (semantics: ddfast/ops/param_match_loss/reference.py). Forward:
// both sums in one pass over the three vectors; backward: the three gradients in one pass. Fixed
// chunks and a chunk-order reduction (csrc/flat/flat.h): deterministic for any thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <tuple>

#include "flat/flat.h"
#include "shared/compile_time.h"
#include "shared/registration.h"
#include "shared/tensors.h"

namespace ddfast {
namespace param_match_loss {
namespace {

constexpr const char* kOp = "param_match_loss";

void check_inputs(const at::Tensor& n, const at::Tensor& s, const at::Tensor& t) {
  flat::check_vectors(kOp, {{"theta_n", &n}, {"theta_start", &s}, {"theta_target", &t}});
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& theta_n, const at::Tensor& theta_start,
                                               const at::Tensor& theta_target) {
  check_inputs(theta_n, theta_start, theta_target);
  const auto acc_type = accumulate_type(theta_n.scalar_type());
  at::Tensor sums = at::empty({2}, theta_n.options().dtype(acc_type));
  at::Tensor loss = at::empty({}, theta_n.options().dtype(acc_type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, theta_n.scalar_type(), "param_match_loss_forward", [&] {
    using Acc = at::opmath_type<scalar_t>;
    const scalar_t* __restrict__ n = theta_n.const_data_ptr<scalar_t>();
    const scalar_t* __restrict__ s = theta_start.const_data_ptr<scalar_t>();
    const scalar_t* __restrict__ t = theta_target.const_data_ptr<scalar_t>();
    const auto total = flat::for_chunks<2, Acc>(theta_n.numel(), [&](int64_t b, int64_t e, Acc* out) {
      flat::lane_sums<2, scalar_t, Acc>(b, e, out, [&](const auto& at, auto* v) {
        const auto target = at(t);
        const auto dn = at(n) - target;
        const auto ds = at(s) - target;
        v[0] = dn * dn;
        v[1] = ds * ds;
      });
    });
    sums.data_ptr<Acc>()[0] = total[0];
    sums.data_ptr<Acc>()[1] = total[1];
    loss.data_ptr<Acc>()[0] = total[0] / total[1];  // no epsilon: B = 0 gives inf/NaN like the formula
  });
  return {loss, sums};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad_out, const at::Tensor& theta_n,
                                                            const at::Tensor& theta_start,
                                                            const at::Tensor& theta_target, const at::Tensor& sums,
                                                            bool need_n, bool need_start, bool need_target) {
  check_inputs(theta_n, theta_start, theta_target);
  const auto acc_type = accumulate_type(theta_n.scalar_type());
  TORCH_CHECK(sums.scalar_type() == acc_type && sums.numel() == 2 && sums.is_contiguous(), kOp,
              ": sums must be the forward's two sums in the accumulate dtype");
  TORCH_CHECK(grad_out.numel() == 1, kOp, ": grad_out must hold one value");
  auto make = [&](bool need) { return need ? at::empty_like(theta_n) : theta_n.new_empty({0}); };
  at::Tensor d_n = make(need_n), d_s = make(need_start), d_t = make(need_target);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, theta_n.scalar_type(), "param_match_loss_backward", [&] {
    using Acc = at::opmath_type<scalar_t>;
    const Acc g = static_cast<Acc>(grad_out.to(acc_type).item<double>());
    const Acc num = sums.const_data_ptr<Acc>()[0], den = sums.const_data_ptr<Acc>()[1];
    const Acc c_n = Acc(2) * g / den, c_s = -Acc(2) * g * (num / den) / den;
    const scalar_t* __restrict__ n = theta_n.const_data_ptr<scalar_t>();
    const scalar_t* __restrict__ s = theta_start.const_data_ptr<scalar_t>();
    const scalar_t* __restrict__ t = theta_target.const_data_ptr<scalar_t>();
    scalar_t* __restrict__ on = need_n ? d_n.data_ptr<scalar_t>() : nullptr;
    scalar_t* __restrict__ os = need_start ? d_s.data_ptr<scalar_t>() : nullptr;
    scalar_t* __restrict__ ot = need_target ? d_t.data_ptr<scalar_t>() : nullptr;
    with_bool(on != nullptr, [&](auto need_n) {
      with_bool(os != nullptr, [&](auto need_s) {
        with_bool(ot != nullptr, [&](auto need_t) {
          flat::for_chunks<0, Acc>(theta_n.numel(), [&](int64_t b, int64_t e, Acc*) {
            for (int64_t i = b; i < e; ++i) {
              const Acc target = static_cast<Acc>(t[i]);
              const Acc gn = c_n * (static_cast<Acc>(n[i]) - target);
              const Acc gs = c_s * (static_cast<Acc>(s[i]) - target);
              if constexpr (decltype(need_n)::value) on[i] = static_cast<scalar_t>(gn);
              if constexpr (decltype(need_s)::value) os[i] = static_cast<scalar_t>(gs);
              if constexpr (decltype(need_t)::value) ot[i] = static_cast<scalar_t>(-(gn + gs));
            }
          });
        });
      });
    });
  });
  return {d_n, d_s, d_t};
}

}  // namespace

DDFAST_IMPL_FORWARD_BACKWARD(CPU, param_match_loss, forward_cpu, backward_cpu)

}  // namespace param_match_loss
}  // namespace ddfast
