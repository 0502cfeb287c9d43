"""Custom-op registration of class_mean_distance: ``ddfast::class_mean_distance`` (the distance
and the statistics saved for backward) and ``ddfast::class_mean_distance_backward`` (gradients of
both feature sets), with fake and autograd registrations and per-device kernels that dispatch to
the selected backend. The backward runs the backend its forward resolved (autograd runs CUDA
backward passes on its own threads, where use_backend() does not reach)."""

from __future__ import annotations

from operator import itemgetter

import torch
from torch import Tensor

from ...backends import OpDispatch
from .._higher_order import input_gradients, reference_vjp
from .._lazy import LazyModule
from . import compiled, reference
from .reference import accumulate_dtype

DISPATCH = OpDispatch(
    "class_mean_distance",
    impls={"reference": reference, "cpp": compiled,
           "triton": LazyModule("ddfast.ops.class_mean_distance.triton")},
    cuda_preference=("triton",),
    dtypes={"triton": frozenset({torch.float16, torch.bfloat16, torch.float32})},
)


@torch.library.custom_op("ddfast::class_mean_distance", mutates_args=())
def class_mean_distance_op(f_syn: Tensor, y_syn: Tensor, f_real: Tensor, y_real: Tensor, num_classes: int,
                           per_class: bool) -> tuple[Tensor, Tensor, Tensor]:
    return reference.forward(f_syn, y_syn, f_real, y_real, num_classes, per_class)


@torch.library.custom_op("ddfast::class_mean_distance_backward", mutates_args=())
def class_mean_distance_backward_op(grad_out: Tensor, y_syn: Tensor, y_real: Tensor, diff: Tensor, scale: Tensor,
                                    dtype: torch.dtype, need_syn: bool, need_real: bool,
                                    backend: str) -> tuple[Tensor, Tensor]:
    return reference.backward(grad_out, y_syn, y_real, diff, scale, dtype, need_syn, need_real)


def _forward_kernel(f_syn, y_syn, f_real, y_real, num_classes, per_class):
    _, impl = DISPATCH.resolve(f_syn.device, f_syn.dtype)
    return impl.forward(f_syn, y_syn, f_real, y_real, num_classes, per_class)


def _backward_kernel(grad_out, y_syn, y_real, diff, scale, dtype, need_syn, need_real, backend):
    _, impl = DISPATCH.resolve(diff.device, dtype, requested=(backend, "the forward pass"))
    return impl.backward(grad_out, y_syn, y_real, diff, scale, dtype, need_syn, need_real)


for _device in ("cpu", "cuda"):
    class_mean_distance_op.register_kernel(_device)(_forward_kernel)
    class_mean_distance_backward_op.register_kernel(_device)(_backward_kernel)


@class_mean_distance_op.register_fake
def _(f_syn, y_syn, f_real, y_real, num_classes, per_class):
    acc = accumulate_dtype(f_syn.dtype)
    out = f_syn.new_empty((num_classes,) if per_class else (), dtype=acc)
    return out, f_syn.new_empty((num_classes, f_syn.shape[1]), dtype=acc), f_syn.new_empty((2, num_classes), dtype=acc)


@class_mean_distance_backward_op.register_fake
def _(grad_out, y_syn, y_real, diff, scale, dtype, need_syn, need_real, backend):
    dim = diff.shape[1]
    return (diff.new_empty((y_syn.shape[0], dim) if need_syn else (0,), dtype=dtype),
            diff.new_empty((y_real.shape[0], dim) if need_real else (0,), dtype=dtype))


def _setup_context(ctx, inputs, output):
    f_syn, y_syn, f_real, y_real, num_classes, per_class = inputs
    _, diff, scale = output
    ctx.save_for_backward(f_syn, y_syn, f_real, y_real, diff, scale)  # the features for a double backward
    ctx.dtype, ctx.args = f_syn.dtype, (num_classes, per_class)
    ctx.backend, _ = DISPATCH.resolve(f_syn.device, f_syn.dtype)  # the one the forward ran


def _backward(ctx, grad_out, _grad_diff, _grad_scale):
    f_syn, y_syn, f_real, y_real, diff, scale = ctx.saved_tensors
    need_syn, need_real = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
    d_syn, d_real = input_gradients(
        "class_mean_distance", ctx.backend, (grad_out, f_syn, f_real),
        kernel=lambda: class_mean_distance_backward_op(grad_out.contiguous(), y_syn, y_real, diff, scale, ctx.dtype,
                                                       need_syn, need_real, ctx.backend),
        differentiable=lambda: itemgetter(0, 2)(reference_vjp(reference.forward, (f_syn, y_syn, f_real, y_real,
                                                                                  *ctx.args),
                                                              (need_syn, False, need_real, False), grad_out)))
    return (d_syn if need_syn else None), None, (d_real if need_real else None), None, None, None


class_mean_distance_op.register_autograd(_backward, setup_context=_setup_context)
