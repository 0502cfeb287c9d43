"""Class-mean distance of distribution matching (docs/semantics.md#class_mean_distance)."""

from __future__ import annotations

import torch

from .._validate import choice, class_feature_pairs, class_row_counts
from ._op import DISPATCH, OP

__all__ = ["class_mean_distance", "DISPATCH"]


def class_mean_distance(f_syn: torch.Tensor, y_syn: torch.Tensor, f_real: torch.Tensor, y_real: torch.Tensor,
                        num_classes: int, reduction: str = "sum", missing: str = "raise") -> torch.Tensor:
    """Squared distance between per-class feature means of a synthetic and a real set.

    DM's loss (Zhao & Bilen, WACV 2023; VICO-UoE/DatasetCondensation ``main_DM.py``), computed for
    all classes at once instead of one embedding, mean and distance per class:
    ``loss_c = || mean_{y_real = c} f_real - mean_{y_syn = c} f_syn ||^2``.

    Args:
        f_syn, f_real: [N_syn, D] and [N_real, D] features (same D, dtype, device), rows in any order.
        y_syn, y_real: int64 class labels in [0, num_classes), one per row.
        reduction: ``"sum"`` (a 0-d tensor, the sum over classes) or ``"none"`` (the [K] vector).
        missing: a class with rows on one side only raises ``ValueError`` (``"raise"``) or contributes 0
            (``"ignore"``). A class absent on both sides always contributes 0 (classes sharded across
            ranks). The check reads label values, so it runs in eager mode only; under torch.compile
            such a class contributes 0.

    Returns the loss in the accumulate dtype (fp32 for fp16/bf16/fp32, fp64 for fp64), differentiable
    w.r.t. both feature sets (gradients in the features' dtype). Backends: ``auto`` runs the C++
    kernel on CPU (one segment-sum pass over rows, no class loop) and on CUDA the Triton kernels once
    recorded as validated on a GPU (``ddfast info``); the reference otherwise.
    """
    class_feature_pairs(f_syn, y_syn, f_real, y_real, num_classes)
    choice(reduction, ("sum", "none"), "reduction")
    choice(missing, ("raise", "ignore"), "missing")
    if not torch.compiler.is_compiling() and missing == "raise":
        class_row_counts(y_syn, y_real, num_classes, missing)
    return OP(f_syn.contiguous(), y_syn.contiguous(), f_real.contiguous(), y_real.contiguous(), num_classes,
              reduction == "none")

