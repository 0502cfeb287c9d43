// C++ CPU kernels of the k-means steps (semantics and contract: ddfast/ops/kmeans/reference.py).
//
// Rows are grouped by class (offsets [K + 1]); class c's rows only meet centroids[c] ([k, D]).
// assign / nearest: per class, blocks of kRowBlock rows (converted to the accumulate type once per block)
// against tiles of kCentroidTile centroids; each tile's Gram block is one at::mm into a fixed workspace
// (threaded GEMM), then a plain loop under at::parallel_for keeps the running minimum: per row (assign,
// lowest centroid on ties) or per centroid across row blocks in row order (nearest, lowest row on ties).
// No N x k matrix exists; memory is the workspace plus one converted row block. The distance of the chosen
// centroid (row) is then computed directly as ||x - c||^2 (assign: only when asked for; the Lloyd
// iterations need the assignment alone).
// update: segment sums in the accumulate type, parallel over blocks of feature columns, every element
// summed in row order by one thread (deterministic whatever the thread count), then means.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace ddfast {
namespace kmeans {
namespace {

constexpr int64_t kRowBlock = 1024;     // rows per GEMM block
constexpr int64_t kCentroidTile = 256;  // centroids per GEMM block (workspace <= 1 MiB in fp32)
constexpr int64_t kColumnGrain = 64;    // feature columns per parallel task of the update

// a is a better minimum than b: smaller, or NaN against a number (NaN counts as the minimum, as in torch.argmin).
template <typename Acc>
inline bool better(Acc a, Acc b) {
  return a < b || (std::isnan(a) && !std::isnan(b));
}

std::vector<int64_t> class_offsets(const at::Tensor& offsets, int64_t rows, int64_t num_classes) {
  TORCH_CHECK(offsets.scalar_type() == at::kLong && offsets.dim() == 1 && offsets.numel() == num_classes + 1,
              "kmeans: offsets must be int64 [K + 1] with K = centroids.size(0)");
  auto o = offsets.to(at::kCPU).contiguous();
  std::vector<int64_t> out(o.const_data_ptr<int64_t>(), o.const_data_ptr<int64_t>() + o.numel());
  TORCH_CHECK(out.front() == 0 && out.back() == rows, "kmeans: offsets must run from 0 to the number of rows");
  for (size_t c = 1; c < out.size(); ++c) TORCH_CHECK(out[c] >= out[c - 1], "kmeans: offsets must not decrease");
  return out;
}

void check_inputs(const at::Tensor& x, const at::Tensor& centroids) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "kmeans: x must be a contiguous 2-D tensor");
  TORCH_CHECK(centroids.dim() == 3 && centroids.is_contiguous() && centroids.size(2) == x.size(1),
              "kmeans: centroids must be contiguous [K, k, D] with x's D");
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(centroids.scalar_type() == acc, "kmeans: centroids must be in the accumulate dtype of x (", acc, ")");
}

template <typename Acc>
inline Acc squared_distance(const Acc* a, const Acc* b, int64_t dim) {
  Acc s(0);
  for (int64_t d = 0; d < dim; ++d) s += (a[d] - b[d]) * (a[d] - b[d]);
  return s;
}

// Squared norms of the rows of a contiguous [n, D] accumulate-type matrix.
template <typename Acc>
std::vector<Acc> row_norms(const at::Tensor& m) {
  const int64_t n = m.size(0), dim = m.size(1);
  std::vector<Acc> out(n);
  const Acc* p = m.const_data_ptr<Acc>();
  at::parallel_for(0, n, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      Acc s(0);
      for (int64_t d = 0; d < dim; ++d) s += p[i * dim + d] * p[i * dim + d];
      out[i] = s;
    }
  });
  return out;
}

