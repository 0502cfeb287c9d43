// CUDA kernels for grad_distance (semantics: docs/semantics.md#grad_distance; work items: plan.py). One block per
// work item; the block reads its range through a pointer table (apex multi_tensor_apply style), so
// all tensors and classes are one launch. Ranges are split into an unaligned head, a body of
// 16-byte vector loads and a tail. Block reductions use a fixed tree: results are deterministic.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "grad_distance/grad_distance_cuda.h"
#include "grad_distance/math.h"

namespace ddfast {
namespace grad_distance {
namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ acc_t<T> to_acc(T x) { return static_cast<acc_t<T>>(x); }
template <>
__device__ __forceinline__ float to_acc<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_acc<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> x) { return static_cast<T>(x); }
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// 16 bytes of T, moved as one uint4 so that every element type gets a single 16-byte access.
template <typename T>
struct Vec16 {
  static constexpr int kWidth = 16 / sizeof(T);
  union {
    uint4 raw;
    T v[kWidth];
  };
  __device__ __forceinline__ Vec16() {}
  __device__ __forceinline__ static Vec16 load(const T* p) {
    Vec16 x;
    x.raw = __ldg(reinterpret_cast<const uint4*>(p));
    return x;
  }
  __device__ __forceinline__ void store(T* p) const { *reinterpret_cast<uint4*>(p) = raw; }
};

// Inputs are read-only for the whole kernel: load through the non-coherent path as global memory
// (the pointers come from a table, so the compiler cannot infer their address space).
template <typename T>
__device__ __forceinline__ acc_t<T> load_acc(const T* p) { return to_acc(__ldg(p)); }

// Sum of `value` over the block; valid in thread 0. Fixed order, so deterministic.
template <typename Acc>
__device__ Acc block_sum(Acc value, Acc* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  value = threadIdx.x < kThreads / 32 ? shared[threadIdx.x] : Acc(0);
  if (warp == 0) {
    for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  return value;
}

// Calls visit(i) for every element index of [start, end), with 16-byte vector loads in the body
// when ALIGNED. visit_vec(i) handles the kWidth elements from i.
template <typename T, bool ALIGNED, typename Scalar, typename Vector>
__device__ __forceinline__ void for_each_element(int64_t start, int64_t end, Scalar&& visit, Vector&& visit_vec) {
  if (!ALIGNED) {
    for (int64_t i = start + threadIdx.x; i < end; i += kThreads) visit(i);
    return;
  }
  constexpr int W = Vec16<T>::kWidth;
  const int64_t rounded_up = (start + W - 1) / W * W, rounded_down = end / W * W;
  const int64_t body_lo = rounded_up < end ? rounded_up : end;
  const int64_t body_hi = rounded_down > body_lo ? rounded_down : body_lo;
  for (int64_t i = start + threadIdx.x; i < body_lo; i += kThreads) visit(i);
  for (int64_t i = body_lo + int64_t(threadIdx.x) * W; i < body_hi; i += int64_t(kThreads) * W) visit_vec(i);
  for (int64_t i = body_hi + threadIdx.x; i < end; i += kThreads) visit(i);
}

template <typename T, int METRIC, bool ALIGNED>
__global__ void __launch_bounds__(kThreads) partials_kernel(const int64_t* __restrict__ pointer_table, int64_t num_tensors,
                                                            const int64_t* __restrict__ items,
                                                            const double* __restrict__ item_weight,
                                                            acc_t<T>* __restrict__ partials) {
  using Acc = acc_t<T>;
  __shared__ Acc shared[kThreads / 32];
  const int64_t* f = items + int64_t(blockIdx.x) * kItemFields;
  const int64_t tensor = f[0], start = f[2], slot = f[4];
  if (slot < 0) return;
  const int64_t length = item_weight[blockIdx.x] != 0.0 ? f[3] : 0;
  const T* gs = reinterpret_cast<const T*>(pointer_table[tensor]);
  const T* gr = reinterpret_cast<const T*>(pointer_table[num_tensors + tensor]);
  Acc p0(0), p1(0), p2(0);
  for_each_element<T, ALIGNED>(
      start, start + length,
      [&](int64_t i) { forward_terms<METRIC, Acc>(load_acc(gs + i), load_acc(gr + i), p0, p1, p2); },
      [&](int64_t i) {
        const Vec16<T> vs = Vec16<T>::load(gs + i);
        const Vec16<T> vr = Vec16<T>::load(gr + i);
#pragma unroll
        for (int j = 0; j < Vec16<T>::kWidth; ++j) forward_terms<METRIC, Acc>(to_acc(vs.v[j]), to_acc(vr.v[j]), p0, p1, p2);
      });
  p0 = block_sum(p0, shared);
  if (METRIC == kOurs || METRIC == kCos) {
    p1 = block_sum(p1, shared);
    p2 = block_sum(p2, shared);
  }
  if (threadIdx.x == 0) {
    partials[slot * 3] = p0;
    partials[slot * 3 + 1] = p1;
    partials[slot * 3 + 2] = p2;
  }
}

template <typename T, int METRIC>
__global__ void __launch_bounds__(kThreads) finalize_kernel(const acc_t<T>* __restrict__ partials,
                                                            const int64_t* __restrict__ part_ptr,
                                                            const double* __restrict__ part_weight,
                                                            acc_t<T>* __restrict__ stats, acc_t<T>* __restrict__ out) {
  using Acc = acc_t<T>;
  __shared__ Acc shared[kThreads / 32];
  const int64_t klass = blockIdx.x;
  Acc total(0), sq_r(0), sq_s(0);
  for (int64_t p = part_ptr[klass] + threadIdx.x; p < part_ptr[klass + 1]; p += kThreads) {
    const Acc weight = static_cast<Acc>(part_weight[p]);
    if (METRIC == kCos) {
      if (weight == Acc(0)) continue;
      total += partials[p * 3];
      sq_r += partials[p * 3 + 1];
      sq_s += partials[p * 3 + 2];
    } else {
      total += part_contribution<Acc>(METRIC, weight, partials[p * 3], partials[p * 3 + 1], partials[p * 3 + 2]);
    }
  }
  total = block_sum(total, shared);
  if (METRIC == kCos) {
    sq_r = block_sum(sq_r, shared);
    sq_s = block_sum(sq_s, shared);
  }
  if (threadIdx.x == 0) {
    if (METRIC == kCos) {
      stats[klass * 3] = total;
      stats[klass * 3 + 1] = sq_r;
      stats[klass * 3 + 2] = sq_s;
      total = cosine_distance(total, sq_r, sq_s);
    }
    out[klass] = total;
  }
}

template <typename T, int METRIC, bool ALIGNED>
__global__ void __launch_bounds__(kThreads) backward_kernel(const int64_t* __restrict__ pointer_table, int64_t num_tensors,
                                                            const int64_t* __restrict__ items,
                                                            const double* __restrict__ item_weight,
                                                            const acc_t<T>* __restrict__ stats,
                                                            const acc_t<T>* __restrict__ grad_out, bool need_syn,
                                                            bool need_real) {
  using Acc = acc_t<T>;
  const int64_t* f = items + int64_t(blockIdx.x) * kItemFields;
  const int64_t tensor = f[0], klass = f[1], start = f[2], length = f[3], slot = f[4];
  const double weight = item_weight[blockIdx.x];
  // pointer_table: g_syn, g_real, then the outputs dL/dg_syn, dL/dg_real (num_tensors each).
  T* ds = need_syn ? reinterpret_cast<T*>(pointer_table[2 * num_tensors + tensor]) : nullptr;
  T* dr = need_real ? reinterpret_cast<T*>(pointer_table[3 * num_tensors + tensor]) : nullptr;
  if (weight == 0.0) {  // not in the formula: exact zeros whatever the inputs hold
    for (int64_t i = start + threadIdx.x; i < start + length; i += kThreads) {
      if (ds) ds[i] = from_acc<T>(Acc(0));
      if (dr) dr[i] = from_acc<T>(Acc(0));
    }
    return;
  }
  const Acc scale = grad_out[klass] * static_cast<Acc>(weight);
  Coefficients<Acc> c;
  if (METRIC == kOurs || METRIC == kCos) {
    const Acc* s = stats + (METRIC == kOurs ? slot : klass) * 3;
    c = backward_coefficients<Acc>(METRIC, scale, s[0], s[1], s[2]);
  } else {
    c = backward_coefficients<Acc>(METRIC, scale, Acc(0), Acc(0), Acc(0));
  }
  const T* gs = reinterpret_cast<const T*>(pointer_table[tensor]);
  const T* gr = reinterpret_cast<const T*>(pointer_table[num_tensors + tensor]);
  // Outputs are fresh allocations (16-byte aligned), so they share the inputs' alignment whenever the
  // inputs are aligned.
  for_each_element<T, ALIGNED>(
      start, start + length,
      [&](int64_t i) {
        Acc d_syn, d_real;
        backward_element<METRIC, Acc>(load_acc(gs + i), load_acc(gr + i), c, d_syn, d_real);
        if (ds) ds[i] = from_acc<T>(d_syn);
        if (dr) dr[i] = from_acc<T>(d_real);
      },
      [&](int64_t i) {
        const Vec16<T> vs = Vec16<T>::load(gs + i);
        const Vec16<T> vr = Vec16<T>::load(gr + i);
        Vec16<T> out_s, out_r;
#pragma unroll
        for (int j = 0; j < Vec16<T>::kWidth; ++j) {
          Acc d_syn, d_real;
          backward_element<METRIC, Acc>(to_acc(vs.v[j]), to_acc(vr.v[j]), c, d_syn, d_real);
          out_s.v[j] = from_acc<T>(d_syn);
          out_r.v[j] = from_acc<T>(d_real);
        }
        if (ds) out_s.store(ds + i);
        if (dr) out_r.store(dr + i);
      });
}

struct ForwardArgs {
  const int64_t* pointer_table;
  int64_t num_tensors;
  const int64_t* items;
  const double* item_weight;
  int64_t num_items;
  const int64_t* part_ptr;
  const double* part_weight;
  int64_t num_classes;
  void* partials;
  void* stats;
  void* out;
};

struct BackwardArgs {
  const int64_t* pointer_table;
  int64_t num_tensors;
  const int64_t* items;
  const double* item_weight;
  int64_t num_items;
  const void* stats;
  const void* grad_out;
  bool need_syn;
  bool need_real;
};

struct ForwardLauncher {
  template <typename T, int METRIC, bool ALIGNED>
  static cudaError_t run(const ForwardArgs& a, cudaStream_t stream) {
    using Acc = acc_t<T>;
    if (a.num_items > 0) {
      partials_kernel<T, METRIC, ALIGNED><<<a.num_items, kThreads, 0, stream>>>(
          a.pointer_table, a.num_tensors, a.items, a.item_weight, static_cast<Acc*>(a.partials));
      if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
    }
    finalize_kernel<T, METRIC><<<a.num_classes, kThreads, 0, stream>>>(
        static_cast<const Acc*>(a.partials), a.part_ptr, a.part_weight, static_cast<Acc*>(a.stats),
        static_cast<Acc*>(a.out));
    return cudaGetLastError();
  }
};

struct BackwardLauncher {
  template <typename T, int METRIC, bool ALIGNED>
  static cudaError_t run(const BackwardArgs& a, cudaStream_t stream) {
    if (a.num_items == 0) return cudaSuccess;
    backward_kernel<T, METRIC, ALIGNED><<<a.num_items, kThreads, 0, stream>>>(
        a.pointer_table, a.num_tensors, a.items, a.item_weight, static_cast<const acc_t<T>*>(a.stats),
        static_cast<const acc_t<T>*>(a.grad_out), a.need_syn, a.need_real);
    return cudaGetLastError();
  }
};

template <typename Launcher, typename T, int METRIC, typename Args>
cudaError_t run_aligned(bool aligned, const Args& args, cudaStream_t stream) {
  return aligned ? Launcher::template run<T, METRIC, true>(args, stream)
                 : Launcher::template run<T, METRIC, false>(args, stream);
}

template <typename Launcher, typename T, typename Args>
cudaError_t run_metric(int metric, bool aligned, const Args& args, cudaStream_t stream) {
  switch (metric) {
    case kOurs: return run_aligned<Launcher, T, kOurs>(aligned, args, stream);
    case kMse: return run_aligned<Launcher, T, kMse>(aligned, args, stream);
    case kCos: return run_aligned<Launcher, T, kCos>(aligned, args, stream);
    case kL1: return run_aligned<Launcher, T, kL1>(aligned, args, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <typename Launcher, typename Args>
cudaError_t run(DType dtype, int metric, bool aligned, const Args& args, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat16: return run_metric<Launcher, __half>(metric, aligned, args, stream);
    case DType::kBFloat16: return run_metric<Launcher, __nv_bfloat16>(metric, aligned, args, stream);
    case DType::kFloat32: return run_metric<Launcher, float>(metric, aligned, args, stream);
    case DType::kFloat64: return run_metric<Launcher, double>(metric, aligned, args, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_forward(DType dtype, int metric, const int64_t* pointer_table, int64_t num_tensors,
                           const int64_t* items, const double* item_weight, int64_t num_items,
                           const int64_t* part_ptr, const double* part_weight, int64_t num_classes, void* partials,
                           void* stats, void* out, bool aligned, cudaStream_t stream) {
  const ForwardArgs args{pointer_table, num_tensors, items, item_weight, num_items, part_ptr,
                         part_weight, num_classes, partials, stats, out};
  return run<ForwardLauncher>(dtype, metric, aligned, args, stream);
}

cudaError_t launch_backward(DType dtype, int metric, const int64_t* pointer_table, int64_t num_tensors,
                            const int64_t* items, const double* item_weight, int64_t num_items,
                            const void* stats, const void* grad_out, bool need_syn, bool need_real, bool aligned,
                            cudaStream_t stream) {
  const BackwardArgs args{pointer_table, num_tensors, items, item_weight, num_items,
                          stats, grad_out, need_syn, need_real};
  return run<BackwardLauncher>(dtype, metric, aligned, args, stream);
}

}  // namespace grad_distance
}  // namespace ddfast
