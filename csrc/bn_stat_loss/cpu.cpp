// C++ CPU kernels for bn_stat_loss (semantics: ddfast/ops/bn_stat_loss/reference.py; work items: plan.py).
//
// Forward: at::parallel_for over the plan's work items (a piece of whole runs of one channel), each
// summing (x - K) and (x - K)^2 with K the channel's first element (shifted sums: one pass, and no
// catastrophic cancellation in var = E[(x-K)^2] - E[x-K]^2 when |mean| >> std); then a serial
// finalize over layers and channels in a fixed order. Backward: per-channel coefficients, then
// parallel over the same items. No atomics: every backend result is deterministic.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "bn_stat_loss/checks.h"
#include "common/hd.h"
#include "shared/registration.h"
#include "shared/simd.h"
#include "shared/tensors.h"

namespace ddfast {
namespace bn_stat_loss {
namespace {

// Adds sum(x - k) and sum((x - k)^2) over n contiguous elements to s1, s2.
template <typename T, typename Acc>
void run_sums(const T* x, int64_t n, Acc k, Acc& s1, Acc& s2) {
  int64_t i = 0;
  if constexpr (std::is_same_v<T, Acc>) {
    using V = typename Simd<Acc>::type;
    constexpr int W = Simd<Acc>::kWidth;
    if (n >= W * kUnroll) {
      V a1[kUnroll] = {}, a2[kUnroll] = {};
      const V kv = V{} + k;
      for (; i + W * kUnroll <= n; i += W * kUnroll) {
        for (int u = 0; u < kUnroll; ++u) {
          V v;
          std::memcpy(&v, x + i + u * W, sizeof(V));
          const V d = v - kv;
          a1[u] += d;
          a2[u] += d * d;
        }
      }
      for (int u = 0; u < kUnroll; ++u) {
        for (int j = 0; j < W; ++j) {
          s1 += a1[u][j];
          s2 += a2[u][j];
        }
      }
    }
  }
  for (; i < n; ++i) {
    const Acc d = static_cast<Acc>(x[i]) - k;
    s1 += d;
    s2 += d * d;
  }
}

// Calls fn(item) for every item, in parallel, with parts of about equal element counts (items of
// late layers are much smaller than those of early layers, so an even split by count is unbalanced).
template <typename Fn>
void for_each_item(const int64_t* items, const int64_t* layers, int64_t num_items, const Fn& fn) {
  std::vector<int64_t> prefix(num_items + 1, 0);
  for (int64_t i = 0; i < num_items; ++i) {
    prefix[i + 1] = prefix[i] + items[i * kItemFields + 3] * layers[items[i * kItemFields] * kLayerFields + 1];
  }
  const int64_t total = prefix[num_items];
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(num_items, at::get_num_threads() * 4));
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const auto first = prefix.begin();
      const int64_t lo = std::lower_bound(first, first + num_items, total * p / parts) - first;
      const int64_t hi = p + 1 == parts ? num_items
                                        : std::lower_bound(first, first + num_items, total * (p + 1) / parts) - first;
      for (int64_t i = lo; i < hi; ++i) fn(i);
    }
  });
}

