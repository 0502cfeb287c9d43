// CUDA kernel for sgd_step (semantics: ddfast/ops/sgd_step/reference.py; the same per-element formula, in
// the same order, as cpu.cpp): one elementwise pass writes theta' and, in momentum form, v'. Arithmetic in
// the accumulate type; theta' uses v' before it is rounded. lr is read in-kernel (no host
// synchronisation). Grid and helpers: csrc/flat/flat_cuda.cuh and csrc/shared/cuda.cuh.
#include "flat/flat_cuda.cuh"
#include "sgd_step/sgd_step_cuda.h"
#include "shared/compile_time.h"

namespace ddfast {
namespace sgd_step {
namespace {

using flat::kThreads;

enum Form : int { kWithVelocity = 1, kHasVelocity = 2 };  // v' is written; v is read (else v = 0)

template <typename T, int FORM, bool ALIGNED>
__global__ void __launch_bounds__(kThreads) forward_kernel(const T* __restrict__ theta, const T* __restrict__ grad,
                                                           const T* __restrict__ velocity, const void* __restrict__ lr,
                                                           DType lr_dtype, acc_t<T> mu, int64_t numel,
                                                           T* __restrict__ theta_new, T* __restrict__ v_new) {
  using Acc = acc_t<T>;
  const Acc step = load_scalar<Acc>(lr, lr_dtype);
  // (theta', v') of one element from the accumulate-type values.
  const auto update = [&](Acc th, Acc g, Acc v, Acc& d) {
    d = g;
    if (FORM & kHasVelocity) d = mul(mu, v) + d;
    return th - mul(step, d);
  };
  flat::for_block_elements<T, ALIGNED>(
      numel,
      [&](int64_t i) {
        Acc d;
        const Acc out = update(load_acc(theta + i), load_acc(grad + i),
                               (FORM & kHasVelocity) ? load_acc(velocity + i) : Acc(0), d);
        if (FORM & kWithVelocity) v_new[i] = from_acc<T>(d);
        theta_new[i] = from_acc<T>(out);
      },
      [&](int64_t i) {
        const Vec16<T> vth = Vec16<T>::load(theta + i), vg = Vec16<T>::load(grad + i);
        Vec16<T> vv, out, vout;
        if (FORM & kHasVelocity) vv = Vec16<T>::load(velocity + i);
#pragma unroll
        for (int j = 0; j < Vec16<T>::kWidth; ++j) {
          Acc d;
          out.v[j] = from_acc<T>(
              update(to_acc(vth.v[j]), to_acc(vg.v[j]), (FORM & kHasVelocity) ? to_acc(vv.v[j]) : Acc(0), d));
          vout.v[j] = from_acc<T>(d);
        }
        if (FORM & kWithVelocity) vout.store(v_new + i);
        out.store(theta_new + i);
      });
}

}  // namespace

cudaError_t launch_forward(DType dtype, const void* theta, const void* grad, const void* velocity, const void* lr,
                           DType lr_dtype, double momentum, int64_t numel, void* theta_new, void* v_new, bool aligned,
                           cudaStream_t stream) {
  if (velocity && !v_new) return cudaErrorInvalidValue;  // a velocity needs the momentum form
  const int form = (v_new ? kWithVelocity : 0) | (velocity ? kHasVelocity : 0);
  const int64_t blocks = flat::num_blocks(numel);
  if (blocks == 0) return cudaSuccess;
  return with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    return with_bool(aligned, [&](auto aligned_c) {
      return with_int<4>(form, [&](auto form_c) {
        forward_kernel<T, decltype(form_c)::value, decltype(aligned_c)::value><<<blocks, kThreads, 0, stream>>>(
            static_cast<const T*>(theta), static_cast<const T*>(grad), static_cast<const T*>(velocity), lr, lr_dtype,
            static_cast<acc_t<T>>(momentum), numel, static_cast<T*>(theta_new), static_cast<T*>(v_new));
        return cudaGetLastError();
      });
    });
  });
}

}  // namespace sgd_step
}  // namespace ddfast
