"""Faithful re-creation of DC's gradient-matching hot path (VICO-UoE/DatasetCondensation,
main.py and utils.py), written by us from its published semantics: a Python loop over classes,
and inside ``match_loss`` a loop over parameter tensors calling ``distance_wb`` (~5 small kernels
per tensor per class). This is what ddfast's fused grad_distance replaces."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distance_wb(gwr: torch.Tensor, gws: torch.Tensor) -> torch.Tensor:
    shape = gwr.shape
    if len(shape) == 4:  # conv: out x in*kh*kw
        gwr = gwr.reshape(shape[0], shape[1] * shape[2] * shape[3])
        gws = gws.reshape(shape[0], shape[1] * shape[2] * shape[3])
    elif len(shape) == 3:  # layernorm: C x h*w
        gwr = gwr.reshape(shape[0], shape[1] * shape[2])
        gws = gws.reshape(shape[0], shape[1] * shape[2])
    elif len(shape) == 1:  # biases and norm parameters: 0
        return torch.tensor(0, dtype=torch.float, device=gwr.device)
    return torch.sum(1 - torch.sum(gwr * gws, dim=-1) / (torch.norm(gwr, dim=-1) * torch.norm(gws, dim=-1) + 0.000001))


def match_loss(gw_syn, gw_real, dis_metric: str, device) -> torch.Tensor:
    dis = torch.tensor(0.0).to(device)
    if dis_metric == "ours":
        for ig in range(len(gw_real)):
            dis += distance_wb(gw_real[ig], gw_syn[ig])
    elif dis_metric == "mse":
        real = torch.cat([g.reshape(-1) for g in gw_real])
        syn = torch.cat([g.reshape(-1) for g in gw_syn])
        dis = torch.sum((syn - real) ** 2)
    elif dis_metric == "cos":
        real = torch.cat([g.reshape(-1) for g in gw_real])
        syn = torch.cat([g.reshape(-1) for g in gw_syn])
        dis = 1 - torch.sum(real * syn, dim=-1) / (torch.norm(real, dim=-1) * torch.norm(syn, dim=-1) + 0.000001)
    else:
        raise ValueError(dis_metric)
    return dis


def class_loop_loss(g_syn_per_class, g_real_per_class, dis_metric: str = "ours") -> torch.Tensor:
    """DC's outer loop over classes, summing match_loss per class."""
    device = g_syn_per_class[0][0].device
    loss = torch.tensor(0.0).to(device)
    for gw_syn, gw_real in zip(g_syn_per_class, g_real_per_class):
        loss += match_loss(gw_syn, gw_real, dis_metric, device)
    return loss


def outer_step_loss(net, x_real_per_class, x_syn_per_class, dis_metric: str = "ours") -> torch.Tensor:
    """One DC outer step's matching loss: per class, real gradient (detached) and synthetic gradient
    with create_graph, then match_loss; the caller backpropagates into the synthetic images."""
    params = list(net.parameters())
    loss = torch.tensor(0.0).to(x_syn_per_class.device)
    for c in range(x_syn_per_class.shape[0]):
        img_real, img_syn = x_real_per_class[c], x_syn_per_class[c]
        lab_real = torch.full((img_real.shape[0],), c, device=img_real.device)
        lab_syn = torch.full((img_syn.shape[0],), c, device=img_syn.device)
        gw_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(img_real), lab_real), params)]
        gw_syn = torch.autograd.grad(F.cross_entropy(net(img_syn), lab_syn), params, create_graph=True)
        loss += match_loss(gw_syn, gw_real, dis_metric, img_syn.device)
    return loss
