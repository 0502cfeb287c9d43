"""Higher-order gradients of the fused ops: one rule, which every op's autograd backward applies through
:func:`input_gradients`.

A backward pass that autograd does not record (``create_graph=False``, the common case) runs the backend's
backward kernel, whose outputs carry no graph. When autograd records it (``create_graph=True`` and a
cotangent or saved tensor requires grad: the gradient will be differentiated again), the kernel would return
gradients without history and the next ``torch.autograd.grad`` would see None. Instead the op's reference
forward (torch ops) is re-run on the saved inputs and differentiated with ``create_graph=True``: the same
first-order gradients, as a graph autograd can differentiate, so higher-order gradients are exact on every
backend (the price is one reference forward and backward in that pass). An op that cannot do this raises
:class:`DoubleBackwardError` naming itself and the backend; no op returns None."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor


class DoubleBackwardError(RuntimeError):
    """A fused op was differentiated twice where it has no differentiable backward."""

    def __init__(self, op: str, backend: str):
        super().__init__(f"{op} does not support double backward on backend {backend}; use backend='reference' "
                         f"(ddfast.use_backend('reference')) or differentiate through torch ops")


def _tensors(items) -> list[Tensor]:
    out = []
    for item in items:
        if isinstance(item, (list, tuple)):
            out.extend(_tensors(item))
        elif isinstance(item, Tensor):
            out.append(item)
    return out


def records_graph(*tensors) -> bool:
    """True when autograd records the backward pass now running: grad mode is on (``create_graph=True``) and one
    of ``tensors`` (cotangents and saved tensors; nested lists are flattened) requires grad."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in _tensors(tensors))


def reference_vjp(forward: Callable, inputs: Sequence, needs: Sequence[bool], grad_out: Tensor) -> list:
    """The vector-Jacobian product of ``forward(*inputs)[0]`` (a reference forward: torch ops) with ``grad_out``,
    with ``create_graph=True``: one entry per input, its gradient where ``needs`` says so (zeros for tensors that
    do not require grad or do not reach the output), else None; tensor-list inputs get lists. A tensor passed
    twice gets its whole gradient at its first place, as autograd sums the places."""
    wanted = [_tensors([item]) if need else [] for item, need in zip(inputs, needs)]
    first, differentiated = set(), []
    for t in (t for group in wanted for t in group):
        if t.requires_grad and id(t) not in first:
            first.add(id(t))
            differentiated.append(t)
    with torch.enable_grad():
        out = forward(*inputs)
        out = out[0] if isinstance(out, (tuple, list)) else out
        grads = torch.autograd.grad(out, differentiated, grad_out, create_graph=True, allow_unused=True) \
            if differentiated else ()
    pending = {id(t): g for t, g in zip(differentiated, grads)}
    result = []
    for item, group in zip(inputs, wanted):
        filled = [g if (g := pending.pop(id(t), None)) is not None else torch.zeros_like(t) for t in group]
        result.append(None if not group else filled if isinstance(item, (list, tuple)) else filled[0])
    return result


def input_gradients(op: str, backend: str, read: Sequence, kernel: Callable[[], object],
                    differentiable: Callable[[], object] | None) -> object:
    """The gradients a fused op's backward returns: ``kernel()`` (the backend's backward) when autograd does not
    record this pass, else ``differentiable()`` (the same gradients as torch ops, usually :func:`reference_vjp`
    of the reference forward); ``differentiable=None`` raises :class:`DoubleBackwardError` then. ``read``: the
    cotangents and saved tensors the backward reads."""
    if not records_graph(*read):
        return kernel()
    if differentiable is None:
        raise DoubleBackwardError(op, backend)
    return differentiable()
