"""The declaration of adjoint_step (ddfast.ops._registry): ``ddfast::adjoint_step``. It runs inside
backward passes (the adjoint unroll, and sgd_step's backward), so it has no derivative: differentiating
through it raises a clear error.

Its last argument, ``backend``, names the backend to run ("" = resolve from the caller's context, as the
public function does); sgd_step's backward passes the backend its forward resolved."""

from __future__ import annotations

import torch

from .._dtypes import accumulate_dtype
from .._flat import DECLARATION as FLAT_DECLARATION
from .._registry import FusedOp


def _fake_forward(lam, nu, direction, lr, momentum, with_velocity):
    return (torch.empty_like(lam), lam.new_empty((), dtype=accumulate_dtype(lam.dtype)),
            torch.empty_like(lam) if with_velocity else lam.new_empty(0))


OP = FusedOp(
    name="adjoint_step",
    package=__package__,
    **FLAT_DECLARATION,
    forward_schema="(Tensor lam, Tensor? nu, Tensor? direction, Tensor lr, float momentum, bool with_velocity,"
                   " str backend) -> (Tensor, Tensor, Tensor)",
    fake_forward=_fake_forward,
    results=3,
    backend_argument=True,
    not_differentiable="it is the vector work of a backward pass (use sgd_step, whose backward it is, to "
                       "differentiate through an inner step)",
)
DISPATCH = OP.dispatch
adjoint_step_op = OP.op
