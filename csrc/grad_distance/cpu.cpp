// C++ CPU kernels for grad_distance: at::parallel_for over the plan's work items (rows under
// 'ours', pieces otherwise), then a serial per-class finalize in a fixed order (deterministic).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "grad_distance/checks.h"
#include "grad_distance/math.h"
#include "shared/registration.h"
#include "shared/simd.h"
#include "shared/tensors.h"

namespace ddfast {
namespace grad_distance {
namespace {

template <int METRIC, typename V>
inline void simd_terms(V gs, V gr, V& p0, V& p1, V& p2) {
  if constexpr (METRIC == kOurs || METRIC == kCos) {
    p0 += gs * gr;
    p1 += gr * gr;
    p2 += gs * gs;
  } else if constexpr (METRIC == kMse) {
    const V diff = gs - gr;
    p0 += diff * diff;
  } else {
    const V diff = gs - gr;
    p0 += diff < 0 ? -diff : diff;
  }
}

// The three partial sums of one item. fp32/fp64 inputs run on SIMD vectors with kUnroll
// independent accumulators; fp16/bf16 convert element by element.
template <int METRIC, typename T, typename Acc>
void item_sums(const T* gs, const T* gr, int64_t n, Acc* out) {
  Acc p0(0), p1(0), p2(0);
  int64_t i = 0;
  if constexpr (std::is_same_v<T, Acc>) {
    using V = typename Simd<Acc>::type;
    constexpr int W = Simd<Acc>::kWidth;
    V v0[kUnroll] = {}, v1[kUnroll] = {}, v2[kUnroll] = {};
    for (; i + W * kUnroll <= n; i += W * kUnroll) {
      for (int u = 0; u < kUnroll; ++u) {
        V x, y;
        std::memcpy(&x, gs + i + u * W, sizeof(V));
        std::memcpy(&y, gr + i + u * W, sizeof(V));
        simd_terms<METRIC>(x, y, v0[u], v1[u], v2[u]);
      }
    }
    for (int u = 0; u < kUnroll; ++u) {
      for (int j = 0; j < W; ++j) {
        p0 += v0[u][j];
        p1 += v1[u][j];
        p2 += v2[u][j];
      }
    }
  }
  for (; i < n; ++i) forward_terms<METRIC, Acc>(static_cast<Acc>(gs[i]), static_cast<Acc>(gr[i]), p0, p1, p2);
  out[0] = p0;
  out[1] = p1;
  out[2] = p2;
}

template <int METRIC, typename T>
void forward_impl(at::TensorList g_syn, at::TensorList g_real, const at::Tensor& items, const at::Tensor& item_weight,
                  const at::Tensor& part_ptr, const at::Tensor& part_weight, at::Tensor& partials, at::Tensor& out,
                  at::Tensor& stats) {
  using Acc = acc_t<T>;
  const auto syn = data_pointers<T>(g_syn);
  const auto real = data_pointers<T>(g_real);
  const int64_t* item = items.const_data_ptr<int64_t>();
  const double* weight = item_weight.const_data_ptr<double>();
  Acc* part = partials.data_ptr<Acc>();
  at::parallel_for(0, items.size(0), 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      const int64_t* f = item + w * kItemFields;
      const int64_t slot = f[4];
      if (slot < 0) continue;
      Acc sums[3] = {Acc(0), Acc(0), Acc(0)};
      if (weight[w] != 0.0) item_sums<METRIC, T, Acc>(syn[f[0]] + f[2], real[f[0]] + f[2], f[3], sums);
      part[slot * 3] = sums[0];
      part[slot * 3 + 1] = sums[1];
      part[slot * 3 + 2] = sums[2];
    }
  });
  const int64_t* ptr = part_ptr.const_data_ptr<int64_t>();
  const double* pw = part_weight.const_data_ptr<double>();
  Acc* o = out.data_ptr<Acc>();
  for (int64_t k = 0; k + 1 < part_ptr.numel(); ++k) {
    Acc total(0), sq_r(0), sq_s(0);
    for (int64_t p = ptr[k]; p < ptr[k + 1]; ++p) {
      if (METRIC == kCos) {
        if (pw[p] == 0.0) continue;
        total += part[p * 3];
        sq_r += part[p * 3 + 1];
        sq_s += part[p * 3 + 2];
      } else {
        total += part_contribution<Acc>(METRIC, static_cast<Acc>(pw[p]), part[p * 3], part[p * 3 + 1], part[p * 3 + 2]);
      }
    }
    if (METRIC == kCos) {
      Acc* st = stats.data_ptr<Acc>() + k * 3;
      st[0] = total;
      st[1] = sq_r;
      st[2] = sq_s;
      total = cosine_distance(total, sq_r, sq_s);
    }
    o[k] = total;
  }
}

template <int METRIC, typename T>
void backward_impl(const at::Tensor& grad_out, at::TensorList g_syn, at::TensorList g_real, const at::Tensor& stats,
                   const at::Tensor& items, const at::Tensor& item_weight, const std::vector<at::Tensor>& dsyn,
                   const std::vector<at::Tensor>& dreal) {
  using Acc = acc_t<T>;
  const auto syn = data_pointers<T>(g_syn);
  const auto real = data_pointers<T>(g_real);
  const int64_t* item = items.const_data_ptr<int64_t>();
  const double* weight = item_weight.const_data_ptr<double>();
  const Acc* go = grad_out.const_data_ptr<Acc>();
  const Acc* st = stats.numel() ? stats.const_data_ptr<Acc>() : nullptr;
  const auto ds = mutable_pointers<T>(dsyn);
  const auto dr = mutable_pointers<T>(dreal);
  at::parallel_for(0, items.size(0), 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      const int64_t* f = item + w * kItemFields;
      const int64_t tensor = f[0], klass = f[1], start = f[2], n = f[3], slot = f[4];
      T* ds_item = ds.empty() ? nullptr : ds[tensor] + start;
      T* dr_item = dr.empty() ? nullptr : dr[tensor] + start;
      if (weight[w] == 0.0) {  // not in the formula: exact zeros whatever the inputs hold
        if (ds_item) std::fill(ds_item, ds_item + n, T(0));
        if (dr_item) std::fill(dr_item, dr_item + n, T(0));
        continue;
      }
      const Acc scale = go[klass] * static_cast<Acc>(weight[w]);
      const int64_t row = METRIC == kOurs ? slot : klass;
      const Acc* s = (METRIC == kOurs || METRIC == kCos) ? st + row * 3 : nullptr;
      const Coefficients<Acc> c = s ? backward_coefficients<Acc>(METRIC, scale, s[0], s[1], s[2])
                                    : backward_coefficients<Acc>(METRIC, scale, Acc(0), Acc(0), Acc(0));
      const T* gs = syn[tensor] + start;
      const T* gr = real[tensor] + start;
      // One simple loop per output keeps each loop vectorisable; the row is re-read from cache.
      Acc d_syn, d_real;
      if (ds_item) {
        for (int64_t i = 0; i < n; ++i) {
          backward_element<METRIC, Acc>(static_cast<Acc>(gs[i]), static_cast<Acc>(gr[i]), c, d_syn, d_real);
          ds_item[i] = static_cast<T>(d_syn);
        }
      }
      if (dr_item) {
        for (int64_t i = 0; i < n; ++i) {
          backward_element<METRIC, Acc>(static_cast<Acc>(gs[i]), static_cast<Acc>(gr[i]), c, d_syn, d_real);
          dr_item[i] = static_cast<T>(d_real);
        }
      }
    }
  });
}

