"""Custom-op registration of grad_distance: ``ddfast::grad_distance`` (distance and saved statistics)
and ``ddfast::grad_distance_backward`` (gradients of both lists), with fake and autograd
registrations and per-device kernels that dispatch to the selected backend.

``EagerGradDistance`` runs the same backend implementations through a plain autograd.Function:
the public function uses it outside torch.compile, because torch.library's autograd wrapper for
tensor-list arguments costs about 1 ms of host time per forward+backward (pytree flattening),
against 0.15 ms for the Function (measured on CPU with ConvNet-3's 14 tensors; docs/DESIGN.md)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ...backends import OpDispatch
from .._higher_order import input_gradients, reference_vjp
from .._lazy import LazyModule
from . import compiled, reference
from .plan import accumulate_dtype, stats_numel, tensor_shapes

DISPATCH = OpDispatch(
    "grad_distance",
    impls={"reference": reference, "cpp": compiled, "cuda": compiled,
           "triton": LazyModule("ddfast.ops.grad_distance.triton")},
    cuda_preference=("cuda", "triton"),
)


@torch.library.custom_op("ddfast::grad_distance", mutates_args=())
def grad_distance_op(g_syn: Sequence[Tensor], g_real: Sequence[Tensor], metric: str, weights: Sequence[float],
                     batched: bool) -> tuple[Tensor, Tensor]:
    return reference.forward(g_syn, g_real, metric, weights, batched)


@torch.library.custom_op("ddfast::grad_distance_backward", mutates_args=())
def grad_distance_backward_op(grad_out: Tensor, g_syn: Sequence[Tensor], g_real: Sequence[Tensor], stats: Tensor,
                              metric: str, weights: Sequence[float], batched: bool, need_syn: bool,
                              need_real: bool, backend: str) -> tuple[list[Tensor], list[Tensor]]:
    return reference.backward(grad_out, g_syn, g_real, stats, metric, weights, batched, need_syn, need_real)


def _forward_kernel(g_syn, g_real, metric, weights, batched):
    _, impl = DISPATCH.resolve(g_syn[0].device, g_syn[0].dtype)
    return impl.forward(g_syn, g_real, metric, weights, batched)


def _backward_kernel(grad_out, g_syn, g_real, stats, metric, weights, batched, need_syn, need_real, backend):
    """The backward runs the backend its forward resolved: autograd runs CUDA backward passes on its
    own threads, where use_backend() does not reach."""
    _, impl = DISPATCH.resolve(g_syn[0].device, g_syn[0].dtype, requested=(backend, "the forward pass"))
    return impl.backward(grad_out, g_syn, g_real, stats, metric, weights, batched, need_syn, need_real)


def _gradients(kernel, grad_out, g_syn, g_real, stats, metric, weights, batched, need_syn, need_real, backend):
    """(d g_syn, d g_real), [] where not needed: ``kernel`` (the backward op or its device kernel) in a first-order
    pass, the reference's differentiable gradients when autograd records the pass (ddfast.ops._higher_order)."""
    def differentiable():
        grads = reference_vjp(reference.forward, (g_syn, g_real, metric, weights, batched), (need_syn, need_real),
                              grad_out)
        return grads[0] or [], grads[1] or []

    return input_gradients("grad_distance", backend, (grad_out, g_syn, g_real), differentiable=differentiable,
                           kernel=lambda: kernel(grad_out, g_syn, g_real, stats, metric, weights, batched, need_syn,
                                                 need_real, backend))


for _device in ("cpu", "cuda"):
    grad_distance_op.register_kernel(_device)(_forward_kernel)
    grad_distance_backward_op.register_kernel(_device)(_backward_kernel)


@grad_distance_op.register_fake
def _(g_syn, g_real, metric, weights, batched):
    ref = g_syn[0]
    num_classes = ref.shape[0] if batched else 1
    numel = stats_numel(tensor_shapes(g_syn, batched), num_classes, metric, weights)
    acc = accumulate_dtype(ref.dtype)
    return ref.new_empty((num_classes,) if batched else (), dtype=acc), ref.new_empty(numel, dtype=acc)


@grad_distance_backward_op.register_fake
def _(grad_out, g_syn, g_real, stats, metric, weights, batched, need_syn, need_real, backend):
    return ([torch.empty_like(t) for t in g_syn] if need_syn else [],
            [torch.empty_like(t) for t in g_real] if need_real else [])


def _setup_context(ctx, inputs, output):
    g_syn, g_real, metric, weights, batched = inputs
    ctx.save_for_backward(*g_syn, *g_real, output[1])
    backend, _ = DISPATCH.resolve(g_syn[0].device, g_syn[0].dtype)  # the one the forward ran
    ctx.args = (len(g_syn), metric, weights, batched, backend)


def _backward(ctx, grad_out, _grad_stats):
    num_tensors, metric, weights, batched, backend = ctx.args
    saved = ctx.saved_tensors
    g_syn, g_real, stats = list(saved[:num_tensors]), list(saved[num_tensors:2 * num_tensors]), saved[-1]
    need_syn, need_real = any(ctx.needs_input_grad[0]), any(ctx.needs_input_grad[1])  # one flag per list entry
    dsyn, dreal = _gradients(grad_distance_backward_op, grad_out, g_syn, g_real, stats, metric, weights, batched,
                             need_syn, need_real, backend)
    # List inputs get a list of gradients, [None] * n where none is needed (custom-op convention).
    return dsyn or [None] * num_tensors, dreal or [None] * num_tensors, None, None, None


grad_distance_op.register_autograd(_backward, setup_context=_setup_context)


class EagerGradDistance(torch.autograd.Function):
    """grad_distance for eager mode: the custom op's kernels without its tensor-list autograd wrapper.
    Arguments: metric, weights, batched, number of tensors per list, then g_syn and g_real flattened."""

    @staticmethod
    def forward(ctx, metric, weights, batched, num_tensors, *tensors):
        g_syn, g_real = list(tensors[:num_tensors]), list(tensors[num_tensors:])
        backend, impl = DISPATCH.resolve(g_syn[0].device, g_syn[0].dtype)
        out, stats = impl.forward(g_syn, g_real, metric, weights, batched)
        ctx.save_for_backward(*tensors, stats)
        ctx.args = (num_tensors, metric, weights, batched, backend)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        num_tensors, metric, weights, batched, backend = ctx.args
        saved = ctx.saved_tensors
        need = ctx.needs_input_grad[4:]
        need_syn, need_real = any(need[:num_tensors]), any(need[num_tensors:])
        g_syn, g_real = list(saved[:num_tensors]), list(saved[num_tensors:2 * num_tensors])
        dsyn, dreal = _gradients(_backward_kernel, grad_out, g_syn, g_real, saved[-1], metric, weights, batched,
                                 need_syn, need_real, backend)
        return (None, None, None, None, *(dsyn or [None] * num_tensors), *(dreal or [None] * num_tensors))
