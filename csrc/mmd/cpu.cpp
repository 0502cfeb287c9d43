// C++ CPU kernels for MMD (semantics: ddfast/ops/mmd/reference.py). For each class segment the xx,
// yy and xy blocks are walked in tiles of kTile x kTile rows: the Gram tile A_I B_J^T is one at::mm
// into a fixed workspace, squared distances ||a||^2 + ||b||^2 - 2<a,b> (clamped at 0, exactly 0 on
// the diagonal of xx/yy) and the kernel are evaluated in place with at::parallel_for over the tile's
// rows, and per-row sums are added in a fixed order (deterministic for a given thread count). The xx
// and yy blocks visit only tiles J >= I (symmetry). The backward turns each tile into the coefficients
// c_ij = scale * f'(d_ij^2) and accumulates grad_A += rowsum(C) A_I - C B_J (and the mirrored
// grad_B += colsum(C) B_J - C^T A_I) with two GEMMs per tile. Memory: O(N + M) plus the workspace;
// the N x M matrix never exists. The linear kernel uses the closed form around the class means.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "mmd/checks.h"
#include "shared/registration.h"
#include "shared/tensors.h"

namespace ddfast {
namespace mmd {
namespace {

// Rows per tile on each side; the Gram workspace is kTile x kTile (1 MiB in fp32). On the 2-core CI
// machine 512 and 1024 measured within noise of each other for D = 2048; 256 was slower.
constexpr int64_t kTile = 512;

// k = f(d^2) summed over bandwidths, and its slope f'(d^2).
template <typename Acc>
struct KernelFn {
  int64_t kind;
  std::vector<Acc> c;

  Acc value(Acc d2) const {
    Acc v(0);
    if (kind == kGaussian) {
      for (Acc cs : c) v += std::exp(-cs * d2);
    } else {
      for (Acc cs : c) v += Acc(1) / std::sqrt(Acc(1) + cs * d2);
    }
    return v;
  }

  Acc slope(Acc d2) const {
    Acc v(0);
    if (kind == kGaussian) {
      for (Acc cs : c) v -= cs * std::exp(-cs * d2);
    } else {
      for (Acc cs : c) {
        const Acc base = Acc(1) + cs * d2;
        v -= Acc(0.5) * cs / (base * std::sqrt(base));
      }
    }
    return v;
  }
};

template <typename Acc>
struct Workspace {
  at::Tensor gram;  // kTile * kTile
  at::Tensor rows;  // kTile: per-row sums

  explicit Workspace(const at::Tensor& like)
      : gram(at::empty({kTile * kTile}, like.options())), rows(at::empty({kTile}, like.options())) {}

  // A_I B_J^T for rows [i0, i0 + ti) of a and [j0, j0 + tj) of b, contiguous [ti, tj] in the workspace.
  at::Tensor product(const at::Tensor& a, int64_t i0, int64_t ti, const at::Tensor& b, int64_t j0, int64_t tj) {
    at::Tensor g = gram.narrow(0, 0, ti * tj).view({ti, tj});
    at::mm_out(g, a.narrow(0, i0, ti), b.narrow(0, j0, tj).t());
    return g;
  }
};

template <typename Acc>
std::vector<Acc> squared_norms(const at::Tensor& a) {
  const int64_t n = a.size(0), d = a.size(1);
  const Acc* p = a.const_data_ptr<Acc>();
  std::vector<Acc> out(n);
  at::parallel_for(0, n, 64, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      Acc s(0);
      for (int64_t k = 0; k < d; ++k) s += p[r * d + k] * p[r * d + k];
      out[r] = s;
    }
  });
  return out;
}

// Squared distance of tile entry (r, c); NaN propagates (the clamp keeps it).
template <typename Acc>
inline Acc squared_distance(Acc na, Acc nb, Acc g) {
  const Acc d2 = na + nb - Acc(2) * g;
  return d2 < Acc(0) ? Acc(0) : d2;
}

// Sum of k over the tile's counted pairs. diag: the tile lies on the diagonal of an xx/yy block
// (row r and column r are the same sample: d^2 = 0 exactly, or left out when exclude_diag).
template <typename Acc>
Acc tile_sum(const at::Tensor& g, const Acc* na, const Acc* nb, bool diag, bool exclude_diag,
             const KernelFn<Acc>& fn, Workspace<Acc>& ws) {
  const int64_t ti = g.size(0), tj = g.size(1);
  const Acc* gp = g.const_data_ptr<Acc>();
  Acc* rows = ws.rows.template data_ptr<Acc>();
  at::parallel_for(0, ti, 8, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const Acc* gr = gp + r * tj;
      Acc s(0);
      for (int64_t c = 0; c < tj; ++c) {
        if (diag && c == r) {
          if (!exclude_diag) s += fn.value(Acc(0));
          continue;
        }
        s += fn.value(squared_distance(na[r], nb[c], gr[c]));
      }
      rows[r] = s;
    }
  });
  Acc total(0);
  for (int64_t r = 0; r < ti; ++r) total += rows[r];
  return total;
}

