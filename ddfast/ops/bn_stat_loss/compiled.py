"""The ``cpp`` backend: the private ops of ddfast._C (csrc/bn_stat_loss/). Same contract as reference.py."""

from __future__ import annotations

import torch

from .plan import plan_for


def forward(activations, running_means, running_vars, weights):
    plan = plan_for(activations, weights)
    layers, items, _ = plan.on(activations[0].device)
    return torch.ops.ddfast._bn_stat_loss_forward(activations, running_means, running_vars, layers, items,
                                                  list(weights))


def backward(grad_out, activations, running_means, running_vars, stats, weights, need_act: bool, need_stats: bool):
    plan = plan_for(activations, weights)
    layers, items, _ = plan.on(activations[0].device)
    return torch.ops.ddfast._bn_stat_loss_backward(grad_out.reshape(()), activations, running_means, running_vars,
                                                   stats, layers, items, list(weights), need_act, need_stats)
