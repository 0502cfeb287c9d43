"""DREAM+: multi-formation decoding, the gradient-term weights, representative sampling, and short runs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ddfast.data import load_dataset
from ddfast.errors import UsageError
from ddfast.methods import METHODS, dream, make_config
from ddfast.methods import _common as common
from ddfast.models import get_network

SMALL = {"model": "ConvNetD2", "batch_real": 4, "inner_steps": 2, "interval": 1, "net_samples": 64,
         "pretrain_epochs": 0, "kmeans_iters": 3}


@pytest.fixture(scope="module")
def digits8():
    return load_dataset("digits", im_size=8)


def test_decode_upsamples_each_tile_in_row_major_order():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    out = dream.decode(x, 2)
    assert out.shape == (8, 1, 4, 4)
    top_right = x[1:2, :, :2, 2:]
    torch.testing.assert_close(out[5:6], F.interpolate(top_right, size=(4, 4), mode="bilinear", align_corners=False))
    assert dream.decode(x, 1) is x


def test_gradient_term_takes_only_conv_weights():
    net = get_network("ConvNetD2", 1, 10, (8, 8))
    conv = dream.conv_indices(net)
    params = list(net.parameters())
    assert len(conv) == 2 and all(params[i].dim() == 4 for i in conv)
    assert sum(p.dim() == 4 for p in params) == 2  # every conv weight, nothing else


def test_representative_batch_takes_k_rows_of_every_class(digits8):
    real = common.RealData.of(digits8)
    net = get_network("ConvNetD2", 1, 10, (8, 8))
    config = dream.DREAMConfig(kmeans_iters=5)
    x, y = dream.representative_batch(net, real, 6, config, torch.Generator().manual_seed(0))
    assert x.shape == (60, 1, 8, 8) and torch.equal(y, torch.arange(10).repeat_interleave(6))
    for row, c in zip(x, y.tolist()):  # every chosen image is a real image of its class
        pool = real.images[real.labels == c]
        assert (pool - row).abs().flatten(1).amax(1).min() == 0


@pytest.mark.parametrize("settings", [{}, {"plain": True}, {"factor": 2}])
def test_short_runs_move_the_images(digits8, settings):
    config = make_config("dream", "digits", ipc=1, iterations=1, **{**SMALL, **settings})
    syn = METHODS["dream"].distill(digits8, config, progress=False)
    factor = settings.get("factor", 1)
    assert syn.images.shape == (10 * factor ** 2, 1, 8, 8) and torch.isfinite(syn.images).all()
    start = common.initial_images(digits8.train_images, common.ClassSampler(digits8), 1, "real", 0)
    assert not torch.equal(dream.decode(start, factor), syn.images)
    mean, std = digits8.mean[0], digits8.std[0]  # the learnt pixels stay in [0, 1]
    pixels = syn.images * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_one_step_equals_the_hand_computation(digits8):
    """Plain sampling, no DSA, no momentum: one image step on class-mean + conv-only 'mse' gradient terms."""
    settings = {**SMALL, "plain": True, "dsa_strategy": "none", "momentum": 0.0, "inner_steps": 1, "lr_img": 0.01}
    config = make_config("dream", "digits", ipc=2, iterations=1, **settings)
    syn = METHODS["dream"].distill(digits8, config, progress=False)
    real = common.RealData.of(digits8)
    mean, std = digits8.mean[0], digits8.std[0]
    start = common.initial_images(real.images, real.sampler, 2, "real", config.seed)
    pixels = (start * std + mean).clamp(0, 1).requires_grad_()
    net = common.seeded_network("ConvNetD2", 1, 10, (8, 8), common.derive_seed(config.seed, "net", 0), "cpu")
    params = list(net.parameters())
    x_real, y_real = real.sampler.batch(real.images, config.batch_real, config.seed, "real", 0, 0)
    x_syn = (pixels - mean) / std
    loss = 0
    for c in range(10):
        xr, xs = x_real[y_real == c], x_syn[2 * c:2 * c + 2]
        gr = torch.autograd.grad(F.cross_entropy(net(xr), torch.full((len(xr),), c)), params)
        gs = torch.autograd.grad(F.cross_entropy(net(xs), torch.full((2,), c)), params, create_graph=True)
        loss = loss + sum(((a - b) ** 2).sum() for a, b, p in zip(gs, gr, params) if p.dim() == 4)
        loss = loss + ((net.embed(xr).detach().mean(0) - net.embed(xs).mean(0)) ** 2).sum()
    expected = (pixels - 0.01 * torch.autograd.grad(loss, pixels)[0]).clamp(0, 1)
    torch.testing.assert_close(syn.images, ((expected - mean) / std).detach(), rtol=1e-4, atol=1e-5)


def test_bad_settings_raise():
    with pytest.raises(UsageError, match=r"--set interval must be an integer >= 1, got 0"):
        make_config("dream", "digits", ipc=1, iterations=1, **{**SMALL, "interval": 0})
