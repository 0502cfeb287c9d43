"""Per-class parameter gradients in the batched layout grad_distance takes (docs/semantics.md#per_class_gradients).

A composite, not a custom op: it takes a module and runs torch autograd or torch.func over it, with no
declaration, dispatch table or backend of its own (docs/DESIGN.md, "Layout as built"). Two strategies
compute the same thing: ``loop`` (one forward/backward per class, as DC does) and ``vmap`` (one batched
torch.func computation over all classes). ``auto`` picks per device from measurement: the loop on CPU (on the
2-core CI machine the vmap form took 7.0 s against the loop's 3.4 s for ConvNet-3 x 10 classes);
vmap on CUDA, where launch counts dominate. Models with ``nn.InstanceNorm*`` use the loop, since
torch.func gives wrong second-order gradients through them.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .._validate import choice

STRATEGIES = ("auto", "loop", "vmap")
AUTO_STRATEGY = {"cpu": "loop", "cuda": "vmap"}  # from bench/bench_grad_distance.py results


@contextlib.contextmanager
def batchnorm_in_eval(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers use their running statistics (DC freezes BN after a warm-up)."""
    switched = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in switched:
        m.eval()
    try:
        yield
    finally:
        for m in switched:
            m.train()


def _named_params(model: nn.Module, params) -> dict[str, torch.Tensor]:
    own = dict(model.named_parameters())
    if params is None:
        return own
    if isinstance(params, Mapping):
        missing = [n for n in own if n not in params]
        if missing:
            raise ValueError(f"params is missing the model's parameters {missing[:5]}")
        params = [params[n] for n in own]
    params = list(params)
    if len(params) != len(own):
        raise ValueError(f"params has {len(params)} tensors but the model has {len(own)} parameters")
    for i, (name, p) in enumerate(zip(own, params)):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"params[{i}] must be a tensor, got {type(p).__name__}")
        if p.shape != own[name].shape:
            raise ValueError(f"params[{i}] has shape {tuple(p.shape)} but the model's {name} has "
                             f"{tuple(own[name].shape)}")
    return dict(zip(own, params))


def _class_list(classes, num_classes: int) -> list[int]:
    """``classes`` checked: distinct ints in [0, num_classes), at least one (all classes when None)."""
    if classes is None:
        return list(range(num_classes))
    classes = list(classes)
    if not classes or any(isinstance(c, bool) or not isinstance(c, int) for c in classes):
        raise ValueError(f"classes must be a non-empty sequence of ints, got {classes!r}")
    if len(set(classes)) != len(classes) or min(classes) < 0 or max(classes) >= num_classes:
        raise ValueError(f"classes must be distinct class indices in [0, {num_classes}), got {classes}")
    return classes


def _group_by_class(x: torch.Tensor, y: torch.Tensor | None, num_classes: int, classes: list[int]):
    """(per-class inputs, per-class labels, equal_sizes) in the order of ``classes``: lists, or stacked
    [k, B, ...] if equal."""
    k = len(classes)
    if y is None:
        if x.dim() < 2 or x.shape[0] != k:
            raise ValueError(f"without labels, x must be [len(classes), B, ...] = [{k}, B, ...], "
                             f"got shape {tuple(x.shape)}")
        labels = torch.tensor(classes, device=x.device).repeat_interleave(x.shape[1]).view(k, -1)
        return x, labels, True
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be a 1-D label tensor with one label per row of x ({x.shape[0]}), "
                         f"got shape {tuple(y.shape)}")
    if y.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    # slot[c]: the position of class c in ``classes`` (k for a class not asked for)
    slot = torch.full((num_classes + 1,), k, dtype=torch.long, device=y.device)
    slot[torch.tensor(classes, device=y.device)] = torch.arange(k, device=y.device)
    if not torch.compiler.is_compiling():
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(f"y holds labels outside [0, {num_classes})")
        counts = torch.bincount(slot[y.long()], minlength=k + 1)
        if int(counts[k]):
            raise ValueError(f"y holds labels outside classes {classes}")
        empty = [classes[i] for i in (counts[:k] == 0).nonzero().flatten().tolist()]
        if empty:
            raise ValueError(f"classes {empty} have no samples in x; every class needs at least one")
    position = slot[y.long()]
    order = torch.argsort(position, stable=True)
    counts = torch.bincount(position, minlength=k).tolist()
    if len(set(counts)) == 1:
        per = counts[0]
        return x[order].view(k, per, *x.shape[1:]), y[order].view(k, per), True
    xs = list(torch.split(x[order], counts))
    ys = list(torch.split(y[order], counts))
    return xs, ys, False


