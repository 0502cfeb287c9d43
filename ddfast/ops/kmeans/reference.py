"""Pure-PyTorch k-means steps: THE specification (docs/semantics.md#kmeans).

Rows are grouped by class: ``x`` [N, D] holds the rows of class 0, then class 1, ... and
``offsets`` [K + 1] (int64) gives each class's row range; ``centroids`` [K, k, D] holds each class's
k centroids in the accumulate dtype (fp32 for fp16/bf16/fp32 rows, fp64 for fp64). A row is only
ever compared with the centroids of its own class. The plain (one-class) call is K = 1.

Distances are squared euclidean. The assignment minimises, over the class's centroids j,
``s_j = ||c_j||^2 - 2 <x, c_j>`` (the GEMM form, like torch.cdist's matmul path; ||x||^2 is the same
for every j), taking the first (lowest) j on ties; a NaN score counts as the minimum (as
torch.argmin does), so NaN propagates. The row's distance is then computed directly,
``||x - c_j||^2`` for the chosen j: the expanded form loses the digits of a small distance between
large vectors in fp32 (rows near their centroid: the inertia, k-means++ weights). Products and sums
are in the accumulate dtype.

Backend contract (shared by cpp and triton):

* ``assign(x, centroids, offsets, with_distance)`` -> ``(assignment int64 [N] in [0, k), distance acc [N])``;
  without ``with_distance`` the distance is an empty [0] tensor and its pass over the rows is skipped
  (the Lloyd iterations only need the assignment).
* ``update(x, assignment, offsets, centroids)`` -> ``(new acc [K, k, D], counts int64 [K, k])``:
  each centroid becomes the mean of the rows assigned to it (sums in the accumulate dtype, in
  row order on CPU); a centroid with no rows keeps its previous value (``centroids``).
* ``nearest(x, centroids, offsets, excluded)`` -> ``(index int64 [K, k], distance acc [K, k])``: for
  every centroid the row of its class minimising ``t_i = ||x_i||^2 - 2 <x_i, c>`` (the lowest row
  index on ties, NaN counts as the minimum), as an index into ``x``, and its distance ``||x_i - c||^2``
  computed directly; rows with ``excluded[i]`` set are skipped (``excluded`` is bool [N], or empty for none).
  A class without an eligible row gives index -1 and distance inf.
"""

from __future__ import annotations

import torch

from .._dtypes import accumulate_dtype  # noqa: F401 - re-exported: the public functions and tests use it from here


def _scores(rows: torch.Tensor, cents: torch.Tensor) -> torch.Tensor:
    """[n, m] matrix ||c_j||^2 - 2 <x_i, c_j> (the spec materialises it; the fused kernels do not)."""
    return (cents * cents).sum(1)[None, :] - 2.0 * (rows @ cents.T)


def _class_ranges(offsets: torch.Tensor):
    bounds = offsets.tolist()
    return list(zip(bounds[:-1], bounds[1:]))


def assign(x: torch.Tensor, centroids: torch.Tensor, offsets: torch.Tensor, with_distance: bool):
    acc = centroids.dtype
    assignment = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    distance = torch.zeros(x.shape[0] if with_distance else 0, dtype=acc, device=x.device)
    for c, (lo, hi) in enumerate(_class_ranges(offsets)):
        if hi == lo:
            continue
        rows = x[lo:hi].to(acc)
        scores = _scores(rows, centroids[c])
        best = torch.argmin(scores, dim=1)  # first index on ties; NaN is the minimum
        assignment[lo:hi] = best
        if with_distance:
            distance[lo:hi] = (rows - centroids[c][best]).square().sum(1)
    return assignment, distance


def update(x: torch.Tensor, assignment: torch.Tensor, offsets: torch.Tensor, centroids: torch.Tensor):
    num_classes, k, dim = centroids.shape
    acc = centroids.dtype
    new = centroids.clone()
    counts = torch.zeros(num_classes, k, dtype=torch.int64, device=x.device)
    for c, (lo, hi) in enumerate(_class_ranges(offsets)):
        if hi == lo:
            continue
        sums = torch.zeros(k, dim, dtype=acc, device=x.device).index_add_(0, assignment[lo:hi], x[lo:hi].to(acc))
        n = torch.bincount(assignment[lo:hi], minlength=k)
        counts[c] = n
        filled = n > 0
        new[c] = torch.where(filled[:, None], sums / n.clamp(min=1)[:, None].to(acc), centroids[c])
    return new, counts


def nearest(x: torch.Tensor, centroids: torch.Tensor, offsets: torch.Tensor, excluded: torch.Tensor):
    num_classes, k, _ = centroids.shape
    acc = centroids.dtype
    index = torch.full((num_classes, k), -1, dtype=torch.int64, device=x.device)
    distance = torch.full((num_classes, k), float("inf"), dtype=acc, device=x.device)
    for c, (lo, hi) in enumerate(_class_ranges(offsets)):
        rows = torch.arange(lo, hi, device=x.device)
        if excluded.numel():
            rows = rows[~excluded[lo:hi]]
        if rows.numel() == 0:
            continue
        xr = x[rows].to(acc)
        cents = centroids[c]
        scores = (xr * xr).sum(1)[:, None] - 2.0 * (xr @ cents.T)  # [rows, k]
        best = torch.argmin(scores, dim=0)  # lowest row on ties; NaN is the minimum
        index[c] = rows[best]
        distance[c] = (xr[best] - cents).square().sum(1)
    return index, distance