// The tile becomes C = scale * f'(d^2) in place (0 on an excluded or same-sample diagonal); row sums
// go to ws.rows.
template <typename Acc>
void tile_coefficients(at::Tensor& g, const Acc* na, const Acc* nb, bool diag, Acc scale,
                       const KernelFn<Acc>& fn, Workspace<Acc>& ws) {
  const int64_t ti = g.size(0), tj = g.size(1);
  Acc* gp = g.data_ptr<Acc>();
  Acc* rows = ws.rows.template data_ptr<Acc>();
  at::parallel_for(0, ti, 8, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      Acc* gr = gp + r * tj;
      Acc s(0);
      for (int64_t c = 0; c < tj; ++c) {
        // On the diagonal x_i - x_i = 0: the coefficient multiplies nothing, so it is 0 in both estimators.
        const Acc v = (diag && c == r) ? Acc(0) : scale * fn.slope(squared_distance(na[r], nb[c], gr[c]));
        gr[c] = v;
        s += v;
      }
      rows[r] = s;
    }
  });
}

// Sum of k over the pairs of rows [lo, hi) of a with themselves (J >= I tiles, off-diagonal tiles twice).
template <typename Acc>
Acc same_block_sum(const at::Tensor& a, const Acc* na, int64_t lo, int64_t hi, bool unbiased,
                   const KernelFn<Acc>& fn, Workspace<Acc>& ws) {
  Acc total(0);
  for (int64_t i0 = lo; i0 < hi; i0 += kTile) {
    const int64_t ti = std::min(kTile, hi - i0);
    for (int64_t j0 = i0; j0 < hi; j0 += kTile) {
      const int64_t tj = std::min(kTile, hi - j0);
      const at::Tensor g = ws.product(a, i0, ti, a, j0, tj);
      const Acc s = tile_sum(g, na + i0, na + j0, j0 == i0, unbiased, fn, ws);
      total += j0 == i0 ? s : Acc(2) * s;
    }
  }
  return total;
}

template <typename Acc>
Acc cross_block_sum(const at::Tensor& a, const Acc* na, int64_t a_lo, int64_t a_hi, const at::Tensor& b,
                    const Acc* nb, int64_t b_lo, int64_t b_hi, const KernelFn<Acc>& fn, Workspace<Acc>& ws) {
  Acc total(0);
  for (int64_t i0 = a_lo; i0 < a_hi; i0 += kTile) {
    const int64_t ti = std::min(kTile, a_hi - i0);
    for (int64_t j0 = b_lo; j0 < b_hi; j0 += kTile) {
      const int64_t tj = std::min(kTile, b_hi - j0);
      total += tile_sum(ws.product(a, i0, ti, b, j0, tj), na + i0, nb + j0, false, false, fn, ws);
    }
  }
  return total;
}

// grad_A += rowsum(C) A_I - C B_J for every tile; the mirrored update goes to grad_B (the same tensor
// for the symmetric xx/yy blocks, where only tiles J >= I are visited). ga or gb may be undefined.
template <typename Acc>
void block_grad(const at::Tensor& a, const Acc* na, int64_t a_lo, int64_t a_hi, const at::Tensor& b,
                const Acc* nb, int64_t b_lo, int64_t b_hi, bool same, Acc scale, const KernelFn<Acc>& fn,
                at::Tensor& ga, at::Tensor& gb, Workspace<Acc>& ws) {
  for (int64_t i0 = a_lo; i0 < a_hi; i0 += kTile) {
    const int64_t ti = std::min(kTile, a_hi - i0);
    const at::Tensor a_i = a.narrow(0, i0, ti);
    for (int64_t j0 = same ? i0 : b_lo; j0 < b_hi; j0 += kTile) {
      const int64_t tj = std::min(kTile, b_hi - j0);
      const bool diag = same && j0 == i0;
      const at::Tensor b_j = b.narrow(0, j0, tj);
      at::Tensor c = ws.product(a, i0, ti, b, j0, tj);
      tile_coefficients(c, na + i0, nb + j0, diag, scale, fn, ws);
      if (ga.defined()) {
        at::Tensor g_i = ga.narrow(0, i0, ti);
        g_i.addcmul_(a_i, ws.rows.narrow(0, 0, ti).unsqueeze(1));
        g_i.addmm_(c, b_j, 1, -1);
      }
      if (!diag && gb.defined()) {
        at::Tensor g_j = gb.narrow(0, j0, tj);
        g_j.addcmul_(b_j, c.sum(0).unsqueeze(1));
        g_j.addmm_(c.t(), a_i, 1, -1);
      }
    }
  }
}

