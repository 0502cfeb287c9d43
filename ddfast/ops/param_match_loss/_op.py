"""Custom-op registration of param_match_loss: ``ddfast::param_match_loss`` (the loss and its two sums)
and ``ddfast::param_match_loss_backward`` (gradients of the three vectors), with fake and autograd
registrations and per-device kernels that dispatch to the selected backend. The backward runs the
backend its forward resolved (autograd runs CUDA backward passes on its own threads, where
use_backend() does not reach). Differentiating the backward again runs the reference's differentiable
gradients (ddfast.ops._higher_order)."""

from __future__ import annotations

import torch
from torch import Tensor

from ...backends import OpDispatch
from .._higher_order import input_gradients, reference_vjp
from .._lazy import LazyModule
from . import compiled, reference
from .reference import accumulate_dtype

DISPATCH = OpDispatch(
    "param_match_loss",
    impls={"reference": reference, "cpp": compiled, "cuda": compiled,
           "triton": LazyModule("ddfast.ops.param_match_loss.triton")},
    cuda_preference=("cuda", "triton"),
    dtypes={"triton": frozenset({torch.float16, torch.bfloat16, torch.float32})},
)


@torch.library.custom_op("ddfast::param_match_loss", mutates_args=())
def param_match_loss_op(theta_n: Tensor, theta_start: Tensor, theta_target: Tensor) -> tuple[Tensor, Tensor]:
    return reference.forward(theta_n, theta_start, theta_target)


@torch.library.custom_op("ddfast::param_match_loss_backward", mutates_args=())
def param_match_loss_backward_op(grad_out: Tensor, theta_n: Tensor, theta_start: Tensor, theta_target: Tensor,
                                 sums: Tensor, need_n: bool, need_start: bool, need_target: bool,
                                 backend: str) -> tuple[Tensor, Tensor, Tensor]:
    return reference.backward(grad_out, theta_n, theta_start, theta_target, sums, need_n, need_start, need_target)


def _forward_kernel(theta_n, theta_start, theta_target):
    _, impl = DISPATCH.resolve(theta_n.device, theta_n.dtype)
    return impl.forward(theta_n, theta_start, theta_target)


def _backward_kernel(grad_out, theta_n, theta_start, theta_target, sums, need_n, need_start, need_target, backend):
    _, impl = DISPATCH.resolve(theta_n.device, theta_n.dtype, requested=(backend, "the forward pass"))
    return impl.backward(grad_out, theta_n, theta_start, theta_target, sums, need_n, need_start, need_target)


for _device in ("cpu", "cuda"):
    param_match_loss_op.register_kernel(_device)(_forward_kernel)
    param_match_loss_backward_op.register_kernel(_device)(_backward_kernel)


@param_match_loss_op.register_fake
def _(theta_n, theta_start, theta_target):
    acc = accumulate_dtype(theta_n.dtype)
    return theta_n.new_empty((), dtype=acc), theta_n.new_empty(2, dtype=acc)


@param_match_loss_backward_op.register_fake
def _(grad_out, theta_n, theta_start, theta_target, sums, need_n, need_start, need_target, backend):
    return tuple(torch.empty_like(theta_n) if need else theta_n.new_empty(0)
                 for need in (need_n, need_start, need_target))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs, output[1])
    ctx.backend, _ = DISPATCH.resolve(inputs[0].device, inputs[0].dtype)  # the one the forward ran


def _backward(ctx, grad_out, _grad_sums):
    theta_n, theta_start, theta_target, sums = ctx.saved_tensors
    need = ctx.needs_input_grad[:3]
    grads = input_gradients(
        "param_match_loss", ctx.backend, (grad_out, theta_n, theta_start, theta_target),
        kernel=lambda: param_match_loss_backward_op(grad_out.contiguous(), theta_n, theta_start, theta_target, sums,
                                                    *need, ctx.backend),
        differentiable=lambda: reference_vjp(reference.forward, (theta_n, theta_start, theta_target), need, grad_out))
    return tuple(g if n else None for g, n in zip(grads, need))


param_match_loss_op.register_autograd(_backward, setup_context=_setup_context)
