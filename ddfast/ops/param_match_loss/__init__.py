"""MTT's parameter-matching loss over flat parameter vectors (docs/semantics.md#param_match_loss). One of
the flat-vector family: its shared code is ddfast/ops/_flat.py."""

from __future__ import annotations

import torch

from .._flat import flat_vectors
from ._op import DISPATCH, OP

__all__ = ["param_match_loss", "DISPATCH"]


def param_match_loss(theta_n: torch.Tensor, theta_start: torch.Tensor, theta_target: torch.Tensor) -> torch.Tensor:
    """Trajectory-matching loss ``||theta_n - theta_target||^2 / ||theta_start - theta_target||^2``.

    MTT's ``param_loss / param_dist`` (Cazenavette et al., CVPR 2022; GeorgeCazenavette/mtt-distillation
    ``distill.py``), with both sums taken in ONE pass over the three vectors instead of two
    ``mse_loss(..., reduction="sum")`` calls and a division.

    Args:
        theta_n: the student's flat parameters after N inner steps, 1-D of P elements.
        theta_start: the expert checkpoint the unroll started from (MTT's ``starting_params``).
        theta_target: the expert checkpoint to match (MTT's ``target_params``).
        All three: 1-D, same length, dtype (fp16/bf16/fp32/fp64) and device.

    Returns a 0-d tensor in the accumulate dtype (fp32 for fp16/bf16/fp32 inputs, fp64 for fp64),
    differentiable w.r.t. all three vectors (closed-form gradients in the inputs' dtype; first order:
    differentiating the gradient again raises). No epsilon: theta_start == theta_target gives inf or
    NaN, as the formula does. Backends: ``auto`` runs the C++ kernel on CPU and, on CUDA, the CUDA
    kernels (fp16/bf16/fp32/fp64), else the Triton kernels (fp16/bf16/fp32), whichever is first recorded
    as validated on a GPU (``ddfast info``); the reference otherwise. CUDA is preferred for its lower host
    overhead per launch at these launch-bound sizes; the order is a default to confirm by benchmark.
    """
    flat_vectors({"theta_n": theta_n, "theta_start": theta_start, "theta_target": theta_target})
    return OP(theta_n.contiguous(), theta_start.contiguous(), theta_target.contiguous())