template <typename T>
void forward_impl(at::TensorList acts, at::TensorList means, at::TensorList vars, const at::Tensor& layers,
                  const at::Tensor& items, at::ArrayRef<double> weights, at::Tensor& out, at::Tensor& stats) {
  using Acc = acc_t<T>;
  const auto x = data_pointers<T>(acts);
  const auto mu = data_pointers<Acc>(means);
  const auto rv = data_pointers<Acc>(vars);
  const int64_t* layer = layers.const_data_ptr<int64_t>();
  const int64_t* item = items.const_data_ptr<int64_t>();
  const int64_t num_items = items.size(0);
  std::vector<Acc> partials(2 * num_items);
  for_each_item(item, layer, num_items, [&](int64_t i) {
    const int64_t* f = item + i * kItemFields;
    const int64_t l = f[0], c = f[1], b0 = f[2], nb = f[3];
    const int64_t channels = layer[l * kLayerFields], s = layer[l * kLayerFields + 1];
    const Acc k = static_cast<Acc>(x[l][c * s]);  // shift: the channel's first element
    Acc s1(0), s2(0);
    for (int64_t b = b0; b < b0 + nb; ++b) run_sums<T, Acc>(x[l] + (b * channels + c) * s, s, k, s1, s2);
    partials[2 * i] = s1;
    partials[2 * i + 1] = s2;
  });
  const int64_t num_layers = layers.size(0);
  const int64_t total_channels = (stats.numel() - 2 * num_layers) / 2;
  Acc* mean_out = stats.data_ptr<Acc>();
  Acc* var_out = mean_out + total_channels;
  Acc* norm_out = var_out + total_channels;
  double loss = 0;
  for (int64_t l = 0; l < num_layers; ++l) {
    const int64_t* f = layer + l * kLayerFields;
    const int64_t channels = f[0], s = f[1], n = f[2] * s, first = f[3], pieces = f[4], ch0 = f[5];
    double sq_m = 0, sq_v = 0;  // sums of squares over channels, in double (a few hundred terms)
    for (int64_t c = 0; c < channels; ++c) {
      Acc s1(0), s2(0);
      for (int64_t j = 0; j < pieces; ++j) {
        s1 += partials[2 * (first + c * pieces + j)];
        s2 += partials[2 * (first + c * pieces + j) + 1];
      }
      const Acc d = s1 / static_cast<Acc>(n);
      const Acc mean = static_cast<Acc>(x[l][c * s]) + d;
      Acc var = s2 / static_cast<Acc>(n) - d * d;
      if (var < 0) var = 0;  // rounding only (keeps NaN)
      mean_out[ch0 + c] = mean;
      var_out[ch0 + c] = var;
      const double dm = static_cast<double>(mean - mu[l][c]), dv = static_cast<double>(var - rv[l][c]);
      sq_m += dm * dm;
      sq_v += dv * dv;
    }
    const Acc nm = static_cast<Acc>(std::sqrt(sq_m)), nv = static_cast<Acc>(std::sqrt(sq_v));
    norm_out[l] = nm;
    norm_out[num_layers + l] = nv;
    loss += weights[l] * (static_cast<double>(nm) + static_cast<double>(nv));
  }
  out.fill_(static_cast<Acc>(loss));
}

template <typename Acc>
Acc safe_div(Acc num, Acc den) {  // the norm's subgradient 0 at 0; NaN propagates
  return den == 0 ? Acc(0) : num / den;
}

