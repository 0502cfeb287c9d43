"""Batched k-means and the nearest-row-to-centroid query (docs/semantics.md#kmeans).

The package holds both kinds: its three steps (kmeans_assign, kmeans_update, kmeans_nearest) are fused ops,
declared in ``_op.py`` with their backend modules beside it; ``kmeans`` and ``nearest_to_centroids`` here are
a composite, the Python driver (initialisation, the Lloyd loop, stopping) that runs them (docs/DESIGN.md,
"Layout as built")."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .._validate import class_labels, feature_matrix, optional_generator, positive_int, real_number
from ._op import ASSIGN, DISPATCH, NEAREST, UPDATE
from .reference import accumulate_dtype

__all__ = ["kmeans", "nearest_to_centroids", "KMeansResult", "DISPATCH"]

INITS = ("kmeans++", "random")


class KMeansResult(NamedTuple):
    """What :func:`kmeans` returns (no tensor carries a gradient history).

    centroids: [k, D], or [K, k, D] with ``labels``, in the accumulate dtype (fp32 for fp16/bf16/fp32
        rows, fp64 for fp64).
    assignments: int64 [N], for every row of ``x`` (its original order) the index in [0, k) of its
        centroid among its class's centroids.
    inertia: sum of squared distances of the rows to their centroids, 0-d or [K], accumulate dtype.
    counts: int64 [k] or [K, k], rows per centroid.
    iterations: the number of Lloyd update steps run (``iters`` unless ``tol`` stopped it earlier).
    """

    centroids: torch.Tensor
    assignments: torch.Tensor
    inertia: torch.Tensor
    counts: torch.Tensor
    iterations: int


def _group(x: torch.Tensor, labels, num_classes: int | None):
    """Rows grouped by class: (rows, order or None, offsets [K + 1], class of every grouped row)."""
    if labels is None:
        offsets = torch.tensor([0, x.shape[0]], dtype=torch.int64, device=x.device)
        return x.contiguous(), None, offsets, torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    if not torch.compiler.is_compiling() and bool((labels[1:] >= labels[:-1]).all()):
        # already grouped (class-major data): no sort, no gathered copy of x
        offsets = torch.searchsorted(labels, torch.arange(num_classes + 1, device=x.device))
        return x.contiguous(), None, offsets, labels
    sorted_labels, order = torch.sort(labels, stable=True)
    offsets = torch.searchsorted(sorted_labels, torch.arange(num_classes + 1, device=x.device))
    return x[order].contiguous(), order, offsets, sorted_labels


def _check_class_sizes(offsets: torch.Tensor, k: int, what: str) -> None:
    """Every class needs at least k rows (a value check: eager mode only)."""
    if torch.compiler.is_compiling():
        return
    sizes = (offsets[1:] - offsets[:-1]).tolist()
    for c, n in enumerate(sizes):
        if n < k:
            where = f"class {c} has" if len(sizes) > 1 else "x has"
            raise ValueError(f"k={k} is larger than the number of rows: {where} {n} rows ({what})")


def _uniform(n: int, generator, device) -> torch.Tensor:
    """n draws from U[0, 1) in fp64, drawn on the generator's device and moved to ``device``."""
    where = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(n, generator=generator, dtype=torch.float64, device=where).to(device)


