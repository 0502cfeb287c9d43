"""ddfast.compat.dc equals DC's own match_loss/distance_wb (transcribed in gd_cases) for every metric."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ddfast.compat.dc import distance_wb, match_loss
from ddfast.models import get_network

from conftest import assert_close, seeded
from gd_cases import dc_distance_wb, dc_match_loss


def _dc_gradients(seed):
    """Real per-parameter gradients of DC's ConvNet-3 on a random real and synthetic batch."""
    torch.manual_seed(seed)
    net = get_network("ConvNet", 3, 10, (32, 32))
    g = seeded(seed)
    x_real, y_real = torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
    x_syn, y_syn = torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g)
    loss = torch.nn.functional.cross_entropy
    g_real = torch.autograd.grad(loss(net(x_real), y_real), list(net.parameters()))
    g_syn = torch.autograd.grad(loss(net(x_syn), y_syn), list(net.parameters()))
    return list(g_syn), list(g_real)


@pytest.mark.parametrize("metric", ["ours", "mse", "cos"])
def test_match_loss_equals_dc_formula(metric):
    g_syn, g_real = _dc_gradients(0)
    args = SimpleNamespace(dis_metric=metric, device="cpu")
    got = match_loss(g_syn, g_real, args)
    want = dc_match_loss(g_syn, g_real, metric)
    assert got.shape == () and got.device.type == "cpu"
    assert_close(got, want, torch.float32, metric)


def test_distance_wb_per_tensor():
    g_syn, g_real = _dc_gradients(1)
    for gws, gwr in zip(g_syn, g_real):
        assert_close(distance_wb(gwr, gws), dc_distance_wb(gwr, gws), torch.float32, str(tuple(gws.shape)))


def test_match_loss_unknown_metric_raises():
    with pytest.raises(ValueError, match="args.dis_metric must be"):
        match_loss([torch.ones(2, 2)], [torch.ones(2, 2)], SimpleNamespace(dis_metric="kl", device="cpu"))