template <typename T>
void backward_impl(const at::Tensor& grad_out, at::TensorList acts, at::TensorList means, at::TensorList vars,
                   const at::Tensor& stats, const at::Tensor& layers, const at::Tensor& items,
                   at::ArrayRef<double> weights, std::vector<at::Tensor>& d_act, std::vector<at::Tensor>& d_mean,
                   std::vector<at::Tensor>& d_var) {
  using Acc = acc_t<T>;
  const auto x = data_pointers<T>(acts);
  const auto mu = data_pointers<Acc>(means);
  const auto rv = data_pointers<Acc>(vars);
  const int64_t* layer = layers.const_data_ptr<int64_t>();
  const int64_t* item = items.const_data_ptr<int64_t>();
  const int64_t num_layers = layers.size(0);
  const int64_t total_channels = (stats.numel() - 2 * num_layers) / 2;
  const Acc* mean = stats.const_data_ptr<Acc>();
  const Acc* var = mean + total_channels;
  const Acc* norm = var + total_channels;
  const Acc g = grad_out.item<Acc>();
  // dL/dmean and dL/dvar of every channel.
  std::vector<Acc> coef_m(total_channels), coef_v(total_channels);
  for (int64_t l = 0; l < num_layers; ++l) {
    const int64_t* f = layer + l * kLayerFields;
    const Acc scale = g * static_cast<Acc>(weights[l]);
    for (int64_t c = 0; c < f[0]; ++c) {
      coef_m[f[5] + c] = scale * safe_div<Acc>(mean[f[5] + c] - mu[l][c], norm[l]);
      coef_v[f[5] + c] = scale * safe_div<Acc>(var[f[5] + c] - rv[l][c], norm[num_layers + l]);
    }
    if (!d_mean.empty()) {
      Acc* dm = d_mean[l].data_ptr<Acc>();
      Acc* dv = d_var[l].data_ptr<Acc>();
      for (int64_t c = 0; c < f[0]; ++c) {
        dm[c] = -coef_m[f[5] + c];
        dv[c] = -coef_v[f[5] + c];
      }
    }
  }
  if (d_act.empty()) return;
  std::vector<T*> dx;
  for (auto& t : d_act) dx.push_back(t.data_ptr<T>());
  for_each_item(item, layer, items.size(0), [&](int64_t i) {
    const int64_t* f = item + i * kItemFields;
    const int64_t l = f[0], c = f[1], b0 = f[2], nb = f[3];
    const int64_t* lf = layer + l * kLayerFields;
    const int64_t channels = lf[0], s = lf[1], ch = lf[5] + c;
    const Acc n = static_cast<Acc>(lf[2] * s);
    const Acc c1 = coef_m[ch] / n, c2 = 2 * coef_v[ch] / n, m = mean[ch];
    for (int64_t b = b0; b < b0 + nb; ++b) {
      const int64_t off = (b * channels + c) * s;
      const T* in = x[l] + off;
      T* o = dx[l] + off;
      for (int64_t j = 0; j < s; ++j) o[j] = static_cast<T>(c1 + c2 * (static_cast<Acc>(in[j]) - m));
    }
  });
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(at::TensorList acts, at::TensorList means, at::TensorList vars,
                                               const at::Tensor& layers, const at::Tensor& items,
                                               at::ArrayRef<double> weights) {
  check_inputs(acts, means, vars, layers, items, weights);
  int64_t total_channels = 0;
  for (const auto& a : acts) total_channels += a.size(1);
  const auto options = acts[0].options().dtype(accumulate_type(acts[0].scalar_type()));
  auto out = at::empty({}, options);
  auto stats = at::empty({2 * total_channels + 2 * static_cast<int64_t>(acts.size())}, options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, acts[0].scalar_type(), "bn_stat_loss_forward_cpu", [&] {
    forward_impl<scalar_t>(acts, means, vars, layers, items, weights, out, stats);
  });
  return {out, stats};
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>> backward_cpu(
    const at::Tensor& grad_out, at::TensorList acts, at::TensorList means, at::TensorList vars, const at::Tensor& stats,
    const at::Tensor& layers, const at::Tensor& items, at::ArrayRef<double> weights, bool need_act, bool need_stats) {
  check_inputs(acts, means, vars, layers, items, weights);
  const auto acc = accumulate_type(acts[0].scalar_type());
  check_stats(stats, layers.const_data_ptr<int64_t>(), layers.size(0), acc);
  std::vector<at::Tensor> d_act, d_mean, d_var;
  if (need_act) {
    for (const auto& a : acts) d_act.push_back(at::empty_like(a, at::MemoryFormat::Contiguous));
  }
  if (need_stats) {
    for (size_t l = 0; l < acts.size(); ++l) {
      d_mean.push_back(at::empty_like(means[l]));
      d_var.push_back(at::empty_like(vars[l]));
    }
  }
  const auto st = stats.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, acts[0].scalar_type(), "bn_stat_loss_backward_cpu", [&] {
    backward_impl<scalar_t>(grad_out.to(acc), acts, means, vars, st, layers, items, weights, d_act, d_mean, d_var);
  });
  return {d_act, d_mean, d_var};
}

}  // namespace

DDFAST_IMPL_FORWARD_BACKWARD(CPU, bn_stat_loss, forward_cpu, backward_cpu)

}  // namespace bn_stat_loss
}  // namespace ddfast
