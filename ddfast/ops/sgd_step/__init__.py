"""One fused inner step of the unrolled SGD / momentum loop over flat parameters (docs/semantics.md#sgd_step).
One of the flat-vector family: its shared code is ddfast/ops/_flat.py."""

from __future__ import annotations

import torch

from .._flat import flat_step_arguments
from ._op import DISPATCH, OP

__all__ = ["sgd_step", "DISPATCH"]


def sgd_step(theta: torch.Tensor, grad: torch.Tensor, lr, velocity: torch.Tensor | None = None,
             momentum: float = 0.0):
    """One inner optimisation step over flat parameters, in one pass.

    * Plain SGD (``velocity is None`` and ``momentum == 0``): MTT's unrolled student update
      (GeorgeCazenavette/mtt-distillation ``distill.py``: ``student_params[-1] - syn_lr * grad``):
      returns ``theta - lr * grad`` only.
    * Momentum (AST's inner loop; ``velocity`` given or ``momentum != 0``; a missing velocity is 0, the
      first step): ``v' = momentum * velocity + grad``, ``theta' = theta - lr * v'``; returns
      ``(theta', v')``.

    Args:
        theta, grad, velocity: 1-D flat vectors of the same length, dtype (fp16/bf16/fp32/fp64) and device.
        lr: a 0-d floating-point tensor on the same device (it may require grad: MTT's learnable
            ``syn_lr``), or a number (a constant).
        momentum: a finite Python float (a constant, not differentiated).

    Arithmetic is in the accumulate dtype (fp32 for fp16/bf16, else the inputs'), outputs in the
    inputs' dtype. Differentiable w.r.t. theta, grad, lr and velocity with a closed-form backward that
    runs adjoint_step's fused kernel (the lr gradient -<g_theta', direction> is reduced in the same
    pass that writes the gradient of ``grad``); it supports double backward (create_graph=True
    unrolls), where the backward runs as differentiable torch ops. Backends: ``auto`` runs the C++
    kernel on CPU and, on CUDA, the CUDA kernels (fp16/bf16/fp32/fp64), else the Triton kernels
    (fp16/bf16/fp32), whichever is first recorded as validated on a GPU (``ddfast info``); the
    reference otherwise.
    """
    lr, momentum, with_velocity = flat_step_arguments({"theta": theta, "grad": grad, "velocity": velocity},
                                                      "velocity", lr, momentum)
    theta_new, v_new = OP(theta.contiguous(), grad.contiguous(), lr,
                          None if velocity is None else velocity.contiguous(), momentum, with_velocity)
    return (theta_new, v_new) if with_velocity else theta_new
