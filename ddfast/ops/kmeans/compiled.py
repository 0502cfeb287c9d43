"""The ``cpp`` backend: the private ops of ddfast._C (csrc/kmeans/cpu.cpp). Same contract as
reference.py."""

from __future__ import annotations

import torch


def assign(x, centroids, offsets, with_distance):
    return torch.ops.ddfast._kmeans_assign(x, centroids, offsets, with_distance)


def update(x, assignment, offsets, centroids):
    return torch.ops.ddfast._kmeans_update(x, assignment, offsets, centroids)


def nearest(x, centroids, offsets, excluded):
    return torch.ops.ddfast._kmeans_nearest(x, centroids, offsets, excluded)
