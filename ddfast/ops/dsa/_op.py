"""The declaration of one fused DSA pass (ddfast.ops._registry): ``ddfast::dsa_pass`` (the augmented
images) and ``ddfast::dsa_pass_backward`` (the gradient w.r.t. the images); its dispatch table is named
``dsa``. A pass is affine in the images, so the first-order backward reads nothing but the parameter
table; the images are saved for a double backward."""

from __future__ import annotations

import torch

from .._dtypes import TRITON_WITHOUT_FP64
from .._higher_order import input_gradients
from .._registry import FusedOp


def _fake_forward(x, table, row_index, ops, geometry):
    return torch.empty_like(x)


def _fake_backward(grad, table, row_index, ops, geometry):
    return torch.empty_like(grad)


def _backward(s, grad):
    """(d x,): the backend's kernel, or the reference's graph when autograd records the pass."""
    return input_gradients(
        "dsa", s.backend, (grad, s.x),
        kernel=lambda: (s.kernel(grad.contiguous(), s.table, s.row_index, s.ops, s.geometry),),
        differentiable=lambda: s.reference_vjp(grad))


OP = FusedOp(
    name="dsa_pass",
    dispatch_as="dsa",
    package=__package__,
    backends=("reference", "cpp", "triton"),
    dtypes=TRITON_WITHOUT_FP64,
    forward_schema="(Tensor x, Tensor table, Tensor? row_index, SymInt[] ops, SymInt[] geometry) -> Tensor",
    backward_schema="(Tensor grad, Tensor table, Tensor? row_index, SymInt[] ops, SymInt[] geometry) -> Tensor",
    fake_forward=_fake_forward,
    fake_backward=_fake_backward,
    saved_outputs={},
    grads_of=("x",),
    backward=_backward,
)
DISPATCH = OP.dispatch
dsa_pass_op = OP.op
dsa_pass_backward_op = OP.backward_op
