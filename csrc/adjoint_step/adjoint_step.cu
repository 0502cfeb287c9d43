// CUDA kernels for adjoint_step (semantics: ddfast/ops/adjoint_step/reference.py; the same per-element
// formulas, in the same order, as cpu.cpp); sgd_step's backward runs them. One pass writes u = nu - lr lam,
// nu_next = mu u (momentum form) and one partial sum of lam * direction per block; a one-block finalize adds
// the partials in a fixed order and writes dlr = -sum (deterministic, no atomics). lr is read in-kernel (no
// host synchronisation). Grid and helpers: csrc/flat/flat_cuda.cuh and csrc/shared/cuda.cuh.
#include "adjoint_step/adjoint_step_cuda.h"
#include "flat/flat_cuda.cuh"
#include "shared/compile_time.h"

namespace ddfast {
namespace adjoint_step {
namespace {

using flat::kThreads;

// nu is read (else 0); nu_next is written; the lr-gradient dot with direction is reduced.
enum Form : int { kHasNu = 1, kWithVelocity = 2, kHasDirection = 4 };

template <typename T, int FORM, bool ALIGNED>
__global__ void __launch_bounds__(kThreads) partials_kernel(const T* __restrict__ lam, const T* __restrict__ nu,
                                                            const T* __restrict__ direction,
                                                            const void* __restrict__ lr, DType lr_dtype, acc_t<T> mu,
                                                            int64_t numel, T* __restrict__ u,
                                                            T* __restrict__ nu_next, acc_t<T>* __restrict__ partials,
                                                            acc_t<T>* __restrict__ dlr) {
  using Acc = acc_t<T>;
  __shared__ Acc shared[kThreads / 32];
  const Acc step = load_scalar<Acc>(lr, lr_dtype);
  Acc dot(0);
  // u of one element from the accumulate-type values; adds lam * direction to the thread's sum.
  const auto element = [&](Acc l, Acc n, Acc d) {
    if (FORM & kHasDirection) dot += mul(l, d);
    return (FORM & kHasNu) ? n - mul(step, l) : -mul(step, l);
  };
  flat::for_block_elements<T, ALIGNED>(
      numel,
      [&](int64_t i) {
        const Acc ui = element(load_acc(lam + i), (FORM & kHasNu) ? load_acc(nu + i) : Acc(0),
                               (FORM & kHasDirection) ? load_acc(direction + i) : Acc(0));
        u[i] = from_acc<T>(ui);
        if (FORM & kWithVelocity) nu_next[i] = from_acc<T>(mul(mu, ui));
      },
      [&](int64_t i) {
        const Vec16<T> vl = Vec16<T>::load(lam + i);
        Vec16<T> vn, vd, out, nout;
        if (FORM & kHasNu) vn = Vec16<T>::load(nu + i);
        if (FORM & kHasDirection) vd = Vec16<T>::load(direction + i);
#pragma unroll
        for (int j = 0; j < Vec16<T>::kWidth; ++j) {
          const Acc ui = element(to_acc(vl.v[j]), (FORM & kHasNu) ? to_acc(vn.v[j]) : Acc(0),
                                 (FORM & kHasDirection) ? to_acc(vd.v[j]) : Acc(0));
          out.v[j] = from_acc<T>(ui);
          nout.v[j] = from_acc<T>(mul(mu, ui));
        }
        out.store(u + i);
        if (FORM & kWithVelocity) nout.store(nu_next + i);
      });
  if (FORM & kHasDirection) {
    dot = flat::block_sum(dot, shared);
    if (threadIdx.x == 0) partials[blockIdx.x] = dot;
  } else if (blockIdx.x == 0 && threadIdx.x == 0) {
    *dlr = Acc(0);  // no direction: dlr is 0 and not computed
  }
}

template <typename Acc>
__global__ void __launch_bounds__(kThreads) finalize_kernel(const Acc* __restrict__ partials, int64_t num_blocks,
                                                            Acc* __restrict__ dlr) {
  Acc total[1];
  flat::sum_partials<1>(partials, num_blocks, total);
  if (threadIdx.x == 0) *dlr = -total[0];
}

}  // namespace

cudaError_t launch(DType dtype, const void* lam, const void* nu, const void* direction, const void* lr, DType lr_dtype,
                   double momentum, int64_t numel, void* u, void* nu_next, void* partials, void* dlr, bool aligned,
                   cudaStream_t stream) {
  const int form = (nu ? kHasNu : 0) | (nu_next ? kWithVelocity : 0) | (direction ? kHasDirection : 0);
  const int64_t blocks = flat::num_blocks(numel);
  return with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using Acc = acc_t<T>;
    if (blocks == 0 && !direction) return cudaMemsetAsync(dlr, 0, sizeof(Acc), stream);
    return with_bool(aligned, [&](auto aligned_c) {
      if (blocks > 0) {
        const cudaError_t err = with_int<8>(form, [&](auto form_c) {
          partials_kernel<T, decltype(form_c)::value, decltype(aligned_c)::value><<<blocks, kThreads, 0, stream>>>(
              static_cast<const T*>(lam), static_cast<const T*>(nu), static_cast<const T*>(direction), lr, lr_dtype,
              static_cast<Acc>(momentum), numel, static_cast<T*>(u), static_cast<T*>(nu_next),
              static_cast<Acc*>(partials), static_cast<Acc*>(dlr));
          return cudaGetLastError();
        });
        if (err != cudaSuccess || !direction) return err;
      }
      finalize_kernel<Acc><<<1, kThreads, 0, stream>>>(static_cast<const Acc*>(partials), blocks,
                                                        static_cast<Acc*>(dlr));
      return cudaGetLastError();
    });
  });
}

}  // namespace adjoint_step
}  // namespace ddfast
