"""Custom-op registration of bn_stat_loss: ``ddfast::bn_stat_loss`` (loss and saved statistics) and
``ddfast::bn_stat_loss_backward`` (gradients of the activations and, when asked for, of the running
statistics), with fake and autograd registrations and per-device kernels that dispatch to the
selected backend.

``EagerBNStatLoss`` runs the same backend implementations through a plain autograd.Function: the
public function uses it outside torch.compile, because torch.library's autograd wrapper for
tensor-list arguments costs host time per call (pytree flattening; docs/DESIGN.md, grad_distance)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ...backends import OpDispatch
from .._higher_order import input_gradients, reference_vjp
from .._lazy import LazyModule
from . import compiled, reference
from .plan import accumulate_dtype, stats_numel

DISPATCH = OpDispatch(
    "bn_stat_loss",
    impls={"reference": reference, "cpp": compiled, "triton": LazyModule("ddfast.ops.bn_stat_loss.triton")},
    cuda_preference=("triton",),
)


@torch.library.custom_op("ddfast::bn_stat_loss", mutates_args=())
def bn_stat_loss_op(activations: Sequence[Tensor], running_means: Sequence[Tensor], running_vars: Sequence[Tensor],
                    weights: Sequence[float]) -> tuple[Tensor, Tensor]:
    return reference.forward(activations, running_means, running_vars, weights)


@torch.library.custom_op("ddfast::bn_stat_loss_backward", mutates_args=())
def bn_stat_loss_backward_op(grad_out: Tensor, activations: Sequence[Tensor], running_means: Sequence[Tensor],
                             running_vars: Sequence[Tensor], stats: Tensor, weights: Sequence[float], need_act: bool,
                             need_stats: bool, backend: str) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    return reference.backward(grad_out, activations, running_means, running_vars, stats, weights, need_act,
                              need_stats)


def _forward_kernel(activations, running_means, running_vars, weights):
    _, impl = DISPATCH.resolve(activations[0].device, activations[0].dtype)
    return impl.forward(activations, running_means, running_vars, weights)


def _backward_kernel(grad_out, activations, running_means, running_vars, stats, weights, need_act, need_stats,
                     backend):
    """The backward runs the backend its forward resolved: autograd runs CUDA backward passes on its
    own threads, where use_backend() does not reach."""
    _, impl = DISPATCH.resolve(activations[0].device, activations[0].dtype, requested=(backend, "the forward pass"))
    return impl.backward(grad_out, activations, running_means, running_vars, stats, weights, need_act, need_stats)


def _gradients(kernel, grad_out, activations, running_means, running_vars, stats, weights, need_act, need_stats,
               backend):
    """(d activations, d running_means, d running_vars), [] where not needed: ``kernel`` (the backward op or its
    device kernel) in a first-order pass, the reference's differentiable gradients when autograd records the pass
    (ddfast.ops._higher_order)."""
    def differentiable():
        grads = reference_vjp(reference.forward, (activations, running_means, running_vars, weights),
                              (need_act, need_stats, need_stats), grad_out)
        return tuple(g or [] for g in grads[:3])

    return input_gradients("bn_stat_loss", backend, (grad_out, activations, running_means, running_vars),
                           differentiable=differentiable,
                           kernel=lambda: kernel(grad_out, activations, running_means, running_vars, stats, weights,
                                                 need_act, need_stats, backend))


for _device in ("cpu", "cuda"):
    bn_stat_loss_op.register_kernel(_device)(_forward_kernel)
    bn_stat_loss_backward_op.register_kernel(_device)(_backward_kernel)


@bn_stat_loss_op.register_fake
def _(activations, running_means, running_vars, weights):
    ref = activations[0]
    acc = accumulate_dtype(ref.dtype)
    return ref.new_empty((), dtype=acc), ref.new_empty(stats_numel([a.shape for a in activations]), dtype=acc)


@bn_stat_loss_backward_op.register_fake
def _(grad_out, activations, running_means, running_vars, stats, weights, need_act, need_stats, backend):
    return ([torch.empty_like(a) for a in activations] if need_act else [],
            [torch.empty_like(t) for t in running_means] if need_stats else [],
            [torch.empty_like(t) for t in running_vars] if need_stats else [])


def _setup_context(ctx, inputs, output):
    activations, running_means, running_vars, weights = inputs
    ctx.save_for_backward(*activations, *running_means, *running_vars, output[1])
    backend, _ = DISPATCH.resolve(activations[0].device, activations[0].dtype)  # the one the forward ran
    ctx.args = (len(activations), weights, backend)


def _backward(ctx, grad_out, _grad_stats):
    n, weights, backend = ctx.args
    saved = ctx.saved_tensors
    acts, means, variances = list(saved[:n]), list(saved[n:2 * n]), list(saved[2 * n:3 * n])
    need_act = any(ctx.needs_input_grad[0])  # one flag per list entry
    need_stats = any(ctx.needs_input_grad[1]) or any(ctx.needs_input_grad[2])
    d_act, d_mean, d_var = _gradients(bn_stat_loss_backward_op, grad_out, acts, means, variances, saved[-1], weights,
                                      need_act, need_stats, backend)
    # List inputs get a list of gradients, [None] * n where none is needed (custom-op convention).
    return d_act or [None] * n, d_mean or [None] * n, d_var or [None] * n, None


bn_stat_loss_op.register_autograd(_backward, setup_context=_setup_context)


class EagerBNStatLoss(torch.autograd.Function):
    """bn_stat_loss for eager mode: the custom op's kernels without its tensor-list autograd wrapper.
    Arguments: weights, then activations, running_means and running_vars flattened (L each)."""

    @staticmethod
    def forward(ctx, weights, *tensors):
        n = len(weights)
        acts, means, variances = list(tensors[:n]), list(tensors[n:2 * n]), list(tensors[2 * n:])
        backend, impl = DISPATCH.resolve(acts[0].device, acts[0].dtype)
        loss, stats = impl.forward(acts, means, variances, weights)
        ctx.save_for_backward(*tensors, stats)
        ctx.args = (weights, backend)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        weights, backend = ctx.args
        n = len(weights)
        saved = ctx.saved_tensors
        need = ctx.needs_input_grad[1:]
        need_act, need_stats = any(need[:n]), any(need[n:])
        d_act, d_mean, d_var = _gradients(_backward_kernel, grad_out, list(saved[:n]), list(saved[n:2 * n]),
                                          list(saved[2 * n:3 * n]), saved[-1], weights, need_act, need_stats, backend)
        return (None, *(d_act or [None] * n), *(d_mean or [None] * n), *(d_var or [None] * n))
