// CUDA kernels for param_match_loss (semantics: ddfast/ops/param_match_loss/reference.py; the same
// per-element formulas, in the same order, as cpu.cpp). Forward: one pass over the three vectors writes
// two partial sums per block, a one-block finalize adds them in a fixed order and writes [A, B] and
// A / B (no epsilon). Backward: one pass writes the needed gradients; its coefficients come from the
// saved sums in-kernel (no host synchronisation). Grid and helpers: csrc/flat/flat_cuda.cuh and csrc/shared/cuda.cuh.
#include "flat/flat_cuda.cuh"
#include "param_match_loss/param_match_loss_cuda.h"
#include "shared/compile_time.h"

namespace ddfast {
namespace param_match_loss {
namespace {

using flat::kThreads;

enum Need : int { kN = 1, kS = 2, kT = 4 };  // which gradients the backward writes

template <typename T, bool ALIGNED>
__global__ void __launch_bounds__(kThreads) partials_kernel(const T* __restrict__ n, const T* __restrict__ s,
                                                            const T* __restrict__ t, int64_t numel,
                                                            acc_t<T>* __restrict__ partials) {
  using Acc = acc_t<T>;
  __shared__ Acc shared[kThreads / 32];
  Acc a(0), b(0);
  const auto term = [&](Acc ni, Acc si, Acc ti) {
    const Acc dn = ni - ti, ds = si - ti;
    a += mul(dn, dn);
    b += mul(ds, ds);
  };
  flat::for_block_elements<T, ALIGNED>(
      numel, [&](int64_t i) { term(load_acc(n + i), load_acc(s + i), load_acc(t + i)); },
      [&](int64_t i) {
        const Vec16<T> vn = Vec16<T>::load(n + i), vs = Vec16<T>::load(s + i), vt = Vec16<T>::load(t + i);
#pragma unroll
        for (int j = 0; j < Vec16<T>::kWidth; ++j) term(to_acc(vn.v[j]), to_acc(vs.v[j]), to_acc(vt.v[j]));
      });
  a = flat::block_sum(a, shared);
  b = flat::block_sum(b, shared);
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = a;
    partials[gridDim.x + blockIdx.x] = b;
  }
}

template <typename Acc>
__global__ void __launch_bounds__(kThreads) finalize_kernel(const Acc* __restrict__ partials, int64_t num_blocks,
                                                            Acc* __restrict__ sums, Acc* __restrict__ loss) {
  Acc total[2];
  flat::sum_partials<2>(partials, num_blocks, total);
  if (threadIdx.x == 0) {
    sums[0] = total[0];
    sums[1] = total[1];
    *loss = total[0] / total[1];  // IEEE division; B = 0 gives inf/NaN like the formula
  }
}

template <typename T, int NEED, bool ALIGNED>
__global__ void __launch_bounds__(kThreads) backward_kernel(const T* __restrict__ n, const T* __restrict__ s,
                                                            const T* __restrict__ t, int64_t numel,
                                                            const acc_t<T>* __restrict__ sums,
                                                            const void* __restrict__ grad_out, DType grad_out_dtype,
                                                            T* __restrict__ d_n, T* __restrict__ d_s,
                                                            T* __restrict__ d_t) {
  using Acc = acc_t<T>;
  constexpr bool kNeedDn = NEED & (kN | kT), kNeedDs = NEED & (kS | kT);
  const Acc g = load_scalar<Acc>(grad_out, grad_out_dtype);
  const Acc num = sums[0], den = sums[1];
  const Acc c_n = Acc(2) * g / den, c_s = -Acc(2) * g * (num / den) / den;
  // The gradients of element(s) from the accumulate-type values; d_target = -(d_n + d_start) before rounding.
  const auto grads = [&](Acc ni, Acc si, Acc ti, Acc& gn, Acc& gs, Acc& gt) {
    gn = kNeedDn ? mul(c_n, ni - ti) : Acc(0);
    gs = kNeedDs ? mul(c_s, si - ti) : Acc(0);
    gt = -(gn + gs);
  };
  flat::for_block_elements<T, ALIGNED>(
      numel,
      [&](int64_t i) {
        const Acc ti = load_acc(t + i);
        Acc gn, gs, gt;
        grads(kNeedDn ? load_acc(n + i) : Acc(0), kNeedDs ? load_acc(s + i) : Acc(0), ti, gn, gs, gt);
        if (NEED & kN) d_n[i] = from_acc<T>(gn);
        if (NEED & kS) d_s[i] = from_acc<T>(gs);
        if (NEED & kT) d_t[i] = from_acc<T>(gt);
      },
      [&](int64_t i) {
        const Vec16<T> vt = Vec16<T>::load(t + i);
        Vec16<T> vn, vs, on, os, ot;
        if (kNeedDn) vn = Vec16<T>::load(n + i);
        if (kNeedDs) vs = Vec16<T>::load(s + i);
#pragma unroll
        for (int j = 0; j < Vec16<T>::kWidth; ++j) {
          Acc gn, gs, gt;
          grads(kNeedDn ? to_acc(vn.v[j]) : Acc(0), kNeedDs ? to_acc(vs.v[j]) : Acc(0), to_acc(vt.v[j]), gn, gs, gt);
          on.v[j] = from_acc<T>(gn);
          os.v[j] = from_acc<T>(gs);
          ot.v[j] = from_acc<T>(gt);
        }
        if (NEED & kN) on.store(d_n + i);
        if (NEED & kS) os.store(d_s + i);
        if (NEED & kT) ot.store(d_t + i);
      });
}

}  // namespace

cudaError_t launch_forward(DType dtype, const void* theta_n, const void* theta_start, const void* theta_target,
                           int64_t numel, void* partials, void* sums, void* loss, bool aligned, cudaStream_t stream) {
  const int64_t blocks = flat::num_blocks(numel);
  return with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using Acc = acc_t<T>;
    return with_bool(aligned, [&](auto aligned_c) {
      if (blocks > 0) {
        partials_kernel<T, decltype(aligned_c)::value><<<blocks, kThreads, 0, stream>>>(
            static_cast<const T*>(theta_n), static_cast<const T*>(theta_start), static_cast<const T*>(theta_target),
            numel, static_cast<Acc*>(partials));
        if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
      }
      finalize_kernel<Acc><<<1, kThreads, 0, stream>>>(static_cast<const Acc*>(partials), blocks,
                                                        static_cast<Acc*>(sums), static_cast<Acc*>(loss));
      return cudaGetLastError();
    });
  });
}

cudaError_t launch_backward(DType dtype, const void* theta_n, const void* theta_start, const void* theta_target,
                            int64_t numel, const void* sums, const void* grad_out, DType grad_out_dtype, void* d_n,
                            void* d_start, void* d_target, bool aligned, cudaStream_t stream) {
  const int need = (d_n ? kN : 0) | (d_start ? kS : 0) | (d_target ? kT : 0);
  const int64_t blocks = flat::num_blocks(numel);
  if (need == 0 || blocks == 0) return cudaSuccess;
  return with_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    return with_bool(aligned, [&](auto aligned_c) {
      return with_int<8>(need, [&](auto need_c) {
        backward_kernel<T, decltype(need_c)::value, decltype(aligned_c)::value><<<blocks, kThreads, 0, stream>>>(
            static_cast<const T*>(theta_n), static_cast<const T*>(theta_start), static_cast<const T*>(theta_target),
            numel, static_cast<const acc_t<T>*>(sums), grad_out, grad_out_dtype, static_cast<T*>(d_n),
            static_cast<T*>(d_start), static_cast<T*>(d_target));
        return cudaGetLastError();
      });
    });
  });
}

}  // namespace param_match_loss
}  // namespace ddfast
