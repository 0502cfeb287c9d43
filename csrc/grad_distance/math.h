// grad_distance arithmetic shared by the CPU and CUDA kernels (semantics: docs/semantics.md#grad_distance,
// ddfast/ops/grad_distance/reference.py). Torch-free.
#pragma once

#include "common/hd.h"

namespace ddfast {
namespace grad_distance {

enum Metric : int { kOurs = 0, kMse = 1, kCos = 2, kL1 = 3 };  // plan.METRIC_CODES
constexpr int kItemFields = 5;  // plan.ITEM_FIELDS: tensor, class, start, length, slot
constexpr double kEps = 1e-6;   // DC's distance_wb

// Per-element contribution to an item's three partial sums.
template <int METRIC, typename Acc>
DDFAST_HD void forward_terms(Acc gs, Acc gr, Acc& p0, Acc& p1, Acc& p2) {
  if (METRIC == kOurs || METRIC == kCos) {  // <gr,gs>, ||gr||^2, ||gs||^2
    p0 += gs * gr;
    p1 += gr * gr;
    p2 += gs * gs;
  } else if (METRIC == kMse) {
    const Acc diff = gs - gr;
    p0 += diff * diff;
  } else {
    const Acc diff = gs - gr;
    p0 += diff < Acc(0) ? -diff : diff;
  }
}

// 1 - <gr,gs> / (||gr|| ||gs|| + eps) from the sums.
template <typename Acc>
DDFAST_HD Acc cosine_distance(Acc dot, Acc sq_r, Acc sq_s) {
  return Acc(1) - dot / (dd_sqrt(sq_r) * dd_sqrt(sq_s) + Acc(kEps));
}

// One partial row's contribution to its class total (metric cos is finished by the caller).
template <typename Acc>
DDFAST_HD Acc part_contribution(int metric, Acc weight, Acc p0, Acc p1, Acc p2) {
  if (weight == Acc(0)) return Acc(0);
  return metric == kOurs ? weight * cosine_distance(p0, p1, p2) : weight * p0;
}

// dL/dgs = cross * gr + syn * gs and dL/dgr = cross * gs + real * gr for ours/cos; mse uses
// syn * (gs - gr); l1 uses syn * sign(gs - gr). The norm's gradient at 0 is 0, as in autograd.
template <typename Acc>
struct Coefficients {
  Acc cross, syn, real;
};

template <typename Acc>
DDFAST_HD Coefficients<Acc> backward_coefficients(int metric, Acc scale, Acc dot, Acc sq_r, Acc sq_s) {
  if (metric == kOurs || metric == kCos) {
    const Acc norm_r = dd_sqrt(sq_r), norm_s = dd_sqrt(sq_s);
    const Acc den = norm_r * norm_s + Acc(kEps);
    return {-(scale / den),
            norm_s > Acc(0) ? scale * dot * norm_r / (norm_s * den * den) : Acc(0),
            norm_r > Acc(0) ? scale * dot * norm_s / (norm_r * den * den) : Acc(0)};
  }
  if (metric == kMse) return {Acc(0), Acc(2) * scale, Acc(0)};
  return {Acc(0), scale, Acc(0)};
}

template <int METRIC, typename Acc>
DDFAST_HD void backward_element(Acc gs, Acc gr, const Coefficients<Acc>& c, Acc& dsyn, Acc& dreal) {
  if (METRIC == kOurs || METRIC == kCos) {
    dsyn = c.cross * gr + c.syn * gs;
    dreal = c.cross * gs + c.real * gr;
  } else if (METRIC == kMse) {
    dsyn = c.syn * (gs - gr);
    dreal = -dsyn;
  } else {
    const Acc diff = gs - gr;
    const Acc sign = diff > Acc(0) ? Acc(1) : (diff < Acc(0) ? Acc(-1) : (diff == diff ? Acc(0) : diff));
    dsyn = c.syn * sign;
    dreal = -dsyn;
  }
}

}  // namespace grad_distance
}  // namespace ddfast
