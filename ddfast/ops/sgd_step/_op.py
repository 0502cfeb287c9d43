"""The declaration of sgd_step (ddfast.ops._registry): ``ddfast::sgd_step`` (theta' and, in momentum form,
v'). Its backward runs another declared op, ``ddfast::adjoint_step``, with the backend its forward
resolved: there is no ``sgd_step_backward`` op.

The backward is the step's vector-Jacobian product, which is adjoint_step's computation
(ddfast/ops/adjoint_step/): with cotangents gt for theta' and gv for v' (0 for plain SGD),
u = gv - lr gt is the gradient of ``grad``, momentum * u that of ``velocity``, -<gt, direction> that of
lr (direction = grad, or v' with momentum) and gt that of theta. When autograd records the backward itself
(create_graph=True with inputs that require grad, MTT's "autograd" unroll differentiated twice), the
same formula runs as differentiable torch ops instead (ddfast.ops._higher_order), so double backward is exact."""

from __future__ import annotations

import torch

from .._higher_order import input_gradients
from .._flat import DECLARATION as FLAT_DECLARATION
from .._registry import FusedOp
from ..adjoint_step import reference as adjoint_reference
from ..adjoint_step._op import OP as ADJOINT_STEP


def _fake_forward(theta, grad, lr, velocity, momentum, with_velocity):
    return torch.empty_like(theta), torch.empty_like(theta) if with_velocity else theta.new_empty(0)


def _backward(s, grad_theta, grad_velocity):
    """(d theta, d grad, d lr, d velocity): adjoint_step on the forward's backend, or its reference as torch
    ops when autograd records the pass."""
    gv = grad_velocity if s.with_velocity else None
    direction = s.v_new if s.with_velocity else s.grad  # of the lr gradient: grad for plain SGD, v' with momentum
    need_lr = s.needs["lr"]
    u, dlr, nu_next = input_gradients(
        "sgd_step", s.backend, (grad_theta, gv, direction, s.lr),
        kernel=lambda: s.kernel(grad_theta.contiguous(), None if gv is None else gv.contiguous(),
                                direction if need_lr else None, s.lr, s.momentum,
                                s.with_velocity and s.needs["velocity"]),
        differentiable=lambda: adjoint_reference.forward(grad_theta, gv, direction, s.lr, s.momentum,
                                                         s.with_velocity))
    return grad_theta, u, dlr.to(s.lr.dtype) if need_lr else None, nu_next


OP = FusedOp(
    name="sgd_step",
    package=__package__,
    **FLAT_DECLARATION,
    forward_schema="(Tensor theta, Tensor grad, Tensor lr, Tensor? velocity, float momentum, bool with_velocity)"
                   " -> (Tensor, Tensor)",
    fake_forward=_fake_forward,
    results=2,
    saved_inputs=("grad", "lr"),  # the backward reads no other input (it has no reference_vjp)
    saved_outputs={"v_new": 1},
    grads_of=("theta", "grad", "lr", "velocity"),
    backward=_backward,
    backward_with=ADJOINT_STEP,
)
DISPATCH = OP.dispatch
sgd_step_op = OP.op
