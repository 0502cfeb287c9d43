"""The declaration of class_mean_distance (ddfast.ops._registry): ``ddfast::class_mean_distance`` (the
distance and the statistics saved for backward) and ``ddfast::class_mean_distance_backward`` (gradients
of both feature sets). No tensor-list arguments, so eager mode calls the custom op too."""

from __future__ import annotations

import torch

from .._dtypes import TRITON_WITHOUT_FP64, accumulate_dtype
from .._higher_order import input_gradients
from .._registry import FusedOp


def _fake_forward(f_syn, y_syn, f_real, y_real, num_classes, per_class):
    acc = accumulate_dtype(f_syn.dtype)
    out = f_syn.new_empty((num_classes,) if per_class else (), dtype=acc)
    return out, f_syn.new_empty((num_classes, f_syn.shape[1]), dtype=acc), f_syn.new_empty((2, num_classes), dtype=acc)


def _fake_backward(grad_out, y_syn, y_real, diff, scale, dtype, need_syn, need_real):
    dim = diff.shape[1]
    return (diff.new_empty((y_syn.shape[0], dim) if need_syn else (0,), dtype=dtype),
            diff.new_empty((y_real.shape[0], dim) if need_real else (0,), dtype=dtype))


def _backward(s, grad_out, *_):
    """(d f_syn, d f_real): the backend's kernel, or the reference's graph when autograd records the pass."""
    return input_gradients(
        "class_mean_distance", s.backend, (grad_out, s.f_syn, s.f_real),
        kernel=lambda: s.kernel(grad_out.contiguous(), s.y_syn, s.y_real, s.diff, s.scale, s.f_syn.dtype,
                                s.needs["f_syn"], s.needs["f_real"]),
        differentiable=lambda: s.reference_vjp(grad_out))


OP = FusedOp(
    name="class_mean_distance",
    package=__package__,
    backends=("reference", "cpp", "triton"),
    dtypes=TRITON_WITHOUT_FP64,
    forward_schema="(Tensor f_syn, Tensor y_syn, Tensor f_real, Tensor y_real, SymInt num_classes, bool per_class)"
                   " -> (Tensor, Tensor, Tensor)",
    backward_schema="(Tensor grad_out, Tensor y_syn, Tensor y_real, Tensor diff, Tensor scale, ScalarType dtype,"
                    " bool need_syn, bool need_real) -> (Tensor, Tensor)",
    fake_forward=_fake_forward,
    fake_backward=_fake_backward,
    saved_outputs={"diff": 1, "scale": 2},
    grads_of=("f_syn", "f_real"),
    backward=_backward,
)
DISPATCH = OP.dispatch
class_mean_distance_op = OP.op
class_mean_distance_backward_op = OP.backward_op
