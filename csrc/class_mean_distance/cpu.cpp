// C++ CPU kernels for class_mean_distance (semantics: ddfast/ops/class_mean_distance/reference.py).
// Forward: one pass over the rows of each side accumulating class sums, parallel over column blocks
// (every element is summed in row order by one thread: deterministic, independent of the thread count),
// then the mean difference and the per-class squared norm. Backward: one pass over rows, parallel over rows.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "shared/registration.h"
#include "shared/tensors.h"

namespace ddfast {
namespace class_mean_distance {
namespace {

constexpr int64_t kColumnGrain = 64;  // columns per parallel task (256 B of fp32 per row)
constexpr int64_t kRowGrain = 16;

void check_features(const at::Tensor& f, const at::Tensor& y, const char* name) {
  TORCH_CHECK(f.dim() == 2 && f.is_contiguous(), "class_mean_distance: ", name, " must be a contiguous 2-D tensor");
  TORCH_CHECK(y.scalar_type() == at::kLong && y.dim() == 1 && y.is_contiguous() && y.size(0) == f.size(0),
              "class_mean_distance: labels of ", name, " must be contiguous int64, one per row");
}

// Rows per class; labels outside [0, K) are an error (the public function checks first; this guards
// direct calls and torch.compile, where value checks are skipped).
std::vector<int64_t> class_counts(const at::Tensor& y, int64_t num_classes, const char* name) {
  std::vector<int64_t> counts(num_classes, 0);
  const int64_t* labels = y.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < y.numel(); ++i) {
    TORCH_CHECK(labels[i] >= 0 && labels[i] < num_classes, "class_mean_distance: ", name, " holds label ", labels[i],
                ", outside [0, ", num_classes, ")");
    ++counts[labels[i]];
  }
  return counts;
}

// sums[c, d0:d1] += rows of class c (classes with zero scale are skipped).
template <typename T, typename Acc>
void add_rows(const T* __restrict__ f, const int64_t* labels, int64_t rows, int64_t dim, const Acc* scale,
              Acc* __restrict__ sums, int64_t d0, int64_t d1) {
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t c = labels[i];
    if (scale[c] == Acc(0)) continue;
    const T* __restrict__ row = f + i * dim;
    Acc* __restrict__ s = sums + c * dim;
    for (int64_t d = d0; d < d1; ++d) s[d] += static_cast<Acc>(row[d]);
  }
}

template <typename T>
void forward_impl(const at::Tensor& f_syn, const at::Tensor& y_syn, const at::Tensor& f_real,
                  const at::Tensor& y_real, const at::Tensor& out, const at::Tensor& diff, const at::Tensor& scale) {
  using Acc = at::opmath_type<T>;
  const int64_t num_classes = diff.size(0), dim = diff.size(1);
  const auto n_syn = class_counts(y_syn, num_classes, "y_syn");
  const auto n_real = class_counts(y_real, num_classes, "y_real");
  Acc* inv_syn = scale.data_ptr<Acc>();
  Acc* inv_real = inv_syn + num_classes;
  for (int64_t c = 0; c < num_classes; ++c) {
    const bool present = n_syn[c] > 0 && n_real[c] > 0;
    inv_syn[c] = present ? Acc(1) / Acc(n_syn[c]) : Acc(0);
    inv_real[c] = present ? Acc(1) / Acc(n_real[c]) : Acc(0);
  }
  auto real_sums = at::zeros_like(diff);
  Acc* syn_sum = diff.data_ptr<Acc>();  // becomes diff in place
  Acc* real_sum = real_sums.data_ptr<Acc>();
  at::parallel_for(0, dim, kColumnGrain, [&](int64_t d0, int64_t d1) {
    add_rows(f_syn.const_data_ptr<T>(), y_syn.const_data_ptr<int64_t>(), f_syn.size(0), dim, inv_syn, syn_sum, d0, d1);
    add_rows(f_real.const_data_ptr<T>(), y_real.const_data_ptr<int64_t>(), f_real.size(0), dim, inv_real, real_sum,
             d0, d1);
  });
  Acc* loss = out.data_ptr<Acc>();
  std::vector<Acc> per_class(num_classes);
  at::parallel_for(0, num_classes, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      Acc* dc = syn_sum + c * dim;
      const Acc* rc = real_sum + c * dim;
      Acc total(0);
      for (int64_t d = 0; d < dim; ++d) {
        dc[d] = rc[d] * inv_real[c] - dc[d] * inv_syn[c];
        total += dc[d] * dc[d];
      }
      per_class[c] = total;
    }
  });
  if (out.dim() == 1) {
    for (int64_t c = 0; c < num_classes; ++c) loss[c] = per_class[c];
  } else {
    Acc total(0);
    for (int64_t c = 0; c < num_classes; ++c) total += per_class[c];
    loss[0] = total;
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cpu(const at::Tensor& f_syn, const at::Tensor& y_syn,
                                                           const at::Tensor& f_real, const at::Tensor& y_real,
                                                           int64_t num_classes, bool per_class) {
  check_features(f_syn, y_syn, "f_syn");
  check_features(f_real, y_real, "f_real");
  TORCH_CHECK(f_syn.scalar_type() == f_real.scalar_type() && f_syn.size(1) == f_real.size(1),
              "class_mean_distance: f_syn and f_real must have the same dtype and feature count");
  TORCH_CHECK(num_classes > 0, "class_mean_distance: num_classes must be positive");
  const auto opts = f_syn.options().dtype(accumulate_type(f_syn.scalar_type()));
  auto out = per_class ? at::empty({num_classes}, opts) : at::empty({}, opts);
  auto diff = at::zeros({num_classes, f_syn.size(1)}, opts);
  auto scale = at::empty({2, num_classes}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f_syn.scalar_type(), "class_mean_distance_forward_cpu",
                                  [&] { forward_impl<scalar_t>(f_syn, y_syn, f_real, y_real, out, diff, scale); });
  return {out, diff, scale};
}

// d f[i] = coef[y_i] * diff[y_i] with coef = sign * 2 * g_c * scale_c.
template <typename T, typename Acc>
void rows_backward(const int64_t* labels, int64_t rows, int64_t num_classes, const Acc* diff, int64_t dim,
                   const std::vector<Acc>& coef, T* out) {
  at::parallel_for(0, rows, kRowGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t c = labels[i];
      TORCH_CHECK(c >= 0 && c < num_classes, "class_mean_distance: label ", c, " outside [0, ", num_classes, ")");
      const Acc k = coef[c];
      const Acc* __restrict__ dc = diff + c * dim;
      T* __restrict__ o = out + i * dim;
      for (int64_t d = 0; d < dim; ++d) o[d] = static_cast<T>(k * dc[d]);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad_out, const at::Tensor& y_syn,
                                                const at::Tensor& y_real, const at::Tensor& diff,
                                                const at::Tensor& scale, at::ScalarType dtype, bool need_syn,
                                                bool need_real) {
  TORCH_CHECK(diff.dim() == 2 && diff.is_contiguous() && scale.is_contiguous() &&
                  scale.numel() == 2 * diff.size(0) && scale.scalar_type() == diff.scalar_type(),
              "class_mean_distance: malformed saved statistics");
  TORCH_CHECK(y_syn.scalar_type() == at::kLong && y_real.scalar_type() == at::kLong && y_syn.is_contiguous() &&
                  y_real.is_contiguous(), "class_mean_distance: labels must be contiguous int64");
  const int64_t num_classes = diff.size(0), dim = diff.size(1);
  TORCH_CHECK(grad_out.numel() == 1 || grad_out.numel() == num_classes,
              "class_mean_distance: grad_out must be 0-d or have one entry per class");
  const auto opts = diff.options().dtype(dtype);
  auto d_syn = need_syn ? at::empty({y_syn.size(0), dim}, opts) : at::empty({0}, opts);
  auto d_real = need_real ? at::empty({y_real.size(0), dim}, opts) : at::empty({0}, opts);
  const auto go = grad_out.to(diff.scalar_type()).contiguous();
  AT_DISPATCH_FLOATING_TYPES(diff.scalar_type(), "class_mean_distance_backward_acc", [&] {
    using Acc = scalar_t;
    const Acc* g = go.const_data_ptr<Acc>();
    const Acc* s = scale.const_data_ptr<Acc>();
    std::vector<Acc> coef_syn(num_classes), coef_real(num_classes);
    for (int64_t c = 0; c < num_classes; ++c) {
      const Acc gc = g[go.numel() == 1 ? 0 : c];
      coef_syn[c] = Acc(-2) * gc * s[c];
      coef_real[c] = Acc(2) * gc * s[num_classes + c];
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "class_mean_distance_backward_cpu", [&] {
      if (need_syn)
        rows_backward(y_syn.const_data_ptr<int64_t>(), y_syn.size(0), num_classes, diff.const_data_ptr<Acc>(), dim,
                      coef_syn, d_syn.data_ptr<scalar_t>());
      if (need_real)
        rows_backward(y_real.const_data_ptr<int64_t>(), y_real.size(0), num_classes, diff.const_data_ptr<Acc>(), dim,
                      coef_real, d_real.data_ptr<scalar_t>());
    });
  });
  return {d_syn, d_real};
}

}  // namespace

DDFAST_IMPL_FORWARD_BACKWARD(CPU, class_mean_distance, forward_cpu, backward_cpu)

}  // namespace class_mean_distance
}  // namespace ddfast