template <typename Fn>
void dispatch_metric(int64_t metric, Fn&& fn) {
  switch (metric) {
    case kOurs: fn(std::integral_constant<int, kOurs>{}); break;
    case kMse: fn(std::integral_constant<int, kMse>{}); break;
    case kCos: fn(std::integral_constant<int, kCos>{}); break;
    case kL1: fn(std::integral_constant<int, kL1>{}); break;
    default: TORCH_CHECK(false, "grad_distance: unknown metric code ", metric);
  }
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(at::TensorList g_syn, at::TensorList g_real, const at::Tensor& items,
                                               const at::Tensor& item_weight, const at::Tensor& part_ptr,
                                               const at::Tensor& part_weight, int64_t metric) {
  check_inputs(g_syn, g_real, items, item_weight);
  const auto& ref = g_syn[0];
  const auto acc_type = stats_dtype(ref);
  const int64_t num_classes = part_ptr.numel() - 1;
  const int64_t num_parts = part_weight.numel();
  auto partials = at::empty({num_parts * 3}, ref.options().dtype(acc_type));
  auto out = at::empty({num_classes}, partials.options());
  auto stats = metric == kOurs ? partials : at::empty({metric == kCos ? 3 * num_classes : 0}, partials.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ref.scalar_type(), "grad_distance_forward_cpu", [&] {
    dispatch_metric(metric, [&](auto m) {
      forward_impl<decltype(m)::value, scalar_t>(g_syn, g_real, items, item_weight, part_ptr, part_weight, partials,
                                                 out, stats);
    });
  });
  return {out, stats};
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> backward_cpu(
    const at::Tensor& grad_out, at::TensorList g_syn, at::TensorList g_real, const at::Tensor& stats,
    const at::Tensor& items, const at::Tensor& item_weight, int64_t metric, bool need_syn, bool need_real) {
  check_inputs(g_syn, g_real, items, item_weight);
  auto dsyn = empty_like_all(g_syn, need_syn);
  auto dreal = empty_like_all(g_real, need_real);
  const auto go = grad_out.to(stats_dtype(g_syn[0])).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g_syn[0].scalar_type(), "grad_distance_backward_cpu", [&] {
    dispatch_metric(metric, [&](auto m) {
      backward_impl<decltype(m)::value, scalar_t>(go, g_syn, g_real, stats, items, item_weight, dsyn, dreal);
    });
  });
  return {dsyn, dreal};
}

}  // namespace

DDFAST_IMPL_FORWARD_BACKWARD(CPU, grad_distance, forward_cpu, backward_cpu)

}  // namespace grad_distance
}  // namespace ddfast
