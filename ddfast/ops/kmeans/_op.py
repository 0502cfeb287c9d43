"""The declarations of the fused k-means steps (ddfast.ops._registry): ``ddfast::kmeans_assign`` (distance +
argmin per row), ``ddfast::kmeans_update`` (segment means) and ``ddfast::kmeans_nearest`` (the row nearest
each centroid). Their backend modules expose ``assign``, ``update`` and ``nearest``, and the three share one
dispatch table, ``kmeans`` (its backends, GPU validation records and ``ddfast info`` line). Their outputs
are indices, distances and centroids that nothing differentiates: no backward and no autograd registration
(k-means is not differentiable), and the public functions return tensors without a gradient history."""

from __future__ import annotations

import torch

from .._dtypes import TRITON_WITHOUT_FP64
from .._registry import FusedOp

_SHARED = dict(package=__package__, backends=("reference", "cpp", "triton"), dispatch_as="kmeans", results=2,
               dtypes=TRITON_WITHOUT_FP64)


def _fake_assign(x, centroids, offsets, with_distance):
    return (x.new_empty(x.shape[0], dtype=torch.int64),
            x.new_empty(x.shape[0] if with_distance else 0, dtype=centroids.dtype))


def _fake_update(x, assignment, offsets, centroids):
    return torch.empty_like(centroids), centroids.new_empty(centroids.shape[:2], dtype=torch.int64)


def _fake_nearest(x, centroids, offsets, excluded):
    return (centroids.new_empty(centroids.shape[:2], dtype=torch.int64),
            centroids.new_empty(centroids.shape[:2]))


ASSIGN = FusedOp(name="kmeans_assign", entry="assign", fake_forward=_fake_assign, **_SHARED,
                 forward_schema="(Tensor x, Tensor centroids, Tensor offsets, bool with_distance) -> (Tensor, Tensor)")
UPDATE = FusedOp(name="kmeans_update", entry="update", fake_forward=_fake_update, **_SHARED,
                 forward_schema="(Tensor x, Tensor assignment, Tensor offsets, Tensor centroids) -> (Tensor, Tensor)")
NEAREST = FusedOp(name="kmeans_nearest", entry="nearest", fake_forward=_fake_nearest, **_SHARED,
                  forward_schema="(Tensor x, Tensor centroids, Tensor offsets, Tensor excluded) -> (Tensor, Tensor)")
DISPATCH = ASSIGN.dispatch
kmeans_assign_op, kmeans_update_op, kmeans_nearest_op = ASSIGN.op, UPDATE.op, NEAREST.op