template <typename Acc>
void assign_impl(const at::Tensor& x, const at::Tensor& centroids, const std::vector<int64_t>& off,
                 const at::Tensor& assignment, const at::Tensor& distance, bool with_distance) {
  const int64_t k = centroids.size(1);
  const auto acc_type = centroids.scalar_type();
  int64_t* out_a = assignment.data_ptr<int64_t>();
  Acc* out_d = with_distance ? distance.data_ptr<Acc>() : nullptr;
  auto gram = at::empty({std::min(kRowBlock, x.size(0)), std::min(kCentroidTile, k)}, centroids.options());
  for (size_t c = 0; c + 1 < off.size(); ++c) {
    if (off[c + 1] == off[c]) continue;
    const auto cents = centroids[c];
    const auto cn = row_norms<Acc>(cents);
    for (int64_t r0 = off[c]; r0 < off[c + 1]; r0 += kRowBlock) {
      const int64_t rb = std::min(kRowBlock, off[c + 1] - r0);
      const auto rows = x.narrow(0, r0, rb).to(acc_type).contiguous();
      std::vector<Acc> best(rb, std::numeric_limits<Acc>::infinity());
      std::vector<int64_t> idx(rb, 0);
      for (int64_t t0 = 0; t0 < k; t0 += kCentroidTile) {
        const int64_t tb = std::min(kCentroidTile, k - t0);
        auto g = gram.narrow(0, 0, rb).narrow(1, 0, tb);
        at::mm_out(g, rows, cents.narrow(0, t0, tb).t());
        const Acc* gp = g.const_data_ptr<Acc>();
        const int64_t ld = g.stride(0);
        at::parallel_for(0, rb, 64, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) {
            for (int64_t j = 0; j < tb; ++j) {
              const Acc s = cn[t0 + j] - Acc(2) * gp[i * ld + j];
              if (better(s, best[i])) {
                best[i] = s;
                idx[i] = t0 + j;
              }
            }
          }
        });
      }
      std::copy(idx.begin(), idx.end(), out_a + r0);
      if (!with_distance) continue;
      // The chosen centroid's distance directly (the expanded form loses digits of small distances).
      const Acc* rp = rows.const_data_ptr<Acc>();
      const Acc* cp = cents.const_data_ptr<Acc>();
      const int64_t dim = x.size(1);
      at::parallel_for(0, rb, 64, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) out_d[r0 + i] = squared_distance(rp + i * dim, cp + idx[i] * dim, dim);
      });
    }
  }
}

std::tuple<at::Tensor, at::Tensor> assign_cpu(const at::Tensor& x, const at::Tensor& centroids,
                                              const at::Tensor& offsets, bool with_distance) {
  check_inputs(x, centroids);
  const auto off = class_offsets(offsets, x.size(0), centroids.size(0));
  auto assignment = at::zeros({x.size(0)}, x.options().dtype(at::kLong));
  auto distance = at::zeros({with_distance ? x.size(0) : 0}, centroids.options());
  if (centroids.size(1) == 0) return {assignment, distance};
  AT_DISPATCH_FLOATING_TYPES(centroids.scalar_type(), "kmeans_assign_cpu",
                             [&] { assign_impl<scalar_t>(x, centroids, off, assignment, distance, with_distance); });
  return {assignment, distance};
}

template <typename T, typename Acc>
void update_impl(const at::Tensor& x, const at::Tensor& assignment, const std::vector<int64_t>& off,
                 const at::Tensor& centroids, const at::Tensor& out, const at::Tensor& counts) {
  const int64_t k = centroids.size(1), dim = x.size(1), num = static_cast<int64_t>(off.size()) - 1;
  const T* xp = x.const_data_ptr<T>();
  const int64_t* a = assignment.const_data_ptr<int64_t>();
  int64_t* cnt = counts.data_ptr<int64_t>();
  for (int64_t c = 0; c < num; ++c) {
    for (int64_t i = off[c]; i < off[c + 1]; ++i) {
      TORCH_CHECK(a[i] >= 0 && a[i] < k, "kmeans: assignment ", a[i], " of row ", i, " is outside [0, ", k, ")");
      ++cnt[c * k + a[i]];
    }
  }
  auto sums = at::zeros_like(centroids);
  Acc* s = sums.data_ptr<Acc>();
  at::parallel_for(0, dim, kColumnGrain, [&](int64_t d0, int64_t d1) {
    for (int64_t c = 0; c < num; ++c) {
      for (int64_t i = off[c]; i < off[c + 1]; ++i) {
        const T* __restrict__ row = xp + i * dim;
        Acc* __restrict__ target = s + (c * k + a[i]) * dim;
        for (int64_t d = d0; d < d1; ++d) target[d] += static_cast<Acc>(row[d]);
      }
    }
  });
  const Acc* prev = centroids.const_data_ptr<Acc>();
  Acc* o = out.data_ptr<Acc>();
  at::parallel_for(0, num * k, 1, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t n = cnt[j];
      for (int64_t d = 0; d < dim; ++d) o[j * dim + d] = n > 0 ? s[j * dim + d] / Acc(n) : prev[j * dim + d];
    }
  });
}

