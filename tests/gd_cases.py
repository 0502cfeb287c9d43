"""Inputs and an independent brute-force implementation of DC's formulas for grad_distance tests."""

from __future__ import annotations

import torch

import ddfast
from ddfast.models import get_network

METRICS = ("ours", "mse", "cos", "l1")

# DC's ConvNet-3 on 32x32x3, 10 classes: 320,010 parameters in 14 tensors.
DC_SHAPES = [tuple(p.shape) for p in get_network("ConvNet", 3, 10, (32, 32)).parameters()]
# Odd shapes: conv, 1-D, 3-D (layernorm), single row, a 1x1 matrix, zero columns, 0-d, 4-D with 1x1 kernel.
ODD_SHAPES = [(7, 3, 3, 3), (7,), (5, 3, 4), (1, 9), (1, 1), (2, 0), (), (3, 5, 1, 1), (13,)]


def make_grads(shapes, num_classes, dtype, generator, batched=True, device="cpu"):
    lead = (num_classes,) if batched else ()
    return [torch.randn((*lead, *s), generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)
            for s in shapes]


def make_weights(n, metric, generator):
    """Per-tensor weights with some zeros (0/1 only under 'cos')."""
    if metric == "cos":
        w = (torch.rand(n, generator=generator) > 0.3).double()
    else:
        w = torch.rand(n, generator=generator).double() * 2
        w[torch.rand(n, generator=generator) < 0.25] = 0
    w[0] = 1.0
    return w.tolist()


def dc_distance_wb(gwr, gws):
    """DC's distance_wb, transcribed from its description (utils.py of DatasetCondensation)."""
    shape = gwr.shape
    if len(shape) == 4:
        gwr = gwr.reshape(shape[0], shape[1] * shape[2] * shape[3])
        gws = gws.reshape(shape[0], shape[1] * shape[2] * shape[3])
    elif len(shape) == 3:
        gwr = gwr.reshape(shape[0], shape[1] * shape[2])
        gws = gws.reshape(shape[0], shape[1] * shape[2])
    elif len(shape) <= 1:
        return torch.zeros((), dtype=gwr.dtype)
    return torch.sum(1 - torch.sum(gwr * gws, dim=-1) / (torch.norm(gwr, dim=-1) * torch.norm(gws, dim=-1) + 0.000001))


def dc_match_loss(gw_syn, gw_real, metric, weights=None):
    """DC's match_loss for one class, with ddfast's per-tensor weights (0 skips the tensor)."""
    weights = weights or [1.0] * len(gw_syn)
    keep = [i for i, w in enumerate(weights) if w != 0]
    if metric == "ours":
        return sum((weights[i] * dc_distance_wb(gw_real[i], gw_syn[i]) for i in keep), torch.zeros((), dtype=gw_syn[0].dtype))
    if metric == "mse":
        return sum((weights[i] * ((gw_syn[i] - gw_real[i]) ** 2).sum() for i in keep), torch.zeros((), dtype=gw_syn[0].dtype))
    if metric == "l1":
        return sum((weights[i] * (gw_syn[i] - gw_real[i]).abs().sum() for i in keep), torch.zeros((), dtype=gw_syn[0].dtype))
    real = torch.cat([gw_real[i].reshape(-1) for i in keep])
    syn = torch.cat([gw_syn[i].reshape(-1) for i in keep])
    return 1 - torch.sum(real * syn) / (torch.norm(real) * torch.norm(syn) + 0.000001)


def dc_batched(g_syn, g_real, metric, weights=None):
    """Per-class loop over the brute-force formula: a [K] vector."""
    return torch.stack([dc_match_loss([g[k] for g in g_syn], [g[k] for g in g_real], metric, weights)
                        for k in range(g_syn[0].shape[0])])


def check_compiled_matches_eager(g_syn, g_real, assert_close, compile_backend="inductor"):
    """torch.compile(fullgraph=True) of a loss around grad_distance equals eager, value and gradient."""
    def loss(a, b):
        return ddfast.grad_distance(a, b, "ours", batched=True).sum() * 2

    got = torch.compile(loss, fullgraph=True, backend=compile_backend)(g_syn, g_real)
    got_grads = torch.autograd.grad(got, g_syn)
    want = loss(g_syn, g_real)
    want_grads = torch.autograd.grad(want, g_syn)
    assert_close(got, want, torch.float32, "compiled forward")
    for a, b in zip(got_grads, want_grads):
        assert_close(a, b, torch.float32, "compiled backward")
