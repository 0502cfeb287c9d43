"""Custom-op registration of the fused k-means steps: ``ddfast::kmeans_assign`` (distance + argmin
per row), ``ddfast::kmeans_update`` (segment means) and ``ddfast::kmeans_nearest`` (the row nearest
each centroid), with fake registrations (so torch.compile can trace them) and per-device kernels that
dispatch to the selected backend. Their outputs are indices, distances and centroids that nothing
differentiates: no autograd is registered (k-means is not differentiable), and the public functions
return tensors without a gradient history."""

from __future__ import annotations

import torch
from torch import Tensor

from ...backends import OpDispatch
from .._lazy import LazyModule
from . import compiled, reference

DISPATCH = OpDispatch(
    "kmeans",
    impls={"reference": reference, "cpp": compiled, "triton": LazyModule("ddfast.ops.kmeans.triton")},
    cuda_preference=("triton",),
    dtypes={"triton": frozenset({torch.float16, torch.bfloat16, torch.float32})},
)


@torch.library.custom_op("ddfast::kmeans_assign", mutates_args=())
def kmeans_assign_op(x: Tensor, centroids: Tensor, offsets: Tensor, with_distance: bool) -> tuple[Tensor, Tensor]:
    return reference.assign(x, centroids, offsets, with_distance)


@torch.library.custom_op("ddfast::kmeans_update", mutates_args=())
def kmeans_update_op(x: Tensor, assignment: Tensor, offsets: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    return reference.update(x, assignment, offsets, centroids)


@torch.library.custom_op("ddfast::kmeans_nearest", mutates_args=())
def kmeans_nearest_op(x: Tensor, centroids: Tensor, offsets: Tensor, excluded: Tensor) -> tuple[Tensor, Tensor]:
    return reference.nearest(x, centroids, offsets, excluded)


def _impl(x):
    return DISPATCH.resolve(x.device, x.dtype)[1]


def _assign_kernel(x, centroids, offsets, with_distance):
    return _impl(x).assign(x, centroids, offsets, with_distance)


def _update_kernel(x, assignment, offsets, centroids):
    return _impl(x).update(x, assignment, offsets, centroids)


def _nearest_kernel(x, centroids, offsets, excluded):
    return _impl(x).nearest(x, centroids, offsets, excluded)


for _device in ("cpu", "cuda"):
    kmeans_assign_op.register_kernel(_device)(_assign_kernel)
    kmeans_update_op.register_kernel(_device)(_update_kernel)
    kmeans_nearest_op.register_kernel(_device)(_nearest_kernel)


@kmeans_assign_op.register_fake
def _(x, centroids, offsets, with_distance):
    return (x.new_empty(x.shape[0], dtype=torch.int64),
            x.new_empty(x.shape[0] if with_distance else 0, dtype=centroids.dtype))


@kmeans_update_op.register_fake
def _(x, assignment, offsets, centroids):
    return torch.empty_like(centroids), centroids.new_empty(centroids.shape[:2], dtype=torch.int64)


@kmeans_nearest_op.register_fake
def _(x, centroids, offsets, excluded):
    return (centroids.new_empty(centroids.shape[:2], dtype=torch.int64),
            centroids.new_empty(centroids.shape[:2]))
