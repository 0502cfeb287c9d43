"""Squared maximum mean discrepancy, plain and class-batched (docs/semantics.md#mmd)."""

from __future__ import annotations

from typing import Sequence

import torch

from .._validate import choice, class_feature_pairs, class_row_counts, feature_pair, positive_numbers
from ._op import DISPATCH, OP
from .reference import ESTIMATORS, KERNELS

__all__ = ["mmd", "class_mmd", "DISPATCH"]


def _bandwidths(kernel: str, sigmas) -> list[float]:
    choice(kernel, KERNELS, "kernel")
    if kernel == "linear":
        if sigmas is not None and len(sigmas) > 0:
            raise ValueError("sigmas must be None or empty for kernel='linear' (it has no bandwidth)")
        return []
    if sigmas is None:
        raise ValueError(f"sigmas is required for kernel={kernel!r}: give the bandwidths, e.g. sigmas=[1.0, 2.0, 4.0] "
                         "(there is no default; the scale depends on your features)")
    return positive_numbers(sigmas, "sigmas")


def mmd(x: torch.Tensor, y: torch.Tensor, kernel: str = "gaussian", sigmas: Sequence[float] | None = None,
        estimator: str = "biased") -> torch.Tensor:
    """Squared MMD between the rows of x [N, D] and y [M, D] (Gretton et al., "A Kernel Two-Sample
    Test", JMLR 2012).

    * ``estimator="biased"`` (MMD^2_b): mean k(x, x') + mean k(y, y') - 2 mean k(x, y) over all pairs,
      diagonals included; ``"unbiased"`` (MMD^2_u) leaves out i = j in the xx and yy blocks and divides
      by N(N-1) and M(M-1) (needs N >= 2 and M >= 2).
    * ``kernel="gaussian"``: sum over ``sigmas`` of exp(-||a-b||^2 / (2 s^2)); ``"imq"`` (inverse
      multiquadric): sum over ``sigmas`` of (1 + ||a-b||^2 / s^2)^(-1/2); ``"linear"``: <a, b>, whose
      biased MMD is ||mean x - mean y||^2, DM's mean matching (IDM and DM's embedding loss).
      ``sigmas`` (positive bandwidths) is required for gaussian and imq and must be None for linear.

    Squared distances are ||a||^2 + ||b||^2 - 2<a,b> clamped at 0 (as torch.cdist for large inputs).
    The fused backends never build the N x M kernel matrix: memory is O(N + M) plus a tile workspace
    of fixed size. Returns a 0-d tensor in the accumulate dtype (fp32 for fp16/bf16/fp32, fp64 for
    fp64); gradients w.r.t. x and y come in their dtype. Backends: ``auto`` runs the C++ kernels on
    CPU and the Triton kernels on CUDA once they are recorded as validated on a GPU (else the
    reference, see ``ddfast info``).
    """
    feature_pair(x, y, "x", "y")
    choice(estimator, ESTIMATORS, "estimator")
    coefs = _bandwidths(kernel, sigmas)
    need = 2 if estimator == "unbiased" else 1
    for t, name in ((x, "x"), (y, "y")):
        if t.shape[0] < need:
            raise ValueError(f"{name} has {t.shape[0]} rows; estimator={estimator!r} needs at least {need}")
    return OP(x.contiguous(), y.contiguous(), None, None, kernel, coefs, estimator)


def _grouped(features: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """Rows sorted by class (stable) and the segment offsets [K + 1] of each class's rows."""
    order = torch.argsort(labels, stable=True)
    bounds = torch.arange(num_classes + 1, device=labels.device, dtype=labels.dtype)
    return features[order].contiguous(), torch.searchsorted(labels[order], bounds)


def class_mmd(f_syn: torch.Tensor, y_syn: torch.Tensor, f_real: torch.Tensor, y_real: torch.Tensor,
              num_classes: int, kernel: str = "gaussian", sigmas: Sequence[float] | None = None,
              estimator: str = "biased", reduction: str = "sum", missing: str = "raise") -> torch.Tensor:
    """MMD between the synthetic and the real rows of each class, all classes in one fused call.

    loss_c = mmd(f_syn[y_syn == c], f_real[y_real == c], kernel, sigmas, estimator) (see :func:`mmd`
    for kernels and estimators); rows are grouped by class once (stable sort of the labels) and the
    kernels run over (class, tile) work items, not a Python loop over classes. Returns the sum over
    classes (``reduction="sum"``) or the vector [num_classes] (``"none"``), in the accumulate dtype.

    A class with no rows on either side contributes 0 (classes sharded across workers). A class with
    rows on one side only raises ValueError naming the class, unless ``missing="ignore"`` (then it
    contributes 0); the same rule as ``class_mean_distance``. The unbiased estimator needs at least 2
    rows per side for every class that contributes. Value checks (label range, missing classes)
    run in eager mode only, not under torch.compile. Gradients w.r.t. f_syn and f_real.
    """
    class_feature_pairs(f_syn, y_syn, f_real, y_real, num_classes)
    choice(estimator, ESTIMATORS, "estimator")
    choice(reduction, ("sum", "none"), "reduction")
    choice(missing, ("raise", "ignore"), "missing")
    coefs = _bandwidths(kernel, sigmas)
    if not torch.compiler.is_compiling():
        _check_classes(y_syn, y_real, num_classes, estimator, missing)
    xs, x_offsets = _grouped(f_syn, y_syn, num_classes)
    ys, y_offsets = _grouped(f_real, y_real, num_classes)
    per_class = OP(xs, ys, x_offsets, y_offsets, kernel, coefs, estimator)
    return per_class.sum() if reduction == "sum" else per_class


def _check_classes(y_syn, y_real, num_classes: int, estimator: str, missing: str) -> None:
    n_syn, n_real = class_row_counts(y_syn, y_real, num_classes, missing)
    if estimator == "unbiased":
        for c, (ns, nr) in enumerate(zip(n_syn, n_real)):
            if ns and nr and min(ns, nr) < 2:
                side = "y_syn" if ns < 2 else "y_real"
                raise ValueError(f"class {c} has 1 row in {side}; estimator='unbiased' needs at least 2 rows per side")
