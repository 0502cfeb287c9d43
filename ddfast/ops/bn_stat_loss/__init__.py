"""BatchNorm-statistics loss of SRe2L/DELT recover (docs/semantics.md#bn_stat_loss), and a hook helper that
collects its inputs from a model."""

from __future__ import annotations

from typing import Sequence

import torch

from .._validate import float_dtype, nonnegative_number_list, tensor_list
from ._op import DISPATCH, OP
from .hooks import BNStatHooks
from .plan import accumulate_dtype

__all__ = ["bn_stat_loss", "BNStatHooks", "DISPATCH"]


def _check_statistics(stats, name: str, activations, acc: torch.dtype) -> None:
    for i, (t, a) in enumerate(zip(stats, activations)):
        if t.dtype not in (a.dtype, acc):
            allowed = a.dtype if a.dtype == acc else f"{a.dtype} or {acc}"
            raise TypeError(f"{name}[{i}] has dtype {t.dtype}; with {a.dtype} activations it must be {allowed}")
        if t.device != a.device:
            raise ValueError(f"{name}[{i}] is on {t.device} but activations[{i}] is on {a.device}")
        if t.shape != (a.shape[1],):
            raise ValueError(f"{name}[{i}] has shape {tuple(t.shape)} but activations[{i}] has {a.shape[1]} channels "
                             f"(expected shape ({a.shape[1]},))")


def bn_stat_loss(activations: Sequence[torch.Tensor], running_means: Sequence[torch.Tensor],
                 running_vars: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """BatchNorm-statistics loss of SRe2L's recover step (and DELT), all layers in one fused call.

    Reproduces SRe2L's ``BNFeatureHook`` (VILA-Lab/SRe2L, recover code) summed over layers as its
    recover loop does: for the input a_l of every BatchNorm layer,

        loss = sum_l w_l * ( ||mean_l - running_mean_l||_2 + ||var_l - running_var_l||_2 )

    with mean_l and var_l the per-channel batch mean and BIASED batch variance over every dimension
    but the channel one, and the norms NOT squared (SRe2L weights its first BN layer by
    ``first_bn_multiplier`` = 10: see :class:`BNStatHooks`).

    Args:
        activations: L tensors [B, C, H, W] (BatchNorm2d), [B, C] or [B, C, L] (BatchNorm1d). Any
            memory layout; non-contiguous ones (channels_last included) are copied to contiguous first.
        running_means, running_vars: L tensors [C], in the activations' dtype or, for fp16/bf16
            activations, in fp32 (BatchNorm buffers under autocast).
        weights: L non-negative finite numbers; default all 1.

    Returns a 0-d tensor in the accumulate dtype: fp32 for fp16/bf16/fp32 activations, fp64 for fp64.
    Statistics are single-pass shifted sums in the accumulate dtype (E[(x-K)^2] - E[x-K]^2 with K the
    channel's first element), which keeps fp32 accurate for activations with a large mean.
    Differentiable w.r.t. the activations (gradients in their dtype) and also w.r.t. the running
    statistics where they require grad (SRe2L reads them as constants through ``.data``; BatchNorm
    buffers do not require grad, so by default none is computed). Where a norm is 0 its subgradient
    0 is used, as in torch.linalg.vector_norm's backward. Backends: ``auto`` uses the C++ kernels on
    CPU; on CUDA the Triton kernels (one launch for the statistics of all layers, one finalize, one
    backward launch) once recorded as validated on a GPU (see ``ddfast info``), else the reference.
    """
    activations = tensor_list(activations, "activations")
    running_means = tensor_list(running_means, "running_means")
    running_vars = tensor_list(running_vars, "running_vars")
    if not activations:
        raise ValueError("activations is empty: bn_stat_loss needs at least one layer")
    for name, other in (("running_means", running_means), ("running_vars", running_vars)):
        if len(other) != len(activations):
            raise ValueError(f"activations has {len(activations)} tensors but {name} has {len(other)}")
    ref = activations[0]
    float_dtype(ref, "activations[0]")
    for i, a in enumerate(activations):
        if a.dtype != ref.dtype:
            raise TypeError(f"activations[{i}] has dtype {a.dtype} but activations[0] has {ref.dtype}")
        if a.device != ref.device:
            raise ValueError(f"activations[{i}] is on {a.device} but activations[0] is on {ref.device}")
        if a.dim() not in (2, 3, 4):
            raise ValueError(f"activations[{i}] has {a.dim()} dimensions (shape {tuple(a.shape)}); expected "
                             f"[B, C], [B, C, L] or [B, C, H, W]")
        if a.numel() == 0:
            raise ValueError(f"activations[{i}] has shape {tuple(a.shape)}: no elements to take statistics of")
    acc = accumulate_dtype(ref.dtype)
    _check_statistics(running_means, "running_means", activations, acc)
    _check_statistics(running_vars, "running_vars", activations, acc)
    weights = [1.0] * len(activations) if weights is None else nonnegative_number_list(weights, len(activations),
                                                                                        "weights")
    activations = [a.contiguous() for a in activations]
    running_means = [t.to(acc).contiguous() for t in running_means]
    running_vars = [t.to(acc).contiguous() for t in running_vars]
    # The custom op under torch.compile, else the eager autograd.Function (ddfast.ops._registry).
    return OP(activations, running_means, running_vars, weights)