std::tuple<at::Tensor, at::Tensor> update_cpu(const at::Tensor& x, const at::Tensor& assignment,
                                              const at::Tensor& offsets, const at::Tensor& centroids) {
  check_inputs(x, centroids);
  TORCH_CHECK(assignment.scalar_type() == at::kLong && assignment.dim() == 1 && assignment.is_contiguous() &&
                  assignment.size(0) == x.size(0),
              "kmeans: assignment must be contiguous int64 [N]");
  const auto off = class_offsets(offsets, x.size(0), centroids.size(0));
  auto out = at::empty_like(centroids);
  auto counts = at::zeros({centroids.size(0), centroids.size(1)}, x.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "kmeans_update_cpu", [&] {
    using Acc = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    update_impl<scalar_t, Acc>(x, assignment, off, centroids, out, counts);
  });
  return {out, counts};
}

template <typename Acc>
void nearest_impl(const at::Tensor& x, const at::Tensor& centroids, const std::vector<int64_t>& off,
                  const at::Tensor& excluded, const at::Tensor& index, const at::Tensor& distance) {
  const int64_t k = centroids.size(1);
  const auto acc_type = centroids.scalar_type();
  const bool* skip = excluded.numel() ? excluded.const_data_ptr<bool>() : nullptr;
  int64_t* out_i = index.data_ptr<int64_t>();
  Acc* out_d = distance.data_ptr<Acc>();
  auto gram = at::empty({std::min(kCentroidTile, k), std::min(kRowBlock, x.size(0))}, centroids.options());
  for (size_t c = 0; c + 1 < off.size(); ++c) {
    const auto cents = centroids[c];
    std::vector<Acc> best(k, std::numeric_limits<Acc>::infinity());
    std::vector<int64_t> idx(k, -1);
    for (int64_t r0 = off[c]; r0 < off[c + 1]; r0 += kRowBlock) {
      const int64_t rb = std::min(kRowBlock, off[c + 1] - r0);
      const auto rows = x.narrow(0, r0, rb).to(acc_type).contiguous();
      const auto xn = row_norms<Acc>(rows);
      for (int64_t t0 = 0; t0 < k; t0 += kCentroidTile) {
        const int64_t tb = std::min(kCentroidTile, k - t0);
        auto g = gram.narrow(0, 0, tb).narrow(1, 0, rb);  // [centroids, rows]: each centroid's scores contiguous
        at::mm_out(g, cents.narrow(0, t0, tb), rows.t());
        const Acc* gp = g.const_data_ptr<Acc>();
        const int64_t ld = g.stride(0);
        at::parallel_for(0, tb, 1, [&](int64_t j0, int64_t j1) {
          for (int64_t j = j0; j < j1; ++j) {
            for (int64_t i = 0; i < rb; ++i) {  // row order: the lowest row wins ties
              if (skip && skip[r0 + i]) continue;
              const Acc t = xn[i] - Acc(2) * gp[j * ld + i];
              if (idx[t0 + j] < 0 || better(t, best[t0 + j])) {
                best[t0 + j] = t;
                idx[t0 + j] = r0 + i;
              }
            }
          }
        });
      }
    }
    const int64_t dim = x.size(1);
    for (int64_t j = 0; j < k; ++j) {
      out_i[c * k + j] = idx[j];
      if (idx[j] < 0) {
        out_d[c * k + j] = std::numeric_limits<Acc>::infinity();
      } else {
        const auto row = x[idx[j]].to(acc_type).contiguous();
        out_d[c * k + j] = squared_distance(row.template const_data_ptr<Acc>(),
                                            cents.template const_data_ptr<Acc>() + j * dim, dim);
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor> nearest_cpu(const at::Tensor& x, const at::Tensor& centroids,
                                               const at::Tensor& offsets, const at::Tensor& excluded) {
  check_inputs(x, centroids);
  TORCH_CHECK(excluded.scalar_type() == at::kBool && excluded.dim() == 1 && excluded.is_contiguous() &&
                  (excluded.numel() == 0 || excluded.numel() == x.size(0)),
              "kmeans: excluded must be a contiguous bool [N] or empty");
  const auto off = class_offsets(offsets, x.size(0), centroids.size(0));
  auto index = at::empty({centroids.size(0), centroids.size(1)}, x.options().dtype(at::kLong));
  auto distance = at::empty({centroids.size(0), centroids.size(1)}, centroids.options());
  if (centroids.size(1) == 0) return {index, distance};
  AT_DISPATCH_FLOATING_TYPES(centroids.scalar_type(), "kmeans_nearest_cpu",
                             [&] { nearest_impl<scalar_t>(x, centroids, off, excluded, index, distance); });
  return {index, distance};
}

}  // namespace

TORCH_LIBRARY_IMPL(ddfast, CPU, m) {
  m.impl("_kmeans_assign", &assign_cpu);
  m.impl("_kmeans_update", &update_cpu);
  m.impl("_kmeans_nearest", &nearest_cpu);
}

}  // namespace kmeans
}  // namespace ddfast
