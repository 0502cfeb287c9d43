"""Class-mean distance of distribution matching (OPS.md section 2)."""

from __future__ import annotations

import torch

from .._validate import choice, feature_pair, labels_for, labels_in_range, num_classes_arg
from ._op import DISPATCH, class_mean_distance_op

__all__ = ["class_mean_distance", "DISPATCH"]


def class_mean_distance(f_syn: torch.Tensor, y_syn: torch.Tensor, f_real: torch.Tensor, y_real: torch.Tensor,
                        num_classes: int, reduction: str = "sum", missing: str = "raise") -> torch.Tensor:
    """Squared distance between per-class feature means of a synthetic and a real set.

    DM's loss (Zhao & Bilen, WACV 2023; VICO-UoE/DatasetCondensation ``main_DM.py``), computed for
    all classes at once instead of one embedding, mean and distance per class:
    ``loss_c = || mean_{y_real = c} f_real - mean_{y_syn = c} f_syn ||^2``.

    Args:
        f_syn, f_real: [N_syn, D] and [N_real, D] features (same D, dtype, device), rows in any order.
        y_syn, y_real: integer class labels in [0, num_classes), one per row.
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
    feature_pair(f_syn, f_real)
    y_syn = labels_for(y_syn, f_syn, "y_syn", "f_syn")
    y_real = labels_for(y_real, f_real, "y_real", "f_real")
    num_classes = num_classes_arg(num_classes)
    choice(reduction, ("sum", "none"), "reduction")
    choice(missing, ("raise", "ignore"), "missing")
    if not torch.compiler.is_compiling():
        labels_in_range(y_syn, num_classes, "y_syn")
        labels_in_range(y_real, num_classes, "y_real")
        if missing == "raise":
            _raise_on_one_sided_classes(y_syn, y_real, num_classes)
    out, _, _ = class_mean_distance_op(f_syn.contiguous(), y_syn.contiguous(), f_real.contiguous(),
                                       y_real.contiguous(), num_classes, reduction == "none")
    return out


def _raise_on_one_sided_classes(y_syn: torch.Tensor, y_real: torch.Tensor, num_classes: int) -> None:
    in_syn = torch.bincount(y_syn, minlength=num_classes) > 0
    in_real = torch.bincount(y_real, minlength=num_classes) > 0
    one_sided = (in_syn ^ in_real).nonzero().flatten().tolist()
    if one_sided:
        c = one_sided[0]
        side, other = ("y_syn", "y_real") if in_syn[c] else ("y_real", "y_syn")
        raise ValueError(f"class {c} has rows in {side} but none in {other} ({len(one_sided)} such classes: "
                         f"{one_sided[:10]}); pass missing='ignore' to let them contribute 0")
