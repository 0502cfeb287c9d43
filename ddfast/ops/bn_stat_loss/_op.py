"""The declaration of bn_stat_loss (ddfast.ops._registry): ``ddfast::bn_stat_loss`` (loss and saved
statistics) and ``ddfast::bn_stat_loss_backward`` (gradients of the activations and, when asked for, of
the running statistics). Its tensor-list arguments give it the registry's eager autograd.Function
outside torch.compile (torch.library's tensor-list autograd wrapper costs host time per call: pytree
flattening; docs/DESIGN.md, "Adding an op")."""

from __future__ import annotations

import torch

from .._higher_order import input_gradients
from .._registry import FusedOp
from .plan import accumulate_dtype, stats_numel


def _fake_forward(activations, running_means, running_vars, weights):
    ref = activations[0]
    acc = accumulate_dtype(ref.dtype)
    return ref.new_empty((), dtype=acc), ref.new_empty(stats_numel([a.shape for a in activations]), dtype=acc)


def _fake_backward(grad_out, activations, running_means, running_vars, stats, weights, need_act, need_stats):
    return ([torch.empty_like(a) for a in activations] if need_act else [],
            [torch.empty_like(t) for t in running_means] if need_stats else [],
            [torch.empty_like(t) for t in running_vars] if need_stats else [])


def _backward(s, grad_out, *_):
    """(d activations, d running_means, d running_vars), lists: the backend's kernel (both statistics' gradients
    when either is wanted), or the reference's graph when autograd records the pass."""
    need_stats = s.needs["running_means"] or s.needs["running_vars"]
    return input_gradients(
        "bn_stat_loss", s.backend, (grad_out, s.activations, s.running_means, s.running_vars),
        kernel=lambda: s.kernel(grad_out, s.activations, s.running_means, s.running_vars, s.stats, s.weights,
                                s.needs["activations"], need_stats),
        differentiable=lambda: s.reference_vjp(grad_out))


OP = FusedOp(
    name="bn_stat_loss",
    package=__package__,
    backends=("reference", "cpp", "triton"),
    forward_schema="(Tensor[] activations, Tensor[] running_means, Tensor[] running_vars, float[] weights)"
                   " -> (Tensor, Tensor)",
    backward_schema="(Tensor grad_out, Tensor[] activations, Tensor[] running_means, Tensor[] running_vars,"
                    " Tensor stats, float[] weights, bool need_act, bool need_stats) -> (Tensor[], Tensor[], Tensor[])",
    fake_forward=_fake_forward,
    fake_backward=_fake_backward,
    saved_outputs={"stats": 1},
    grads_of=("activations", "running_means", "running_vars"),
    backward=_backward,
)
DISPATCH = OP.dispatch
bn_stat_loss_op = OP.op
bn_stat_loss_backward_op = OP.backward_op
