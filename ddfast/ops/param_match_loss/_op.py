"""The declaration of param_match_loss (ddfast.ops._registry): ``ddfast::param_match_loss`` (the loss and
its two sums) and ``ddfast::param_match_loss_backward`` (gradients of the three vectors). No tensor-list
arguments, so eager mode calls the custom op too. Differentiating the backward again runs the reference's
differentiable gradients (ddfast.ops._higher_order)."""

from __future__ import annotations

import torch

from .._dtypes import accumulate_dtype
from .._higher_order import input_gradients
from .._flat import DECLARATION as FLAT_DECLARATION
from .._registry import FusedOp


def _fake_forward(theta_n, theta_start, theta_target):
    acc = accumulate_dtype(theta_n.dtype)
    return theta_n.new_empty((), dtype=acc), theta_n.new_empty(2, dtype=acc)


def _fake_backward(grad_out, theta_n, theta_start, theta_target, sums, need_n, need_start, need_target):
    return tuple(torch.empty_like(theta_n) if need else theta_n.new_empty(0)
                 for need in (need_n, need_start, need_target))


def _backward(s, grad_out, _grad_sums):
    """(d theta_n, d theta_start, d theta_target): the backend's kernel, or the reference's graph when
    autograd records the pass."""
    needs = s.needs
    return input_gradients(
        "param_match_loss", s.backend, (grad_out, s.theta_n, s.theta_start, s.theta_target),
        kernel=lambda: s.kernel(grad_out.contiguous(), s.theta_n, s.theta_start, s.theta_target, s.sums,
                                needs["theta_n"], needs["theta_start"], needs["theta_target"]),
        differentiable=lambda: s.reference_vjp(grad_out))


OP = FusedOp(
    name="param_match_loss",
    package=__package__,
    **FLAT_DECLARATION,
    forward_schema="(Tensor theta_n, Tensor theta_start, Tensor theta_target) -> (Tensor, Tensor)",
    backward_schema="(Tensor grad_out, Tensor theta_n, Tensor theta_start, Tensor theta_target, Tensor sums,"
                    " bool need_n, bool need_start, bool need_target) -> (Tensor, Tensor, Tensor)",
    fake_forward=_fake_forward,
    fake_backward=_fake_backward,
    saved_outputs={"sums": 1},
    grads_of=("theta_n", "theta_start", "theta_target"),
    backward=_backward,
)
DISPATCH = OP.dispatch
param_match_loss_op = OP.op
param_match_loss_backward_op = OP.backward_op
