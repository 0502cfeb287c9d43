"""ddfast.compat.dc keeps DC's contracts: match_loss/distance_wb equal DC's formulas (transcribed in gd_cases) with
DC's dtypes, devices and constants; DiffAugment draws DC's values from the global RNG in DC's order (the oracle
in dsa_cases), leaves it where DC does, has DC's defaults, error types and double backward."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
import torch

from ddfast.compat.dc import DiffAugment, ParamDiffAug, distance_wb, match_loss
from ddfast.models import get_network

from conftest import assert_close, seeded
from dsa_cases import dc_diffaugment
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


# --- the contracts calling code can observe (DC's utils.py behaviour) ----------------------------------------

def test_distance_wb_of_a_1d_tensor_is_dcs_constant_and_others_keep_the_gradients_dtype():
    a = torch.randn(5, dtype=torch.float64, requires_grad=True)
    zero = distance_wb(a, a.detach() + 1)
    assert zero.dtype == torch.float32 and not zero.requires_grad and zero.item() == 0.0
    b = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    c = torch.randn(4, 6, dtype=torch.float64)
    d = distance_wb(c, b)
    assert d.dtype == torch.float64 and d.requires_grad
    assert_close(d, dc_distance_wb(c, b), torch.float64, "2-D")


def test_match_loss_types_devices_and_constants_are_dcs():
    g_syn, g_real = _dc_gradients(2)
    g64 = [g.double().requires_grad_() for g in g_syn]
    ours = match_loss(g64, [g.double() for g in g_real], SimpleNamespace(dis_metric="ours", device="cpu"))
    assert ours.dtype == torch.float32 and ours.requires_grad  # DC accumulates into tensor(0.0)
    mse = match_loss(g64, [g.double() for g in g_real], SimpleNamespace(dis_metric="mse", device="cpu"))
    assert mse.dtype == torch.float64
    biases = [torch.randn(3, requires_grad=True), torch.randn(7, requires_grad=True)]
    constant = match_loss(biases, [torch.randn(3), torch.randn(7)], SimpleNamespace(dis_metric="ours", device="cpu"))
    assert constant.item() == 0.0 and not constant.requires_grad
    with pytest.raises(AttributeError):  # DC reads args.dis_metric
        match_loss(g_syn, g_real, SimpleNamespace(device="cpu"))


def _param(mode="S"):
    param = ParamDiffAug()
    param.aug_mode = mode
    return param


STRATEGIES = ["color_crop_cutout_flip_scale_rotate", "crop_scale", "rotate_flip_color", "cutout"]


@pytest.mark.parametrize("mode", ["S", "M"])
@pytest.mark.parametrize("seed", [-1, 7])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_diffaugment_draws_dcs_values_from_the_global_rng_and_leaves_it_as_dc(mode, seed, strategy):
    x = torch.randn(5, 3, 12, 10, generator=seeded(1))
    for start in range(4 if mode == "S" else 1):  # 'S': several picks of the family
        torch.manual_seed(100 + start)
        want_param = _param(mode)
        want = dc_diffaugment(x, strategy, seed, want_param)
        want_state = torch.get_rng_state()
        torch.manual_seed(100 + start)
        param = _param(mode)
        got = DiffAugment(x, strategy, seed=seed, param=param)
        assert torch.equal(torch.get_rng_state(), want_state), "the global RNG is not where DC leaves it"
        assert (param.latestseed, param.batchmode) == (want_param.latestseed, want_param.batchmode)
        assert_close(got.double(), want, torch.float32, f"{strategy} {mode} seed {seed}")


def test_diffaugment_defaults_and_global_seed_control():
    x = torch.randn(4, 3, 8, 8, generator=seeded(2))
    assert DiffAugment(x, param=_param()) is x  # DC's default strategy is '' (identity)
    assert DiffAugment(x, "none", param=_param()) is x and DiffAugment(x, "None", param=_param()) is x
    assert inspect.signature(DiffAugment).parameters["strategy"].default == ""
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        runs.append(DiffAugment(x, STRATEGIES[0], param=_param("M")))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    defaults = ParamDiffAug()
    assert (defaults.aug_mode, defaults.prob_flip, defaults.ratio_scale, defaults.ratio_rotate, defaults.ratio_crop_pad,
            defaults.ratio_cutout, defaults.ratio_noise, defaults.brightness, defaults.saturation,
            defaults.contrast) == ("S", 0.5, 1.2, 15.0, 0.125, 0.5, 0.05, 1.0, 2.0, 0.5)


@pytest.mark.parametrize("mode", ["S", "M"])
def test_diffaugment_seeded_is_siamese_and_unseeded_is_per_image(mode):
    real, syn = torch.randn(9, 3, 16, 16, generator=seeded(3)), torch.randn(3, 3, 16, 16, generator=seeded(4))
    syn[2] = real[6]
    for seed in (3, 77, 12345):
        a, b = DiffAugment(real, STRATEGIES[0], seed=seed, param=_param(mode)), \
            DiffAugment(syn, STRATEGIES[0], seed=seed, param=_param(mode))
        assert torch.equal(a[6], b[2])
    same = real[:1].expand(6, -1, -1, -1).contiguous()
    y = DiffAugment(same, STRATEGIES[0], param=_param("M"))
    assert len({tuple(y[k].flatten()[:60].tolist()) for k in range(6)}) == 6


def test_diffaugment_errors_have_dcs_types():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(AttributeError, match="needs param"):
        DiffAugment(x, STRATEGIES[0])
    with pytest.raises(KeyError, match="unknown family 'colour'"):
        DiffAugment(x, "colour_crop", param=_param())
    with pytest.raises(ValueError, match="unknown augmentation mode"):
        DiffAugment(x, STRATEGIES[0], param=_param("Q"))


def test_diffaugment_double_backward_equals_dcs():
    """A gradient penalty through the augmentation (second order in the images) equals the oracle's."""
    x = torch.randn(3, 3, 10, 10, dtype=torch.float64, generator=seeded(5))
    w = torch.randn(3 * 3 * 10 * 10, dtype=torch.float64, generator=seeded(6))
    penalties = []
    for augment in (DiffAugment, dc_diffaugment):
        xi = x.clone().requires_grad_()
        y = (torch.tanh(augment(xi, "color_crop_cutout_flip_scale_rotate", 11, _param("M")).flatten()) * w).sum()
        (g,) = torch.autograd.grad(y, xi, create_graph=True)
        (g ** 2).sum().backward()
        penalties.append(xi.grad)
    assert penalties[0].abs().sum() > 0
    # float32 tolerance: ddfast's parameter table is float32 (as DC's affine matrices are), the oracle's float64
    assert_close(penalties[0], penalties[1], torch.float32, "gradient penalty")