def _has_instance_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.instancenorm._InstanceNorm) for m in model.modules())


def class_loss(model: nn.Module, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``model`` run functionally on ``params`` and ``buffers``: one class's loss (the
    function a :class:`ddfast.compiled.CompiledCall` of the ``class_gradients`` path compiles)."""
    return F.cross_entropy(functional_call(model, (params, buffers), (x,)), y)


def _loop(model, params, buffers, xs, ys, create_graph, loss_fn=class_loss):
    tensors = {n: p if p.requires_grad else p.detach().requires_grad_() for n, p in params.items()}
    per_class = []
    for xc, yc in zip(xs, ys):
        per_class.append(torch.autograd.grad(loss_fn(model, tensors, buffers, xc, yc), list(tensors.values()),
                                             create_graph=create_graph))
    return [torch.stack(grads) for grads in zip(*per_class)]


def _vmap(model, params, buffers, xs, ys, create_graph):
    def loss(p, xc, yc):
        return F.cross_entropy(functional_call(model, (p, buffers), (xc,)), yc)

    context = contextlib.nullcontext() if create_graph else torch.no_grad()
    with context:
        grads = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(params, xs, ys)
    return [grads[name] for name in params]


def per_class_gradients(model: nn.Module, params: Mapping[str, torch.Tensor] | Sequence[torch.Tensor] | None,
                        x: torch.Tensor, y: torch.Tensor | None, num_classes: int, create_graph: bool = True,
                        strategy: str = "auto", classes: Sequence[int] | None = None,
                        compiled=None) -> list[torch.Tensor]:
    """Gradients of the mean cross-entropy of each class's samples w.r.t. the model's parameters.

    Args:
        model: the network; run functionally on ``params`` (``None``: its own parameters) and its
            buffers, with BatchNorm layers in eval mode (docs/semantics.md#per_class_gradients).
        x, y: images [N, ...] with integer labels y [N], or images [k, B, ...] (class ``classes[i]`` in
            row i) with ``y=None``.
        num_classes: K; every class of ``classes`` needs at least one sample.
        create_graph: keep the graph so the result can be differentiated again (w.r.t. x, for the
            synthetic batch of gradient matching); False for the real batch.
        strategy: "loop", "vmap" (needs the same number of samples in every class) or "auto".
        classes: the classes to compute, in output order (default all K); x holds samples of these
            only (a rank's share of a class-sharded method, :mod:`ddfast.distributed`). Each class's
            gradient is the same as in the call over all classes.
        compiled: a :class:`ddfast.compiled.CompiledCall` of :func:`class_loss` (path ``class_gradients``) that
            the loop strategy runs each class's loss through when ``create_graph`` is False (the real side of
            gradient matching; a compiled backward cannot be differentiated again, so it is not used otherwise).

    Returns one tensor per parameter, in ``model.named_parameters()`` order, of shape [k, *p.shape]
    (k = len(classes), K by default): the batched layout of :func:`ddfast.grad_distance`.
    """
    choice(strategy, STRATEGIES, "strategy")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    params = _named_params(model, params)
    buffers = dict(model.named_buffers())
    xs, ys, equal = _group_by_class(x, y, num_classes, _class_list(classes, num_classes))
    instance_norm = _has_instance_norm(model)
    if strategy == "vmap":
        if not equal:
            raise ValueError("strategy='vmap' needs the same number of samples in every class; use 'loop' or 'auto'")
        if instance_norm and create_graph:
            raise ValueError("strategy='vmap' gives wrong second-order gradients through nn.InstanceNorm layers; use "
                             "'loop', or GroupNorm(C, C) as DC's ConvNet does")
    elif strategy == "auto":
        strategy = AUTO_STRATEGY.get(x.device.type, "loop")
        if not equal or (instance_norm and create_graph):
            strategy = "loop"
    with batchnorm_in_eval(model):
        if strategy == "vmap":
            return _vmap(model, params, buffers, xs, ys, create_graph)
        return _loop(model, params, buffers, xs, ys, create_graph,
                     compiled if compiled is not None and not create_graph else class_loss)
