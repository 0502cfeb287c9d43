"""The declaration of MMD (ddfast.ops._registry): ``ddfast::mmd`` (MMD^2 per class segment) and
``ddfast::mmd_backward`` (gradients w.r.t. both sample sets).

Offsets of None mean one segment of all rows and a 0-d result (``ddfast.mmd``); otherwise
``x_offsets``/``y_offsets`` [K + 1] delimit each class's rows and the result is [K]
(``ddfast.class_mmd``). The op has no tensor-list arguments, so the custom op's autograd wrapper is
cheap and eager mode uses it directly (no separate autograd.Function as in grad_distance)."""

from __future__ import annotations

import torch

from .._dtypes import TRITON_WITHOUT_FP64, accumulate_dtype
from .._higher_order import input_gradients
from .._registry import FusedOp


def _fake_forward(x, y, x_offsets, y_offsets, kernel, sigmas, estimator):
    shape = () if x_offsets is None else (x_offsets.shape[0] - 1,)
    return x.new_empty(shape, dtype=accumulate_dtype(x.dtype))


def _fake_backward(grad_out, x, y, x_offsets, y_offsets, kernel, sigmas, estimator, need_x, need_y):
    return (torch.empty_like(x) if need_x else x.new_empty(0)), (torch.empty_like(y) if need_y else y.new_empty(0))


def _backward(s, grad_out):
    """(d x, d y): the backend's kernel, or the reference's graph when autograd records the pass."""
    return input_gradients(
        "mmd", s.backend, (grad_out, s.x, s.y),
        kernel=lambda: s.kernel(grad_out, s.x, s.y, s.x_offsets, s.y_offsets, s.kernel_name, s.sigmas, s.estimator,
                                s.needs["x"], s.needs["y"]),
        differentiable=lambda: s.reference_vjp(grad_out))


OP = FusedOp(
    name="mmd",
    package=__package__,
    backends=("reference", "cpp", "triton"),
    dtypes=TRITON_WITHOUT_FP64,
    forward_schema="(Tensor x, Tensor y, Tensor? x_offsets, Tensor? y_offsets, str kernel, float[] sigmas,"
                   " str estimator) -> Tensor",
    backward_schema="(Tensor grad_out, Tensor x, Tensor y, Tensor? x_offsets, Tensor? y_offsets, str kernel,"
                    " float[] sigmas, str estimator, bool need_x, bool need_y) -> (Tensor, Tensor)",
    fake_forward=_fake_forward,
    fake_backward=_fake_backward,
    saved_outputs={},
    grads_of=("x", "y"),
    backward=_backward,
    saved_as={"kernel": "kernel_name"},  # Saved.kernel is the backend's backward
)
DISPATCH = OP.dispatch
mmd_op = OP.op
mmd_backward_op = OP.backward_op