struct Segment {
  int64_t x0, x1, y0, y1;
  int64_t n() const { return x1 - x0; }
  int64_t m() const { return y1 - y0; }
};

std::vector<Segment> segments(const at::Tensor& x_offsets, const at::Tensor& y_offsets) {
  const int64_t* xo = x_offsets.const_data_ptr<int64_t>();
  const int64_t* yo = y_offsets.const_data_ptr<int64_t>();
  std::vector<Segment> out;
  for (int64_t c = 0; c + 1 < x_offsets.numel(); ++c) out.push_back({xo[c], xo[c + 1], yo[c], yo[c + 1]});
  return out;
}

// Weights of one xx, yy and xy pair (the xy weight covers both cross blocks).
template <typename Acc>
void pair_weights(int64_t n, int64_t m, bool unbiased, Acc& wxx, Acc& wyy, Acc& wxy) {
  wxx = Acc(1) / (Acc(n) * Acc(unbiased ? n - 1 : n));
  wyy = Acc(1) / (Acc(m) * Acc(unbiased ? m - 1 : m));
  wxy = Acc(-2) / (Acc(n) * Acc(m));
}

template <typename Acc>
KernelFn<Acc> make_fn(int64_t kernel, c10::ArrayRef<double> coefs) {
  KernelFn<Acc> fn{kernel, {}};
  for (double c : coefs) fn.c.push_back(static_cast<Acc>(c));
  return fn;
}

// Linear-kernel MMD in closed form around the means: ||mean_x - mean_y||^2, minus (unbiased) each
// side's spread sum ||x_i - mean_x||^2 / (n (n - 1)). Algebraically the expanded estimator, but without
// its cancellation when the features share a large mean (DM's regime). wxx, wyy: the pair weights.
// Both sides are shifted by the class's first x row first (the value is translation-invariant): sums of
// rows around a large common mean would lose most of their digits in fp32.
template <typename Acc>
Acc linear_value(const at::Tensor& x_rows, const at::Tensor& y_rows, bool unbiased, Acc wxx, Acc wyy) {
  const at::Tensor shift = x_rows[0], xs = x_rows - shift, ys = y_rows - shift;
  const at::Tensor mx = xs.mean(0), my = ys.mean(0), delta = mx - my;
  Acc value = delta.dot(delta).template item<Acc>();
  if (unbiased) {
    value -= wxx * (xs - mx).square().sum().template item<Acc>() + wyy * (ys - my).square().sum().template item<Acc>();
  }
  return value;
}

template <typename Acc>
void forward_impl(const at::Tensor& x, const at::Tensor& y, const std::vector<Segment>& segs, int64_t kernel,
                  c10::ArrayRef<double> coefs, bool unbiased, at::Tensor& out) {
  const KernelFn<Acc> fn = make_fn<Acc>(kernel, coefs);
  const std::vector<Acc> nx = squared_norms<Acc>(x), ny = squared_norms<Acc>(y);
  Workspace<Acc> ws(x);
  Acc* o = out.data_ptr<Acc>();
  for (size_t c = 0; c < segs.size(); ++c) {
    const Segment& s = segs[c];
    if (s.n() == 0 || s.m() == 0) {
      o[c] = Acc(0);
      continue;
    }
    Acc wxx, wyy, wxy;
    pair_weights(s.n(), s.m(), unbiased, wxx, wyy, wxy);
    if (kernel == kLinear) {  // closed form around the means (translation-invariant, no cancellation)
      o[c] = linear_value<Acc>(x.narrow(0, s.x0, s.n()), y.narrow(0, s.y0, s.m()), unbiased, wxx, wyy);
      continue;
    }
    const Acc sxx = same_block_sum(x, nx.data(), s.x0, s.x1, unbiased, fn, ws);
    const Acc syy = same_block_sum(y, ny.data(), s.y0, s.y1, unbiased, fn, ws);
    const Acc sxy = cross_block_sum(x, nx.data(), s.x0, s.x1, y, ny.data(), s.y0, s.y1, fn, ws);
    o[c] = wxx * sxx + wyy * syy + wxy * sxy;
  }
}

