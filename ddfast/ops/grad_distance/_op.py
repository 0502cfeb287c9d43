"""The declaration of grad_distance (ddfast.ops._registry): ``ddfast::grad_distance`` (distance and saved
statistics) and ``ddfast::grad_distance_backward`` (gradients of both lists). Its tensor-list arguments
give it the registry's eager autograd.Function outside torch.compile (torch.library's tensor-list
autograd wrapper cost about 1 ms of host time per forward+backward against 0.15 ms, measured on CPU
with ConvNet-3's 14 tensors; docs/DESIGN.md)."""

from __future__ import annotations

import torch

from .._dtypes import accumulate_dtype
from .._higher_order import input_gradients
from .._registry import FusedOp
from .plan import stats_numel, tensor_shapes


def _fake_forward(g_syn, g_real, metric, weights, batched):
    ref = g_syn[0]
    num_classes = ref.shape[0] if batched else 1
    numel = stats_numel(tensor_shapes(g_syn, batched), num_classes, metric, weights)
    acc = accumulate_dtype(ref.dtype)
    return ref.new_empty((num_classes,) if batched else (), dtype=acc), ref.new_empty(numel, dtype=acc)


def _fake_backward(grad_out, g_syn, g_real, stats, metric, weights, batched, need_syn, need_real):
    return ([torch.empty_like(t) for t in g_syn] if need_syn else [],
            [torch.empty_like(t) for t in g_real] if need_real else [])


def _backward(s, grad_out, *_):
    """(d g_syn, d g_real), lists: the backend's kernel, or the reference's graph when autograd records the pass."""
    return input_gradients(
        "grad_distance", s.backend, (grad_out, s.g_syn, s.g_real),
        kernel=lambda: s.kernel(grad_out, s.g_syn, s.g_real, s.stats, s.metric, s.weights, s.batched,
                                s.needs["g_syn"], s.needs["g_real"]),
        differentiable=lambda: s.reference_vjp(grad_out))


OP = FusedOp(
    name="grad_distance",
    package=__package__,
    backends=("reference", "cpp", "cuda", "triton"),
    forward_schema="(Tensor[] g_syn, Tensor[] g_real, str metric, float[] weights, bool batched) -> (Tensor, Tensor)",
    backward_schema="(Tensor grad_out, Tensor[] g_syn, Tensor[] g_real, Tensor stats, str metric, float[] weights,"
                    " bool batched, bool need_syn, bool need_real) -> (Tensor[], Tensor[])",
    fake_forward=_fake_forward,
    fake_backward=_fake_backward,
    saved_outputs={"stats": 1},
    grads_of=("g_syn", "g_real"),
    backward=_backward,
)
DISPATCH = OP.dispatch
grad_distance_op = OP.op
grad_distance_backward_op = OP.backward_op
