"""The vector work of one reverse step of the adjoint unroll (docs/semantics.md#adjoint_step). One of the
flat-vector family: its shared code is ddfast/ops/_flat.py."""

from __future__ import annotations

import torch

from .._flat import flat_step_arguments
from ._op import DISPATCH, OP

__all__ = ["adjoint_step", "DISPATCH"]


def adjoint_step(lam: torch.Tensor, nu: torch.Tensor | None, direction: torch.Tensor, lr, momentum: float = 0.0):
    """One reverse step of the adjoint sweep through an SGD or momentum inner loop, in one pass.

    docs/semantics.md#adjoint_step (MTT's unrolled SGD; AST's momentum form v' = mu v + g, theta' = theta - lr v'):
    going back through step n with ``lam`` = dL/dtheta_{n+1} and ``nu`` = dL/dv_{n+1},

    * ``u = nu - lr * lam`` (``nu=None``: plain SGD, ``u = -lr * lam``); the caller then forms
      lambda_n = lambda_{n+1} + H_n u and the image/label gradients with one vector-Jacobian product;
    * ``dlr = -<lam, direction>``, this step's contribution to dL/dlr (``direction`` = g_n for plain
      SGD, v_{n+1} with momentum), a 0-d tensor in the accumulate dtype (fp32 for fp16/bf16/fp32,
      fp64 for fp64);
    * momentum form only: ``nu_next = momentum * u``, the velocity adjoint dL/dv_n.

    Args:
        lam, direction, nu: 1-D vectors of the same length, dtype and device.
        lr: the step's learning rate, a 0-d floating-point tensor on the same device or a number.
        momentum: a finite Python float (AST's mu).

    Returns ``(u, dlr)`` for plain SGD (``nu is None`` and ``momentum == 0``), else
    ``(u, dlr, nu_next)`` - like sgd_step, plain SGD returns only what it computes. u and nu_next come
    in the inputs' dtype. Not differentiable (it runs inside a backward pass): differentiating through
    it raises RuntimeError. Backends: ``auto`` runs the C++ kernel on CPU and, on CUDA, the CUDA
    kernels (fp16/bf16/fp32/fp64), else the Triton kernels (fp16/bf16/fp32), whichever is first
    recorded as validated on a GPU; the reference otherwise.
    """
    lr, momentum, with_velocity = flat_step_arguments({"lam": lam, "direction": direction, "nu": nu}, "nu", lr,
                                                      momentum)
    u, dlr, nu_next = OP(lam.contiguous(), None if nu is None else nu.contiguous(), direction.contiguous(), lr,
                         momentum, with_velocity, "")
    return (u, dlr, nu_next) if with_velocity else (u, dlr)