template <typename Acc>
void backward_impl(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& y,
                   const std::vector<Segment>& segs, int64_t kernel, c10::ArrayRef<double> coefs, bool unbiased,
                   at::Tensor& gx, at::Tensor& gy) {
  const KernelFn<Acc> fn = make_fn<Acc>(kernel, coefs);
  const std::vector<Acc> nx = squared_norms<Acc>(x), ny = squared_norms<Acc>(y);
  Workspace<Acc> ws(x);
  const Acc* go = grad_out.const_data_ptr<Acc>();
  at::Tensor none;
  for (size_t c = 0; c < segs.size(); ++c) {
    const Segment& s = segs[c];
    if (s.n() == 0 || s.m() == 0) continue;
    Acc wxx, wyy, wxy;
    pair_weights(s.n(), s.m(), unbiased, wxx, wyy, wxy);
    wxx *= go[c];
    wyy *= go[c];
    wxy *= go[c];
    if (kernel == kLinear) {
      const at::Tensor shift = x[s.x0];  // as in linear_value
      const at::Tensor xs = x.narrow(0, s.x0, s.n()) - shift, ys = y.narrow(0, s.y0, s.m()) - shift;
      const at::Tensor mx = xs.mean(0), my = ys.mean(0), delta = mx - my;
      // d/dx_i: 2 (mean_x - mean_y) / n - [unbiased] 2 (x_i - mean_x) / (n (n - 1)), and symmetrically for y.
      if (gx.defined()) {
        at::Tensor g = gx.narrow(0, s.x0, s.n());
        g.copy_((delta * (2.0 * static_cast<double>(go[c]) / s.n())).unsqueeze(0).expand_as(xs));
        if (unbiased) g.add_(xs - mx, -2 * wxx);
      }
      if (gy.defined()) {
        at::Tensor g = gy.narrow(0, s.y0, s.m());
        g.copy_((delta * (-2.0 * static_cast<double>(go[c]) / s.m())).unsqueeze(0).expand_as(ys));
        if (unbiased) g.add_(ys - my, -2 * wyy);
      }
      continue;
    }
    // Symmetric blocks: d/dx_i of wxx sum_{j,k} f(d_jk^2) has c_ij = 4 wxx f'; cross: c_ij = 2 wxy f'.
    if (gx.defined()) block_grad(x, nx.data(), s.x0, s.x1, x, nx.data(), s.x0, s.x1, true, 4 * wxx, fn, gx, gx, ws);
    if (gy.defined()) block_grad(y, ny.data(), s.y0, s.y1, y, ny.data(), s.y0, s.y1, true, 4 * wyy, fn, gy, gy, ws);
    block_grad(x, nx.data(), s.x0, s.x1, y, ny.data(), s.y0, s.y1, false, 2 * wxy, fn, gx, gy, ws);
  }
}

// fp16/bf16 rows are converted to fp32 once (O((N + M) D)); fp32/fp64 are used in place.
at::Tensor accumulate(const at::Tensor& t) { return t.to(accumulate_type(t.scalar_type())).contiguous(); }

at::Tensor forward_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& x_offsets,
                       const at::Tensor& y_offsets, int64_t kernel, c10::ArrayRef<double> coefs, bool unbiased) {
  check_inputs(x, y, x_offsets, y_offsets, kernel);
  const at::Tensor xa = accumulate(x), ya = accumulate(y);
  const auto segs = segments(x_offsets, y_offsets);
  at::Tensor out = at::empty({static_cast<int64_t>(segs.size())}, xa.options());
  if (xa.scalar_type() == at::kDouble) {
    forward_impl<double>(xa, ya, segs, kernel, coefs, unbiased, out);
  } else {
    forward_impl<float>(xa, ya, segs, kernel, coefs, unbiased, out);
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& y,
                                                const at::Tensor& x_offsets, const at::Tensor& y_offsets,
                                                int64_t kernel, c10::ArrayRef<double> coefs, bool unbiased,
                                                bool need_x, bool need_y) {
  check_inputs(x, y, x_offsets, y_offsets, kernel);
  TORCH_CHECK(grad_out.numel() == x_offsets.numel() - 1, "mmd: grad_out must have one entry per class");
  const at::Tensor xa = accumulate(x), ya = accumulate(y);
  const at::Tensor go = grad_out.to(xa.scalar_type()).contiguous();
  const auto segs = segments(x_offsets, y_offsets);
  at::Tensor gx = need_x ? at::zeros_like(xa) : at::Tensor();
  at::Tensor gy = need_y ? at::zeros_like(ya) : at::Tensor();
  if (need_x || need_y) {
    if (xa.scalar_type() == at::kDouble) {
      backward_impl<double>(go, xa, ya, segs, kernel, coefs, unbiased, gx, gy);
    } else {
      backward_impl<float>(go, xa, ya, segs, kernel, coefs, unbiased, gx, gy);
    }
  }
  return {need_x ? gx.to(x.scalar_type()) : at::empty({0}, x.options()),
          need_y ? gy.to(y.scalar_type()) : at::empty({0}, y.options())};
}

}  // namespace

DDFAST_IMPL_FORWARD_BACKWARD(CPU, mmd, forward_cpu, backward_cpu)

}  // namespace mmd
}  // namespace ddfast