def _pick(lo: torch.Tensor, n: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """A row in [lo, lo + n) from u in [0, 1)."""
    return lo + torch.minimum((u * n).long(), n - 1)


def _init_random(x_s, offsets, sorted_labels, k, generator):
    """k distinct rows of each class, uniformly without replacement (one sort of per-row random keys)."""
    keys = sorted_labels.to(torch.float64) + _uniform(x_s.shape[0], generator, x_s.device)
    perm = torch.argsort(keys)  # class-major, a random permutation inside each class
    rows = perm[offsets[:-1, None] + torch.arange(k, device=x_s.device)]
    return x_s[rows].to(accumulate_dtype(x_s.dtype))


def _init_kmeans_plus_plus(x_s, offsets, k, generator):
    """k-means++ seeding (Arthur & Vassilvitskii 2007, one candidate per step as in scipy's _kpp):
    the first centroid is a uniform row of the class, each next one a row drawn with probability
    proportional to its squared distance to the nearest centroid chosen so far. The distances come
    from the fused assignment kernel (one centroid per class per step), the draw from a prefix sum."""
    acc = accumulate_dtype(x_s.dtype)
    lo, hi = offsets[:-1], offsets[1:]
    n = hi - lo
    rows = _pick(lo, n, _uniform(lo.shape[0], generator, x_s.device))
    chosen = [x_s[rows].to(acc)]
    _, d2 = ASSIGN(x_s, chosen[0][:, None], offsets, True)
    for _ in range(1, k):
        cum = torch.cat([d2.new_zeros(1, dtype=torch.float64), torch.cumsum(d2.to(torch.float64), 0)])
        before, total = cum[lo], cum[hi] - cum[lo]
        u = _uniform(lo.shape[0], generator, x_s.device)
        drawn = torch.searchsorted(cum, before + u * total, right=True) - 1  # cum[i] <= target < cum[i + 1]
        drawn = torch.minimum(torch.maximum(drawn, lo), hi - 1)
        # Every row already sits on a chosen centroid (duplicates): fall back to a uniform row.
        rows = torch.where(total > 0, drawn, _pick(lo, n, u))
        chosen.append(x_s[rows].to(acc))
        _, d_new = ASSIGN(x_s, chosen[-1][:, None], offsets, True)
        d2 = torch.minimum(d2, d_new)
    return torch.stack(chosen, dim=1)


def _check_init_tensor(init, x, shape) -> torch.Tensor:
    if not torch.is_floating_point(init):
        raise TypeError(f"init has dtype {init.dtype}; initial centroids must be floating point")
    if init.device != x.device:
        raise ValueError(f"init is on {init.device} but x is on {x.device}")
    if tuple(init.shape) != shape:
        raise ValueError(f"init must have shape {shape} (initial centroids), got {tuple(init.shape)}")
    return init.detach().to(accumulate_dtype(x.dtype)).clone()


def kmeans(x: torch.Tensor, k: int, iters: int = 100, init="kmeans++", generator: torch.Generator | None = None,
           labels: torch.Tensor | None = None, num_classes: int | None = None,
           tol: float | None = None) -> KMeansResult:
    """Lloyd's k-means with squared euclidean distances, for one set of rows or for every class at once.

    DREAM / DREAM+ (Liu et al., ICCV 2023; lyq312318224/DREAM, its ``query`` / ``query_match`` sampling
    helpers) cluster each class's real embeddings with fast_pytorch_kmeans'
    ``KMeans(n_clusters=n, mode='euclidean')`` (n = ipc for the initialisation, batch_real for the matching)
    (Lloyd, at most 100 iterations, stop when the squared centroid shift is <= 1e-4) and then take the
    image nearest each centroid (:func:`nearest_to_centroids`). This function runs those iterations
    with fused kernels and, given ``labels``, for all classes in the same launches: each class's rows
    are clustered against its own k centroids only.

    Each iteration is one assignment launch (argmin of the distances per row, tiled over centroids: no
    N x k matrix is stored) and one update launch (deterministic segment means). After the last
    update a final assignment gives ``assignments`` and ``inertia`` for the returned centroids
    (as scikit-learn's ``KMeans`` does).

    Args:
        x: [N, D] rows (fp16/bf16/fp32/fp64); distances and means are accumulated in fp32 (fp64 for fp64).
        k: clusters per class, 1 <= k <= rows of every class.
        iters: maximum number of Lloyd iterations (assignment + update), >= 1.
        init: ``"kmeans++"`` (k-means++ seeding from ``generator``; plain k-means++, one candidate per
            step, not scikit-learn's greedy variant), ``"random"`` (k distinct rows of each class drawn
            uniformly from ``generator``; fast_pytorch_kmeans' default draws rows at random too), or a
            tensor of initial centroids, [k, D] (or [K, k, D] with ``labels``).
        generator: the torch.Generator of the random draws (the default generator when None); draws
            are made on its device.
        labels, num_classes: int64 [N] class labels in [0, num_classes): cluster each class separately
            in one call. Both or neither.
        tol: None runs exactly ``iters`` iterations (no host synchronisation). A number stops a class
            once the sum over its centroids of the squared shift of one update is <= tol (that update
            is kept, as fast_pytorch_kmeans does); the loop ends when every class has stopped (one
            host synchronisation per iteration). DREAM's setting is ``iters=100, tol=1e-4``.

    Semantics: ties go to the lowest centroid index; a centroid that loses all its rows keeps its
    previous position (fast_pytorch_kmeans moves it to the origin, scikit-learn relocates it to a far
    row; neither is a named option here). NaN rows propagate to their centroid. Outputs carry no
    gradient.

    Returns a :class:`KMeansResult`. Backends: ``auto`` runs the C++ kernels on CPU and, on CUDA, the
    Triton kernels once recorded as validated on a GPU (``ddfast info``); the reference otherwise.
    """
    feature_matrix(x, "x")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x must have at least one row and one feature, got shape {tuple(x.shape)}")
    positive_int(k, "k")
    positive_int(iters, "iters")
    optional_generator(generator)
    if tol is not None:
        tol = real_number(tol, "tol")
    if (labels is None) != (num_classes is None):
        raise ValueError("labels and num_classes go together: pass both to cluster each class, or neither")
    if labels is not None:
        positive_int(num_classes, "num_classes")
        class_labels(labels, x, num_classes, "labels", "x")
    num_groups = 1 if labels is None else num_classes
    if isinstance(init, torch.Tensor):
        shape = (k, x.shape[1]) if labels is None else (num_classes, k, x.shape[1])
        init = _check_init_tensor(init, x, shape).reshape(num_groups, k, x.shape[1])
    elif init not in INITS:
        raise ValueError(f"init must be one of {INITS} or a tensor of initial centroids, got {init!r}")

    with torch.no_grad():
        x_s, order, offsets, sorted_labels = _group(x.detach(), labels, num_classes)
        _check_class_sizes(offsets, k, "k-means needs at least k rows per class")
        if isinstance(init, torch.Tensor):
            cents = init
        elif init == "random":
            cents = _init_random(x_s, offsets, sorted_labels, k, generator)
        else:
            cents = _init_kmeans_plus_plus(x_s, offsets, k, generator)
        active = torch.ones(num_groups, dtype=torch.bool, device=x.device)
        done = 0
        for _ in range(iters):
            assignment, _ = ASSIGN(x_s, cents, offsets, False)
            new, _ = UPDATE(x_s, assignment, offsets, cents)
            done += 1
            if tol is None:
                cents = new
                continue
            shift = (new - cents).square().sum((1, 2))
            cents = torch.where(active[:, None, None], new, cents)
            active = active & ~(shift <= tol)  # NaN shifts keep iterating, as in fast_pytorch_kmeans
            if not bool(active.any()):
                break
        assignment, distance = ASSIGN(x_s, cents, offsets, True)
        inertia = torch.segment_reduce(distance, "sum", offsets=offsets, initial=0)
        counts = torch.bincount(sorted_labels * k + assignment, minlength=num_groups * k).reshape(num_groups, k)
        if order is not None:
            assignment = torch.empty_like(assignment).index_copy_(0, order, assignment)
    if labels is None:
        return KMeansResult(cents[0], assignment, inertia[0], counts[0], done)
    return KMeansResult(cents, assignment, inertia, counts, done)


def nearest_to_centroids(x: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor | None = None,
                         distinct: bool = False) -> torch.Tensor:
    """For every centroid, the index of the row of ``x`` nearest to it (squared euclidean distance).

    DREAM's representative sampling (lyq312318224/DREAM, ``query``): after k-means over a class's
    embeddings, the images to match are ``argmin`` over the class's rows of the distance to each
    centroid. This runs as one fused launch over all classes (rows tiled, no N x k matrix).

    Args:
        x: [N, D] rows (fp16/bf16/fp32/fp64).
        centroids: [k, D], or [K, k, D] with ``labels`` (any floating dtype; compared in x's
            accumulate dtype: fp32, fp64 for fp64 rows).
        labels: int64 [N] in [0, K): each class's centroids only look at the rows of that class.
        distinct: False (DREAM's semantics): each centroid takes its nearest row, so two centroids may
            pick the same row. True: the centroids of a class pick in order 0, 1, ..., k - 1, each the
            nearest row not already picked by an earlier centroid of its class (a greedy matching, k
            launches of one centroid per class; needs k rows per class).

    Ties go to the lowest row index (duplicate rows: the first copy). NaN distances count as the
    minimum, as in torch.argmin. Returns int64 indices into ``x``'s rows, [k] or [K, k], no gradient.
    """
    feature_matrix(x, "x")
    if x.shape[0] == 0:
        raise ValueError("x has no rows")
    if not isinstance(centroids, torch.Tensor):
        raise TypeError(f"centroids must be a torch.Tensor, got {type(centroids).__name__}")
    if not torch.is_floating_point(centroids):
        raise TypeError(f"centroids has dtype {centroids.dtype}; it must be floating point")
    if centroids.device != x.device:
        raise ValueError(f"centroids is on {centroids.device} but x is on {x.device}")
    want_dim = 2 if labels is None else 3
    if centroids.dim() != want_dim or centroids.shape[-1] != x.shape[1] or centroids.shape[-2] == 0:
        layout = "[k, D]" if labels is None else "[K, k, D] (with labels)"
        raise ValueError(f"centroids must be {layout} with k >= 1 and D = {x.shape[1]} (x's features), got shape "
                         f"{tuple(centroids.shape)}")
    if not isinstance(distinct, bool):
        raise TypeError(f"distinct must be a bool, got {type(distinct).__name__}")
    num_classes = 1 if labels is None else centroids.shape[0]
    if labels is not None:
        class_labels(labels, x, num_classes, "labels", "x")
    k = centroids.shape[-2]
    with torch.no_grad():
        x_s, order, offsets, _ = _group(x.detach(), labels, num_classes)
        _check_class_sizes(offsets, k if distinct else 1,
                           "distinct=True needs k rows per class" if distinct else "every class needs a row")
        cents = centroids.detach().to(accumulate_dtype(x.dtype)).reshape(num_classes, k, x.shape[1]).contiguous()
        if not distinct:
            index, _ = NEAREST(x_s, cents, offsets, x_s.new_empty(0, dtype=torch.bool))
        else:
            excluded = torch.zeros(x_s.shape[0], dtype=torch.bool, device=x.device)
            picks = []
            for j in range(k):
                pick, _ = NEAREST(x_s, cents[:, j:j + 1].contiguous(), offsets, excluded)
                picks.append(pick)
                excluded = excluded.index_fill(0, pick[:, 0].clamp(min=0), True) | excluded
            index = torch.cat(picks, dim=1)
        if order is not None:
            index = torch.where(index >= 0, order[index.clamp(min=0)], index)
    return index[0] if labels is None else index
