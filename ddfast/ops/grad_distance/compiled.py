"""The ``cpp`` and ``cuda`` backends: the private ops of ddfast._C (csrc/grad_distance/), which the
torch dispatcher routes to the CPU or CUDA kernels by device. Same contract as reference.py."""

from __future__ import annotations

import torch

from .plan import METRIC_CODES, plan_for


def forward(g_syn, g_real, metric: str, weights, batched: bool):
    plan = plan_for(g_syn, metric, weights, batched)
    items, item_weight, part_ptr, part_weight = plan.on(g_syn[0].device)
    out, stats = torch.ops.ddfast._grad_distance_forward(g_syn, g_real, items, item_weight, part_ptr, part_weight,
                                                         METRIC_CODES[metric])
    return (out if batched else out.reshape(())), stats


def backward(grad_out, g_syn, g_real, stats, metric: str, weights, batched: bool, need_syn: bool, need_real: bool):
    plan = plan_for(g_syn, metric, weights, batched)
    items, item_weight, _, _ = plan.on(g_syn[0].device)
    return torch.ops.ddfast._grad_distance_backward(grad_out.reshape(-1), g_syn, g_real, stats, items, item_weight,
                                                    METRIC_CODES[metric], need_syn, need_real)
