"""Custom-op registration of one fused DSA pass: ``ddfast::dsa_pass`` (the augmented images) and
``ddfast::dsa_pass_backward`` (the gradient w.r.t. the images), with fake and autograd registrations and
per-device kernels that dispatch to the selected backend. A pass is affine in the images, so the
first-order backward reads nothing but the parameter table; the images are saved for a double backward."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ...backends import OpDispatch
from .._higher_order import input_gradients, reference_vjp
from .._lazy import LazyModule
from . import compiled, reference

DISPATCH = OpDispatch(
    "dsa",
    impls={"reference": reference, "cpp": compiled, "triton": LazyModule("ddfast.ops.dsa.triton")},
    cuda_preference=("triton",),
    dtypes={"triton": frozenset({torch.float16, torch.bfloat16, torch.float32})},
)


@torch.library.custom_op("ddfast::dsa_pass", mutates_args=())
def dsa_pass_op(x: Tensor, table: Tensor, row_index: Tensor | None, ops: Sequence[int],
                geometry: Sequence[int]) -> Tensor:
    return reference.forward(x, table, row_index, ops, geometry)


@torch.library.custom_op("ddfast::dsa_pass_backward", mutates_args=())
def dsa_pass_backward_op(grad: Tensor, table: Tensor, row_index: Tensor | None, ops: Sequence[int],
                         geometry: Sequence[int], backend: str) -> Tensor:
    return reference.backward(grad, table, row_index, ops, geometry)


def _forward_kernel(x, table, row_index, ops, geometry):
    _, impl = DISPATCH.resolve(x.device, x.dtype)
    return impl.forward(x, table, row_index, ops, geometry)


def _backward_kernel(grad, table, row_index, ops, geometry, backend):
    """The backward runs the backend its forward resolved (autograd's CUDA threads do not see use_backend)."""
    _, impl = DISPATCH.resolve(grad.device, grad.dtype, requested=(backend, "the forward pass"))
    return impl.backward(grad, table, row_index, ops, geometry)


for _device in ("cpu", "cuda"):
    dsa_pass_op.register_kernel(_device)(_forward_kernel)
    dsa_pass_backward_op.register_kernel(_device)(_backward_kernel)


@dsa_pass_op.register_fake
def _(x, table, row_index, ops, geometry):
    return torch.empty_like(x)


@dsa_pass_backward_op.register_fake
def _(grad, table, row_index, ops, geometry, backend):
    return torch.empty_like(grad)


def _setup_context(ctx, inputs, output):
    x, table, row_index, ops, geometry = inputs
    ctx.save_for_backward(x, table, row_index)  # x for a double backward
    ctx.args = (tuple(ops), tuple(geometry))
    ctx.backend, _ = DISPATCH.resolve(x.device, x.dtype)  # the one the forward ran


def _backward(ctx, grad):
    x, table, row_index = ctx.saved_tensors
    ops, geometry = ctx.args
    dx = input_gradients(
        "dsa", ctx.backend, (grad, x),
        kernel=lambda: dsa_pass_backward_op(grad.contiguous(), table, row_index, ops, geometry, ctx.backend),
        differentiable=lambda: reference_vjp(reference.forward, (x, table, row_index, ops, geometry), (True,), grad)[0])
    return dx, None, None, None, None


dsa_pass_op.register_autograd(_backward, setup_context=_setup_context)
