"""ddfast.compat.dc keeps DC's contracts: match_loss/distance_wb equal DC's formulas (transcribed in gd_cases) with
DC's dtypes, devices and constants; DiffAugment draws DC's values from the global RNG in DC's order (the oracle
in dsa_cases), leaves it where DC does, has DC's defaults, error types and double backward."""

from __future__ import annotations

import copy
import inspect
import time
from types import SimpleNamespace

import numpy as np

import pytest
import torch
import torch.nn.functional as F

from ddfast.compat.dc import (DiffAugment, ParamDiffAug, augment, distance_wb, evaluate_synset, match_loss)
from ddfast.compat.dc import get_network as get_dc_network
from ddfast.compiled import compile_report, use_compile
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


# --- networks, epoch, evaluate_synset and augment: DC's structure, compiled where DC differentiates once -------

def _dc_args(**extra):
    base = dict(device="cpu", dsa=True, dsa_strategy="color_crop_cutout_flip_scale_rotate", dsa_param=_param(),
                dc_aug_param=None, lr_net=0.01, epoch_eval_train=2, batch_train=8)
    return SimpleNamespace(**{**base, **extra})


def test_get_network_has_dcs_layers_and_reseeds_from_the_clock():
    before = int(time.time() * 1000) % 100000
    net = get_dc_network("ConvNet", 3, 10, (32, 32))
    assert (torch.initial_seed() - before) % 100000 < 5000  # DC reseeds the global RNG from the clock
    assert type(net).__name__ == "ConvNet"
    shapes = [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
    conv = [(128, 3, 3, 3), (128, 128, 3, 3), (128, 128, 3, 3)]
    want = [item for i, w in enumerate(conv) for item in ((f"features.{4 * i}.weight", w), (f"features.{4 * i}.bias",
            (128,)), (f"features.{4 * i + 1}.weight", (128,)), (f"features.{4 * i + 1}.bias", (128,)))]
    assert shapes == want + [("classifier.weight", (10, 2048)), ("classifier.bias", (10,))]
    assert type(get_dc_network("ConvNetW32", 1, 10, (28, 28)).classifier).__name__ == "Linear"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in get_dc_network("ResNet18", 3, 10).modules())
    with pytest.raises(ValueError, match="unknown model: 'ResNet18BN_AP'"):
        get_dc_network("ResNet18BN_AP", 3, 10)


def test_network_compiles_the_calls_dc_differentiates_once_and_keeps_double_backward():
    net = get_dc_network("ConvNetW32", 3, 10)
    x, y = torch.randn(6, 3, 32, 32, generator=seeded(7)), torch.arange(6) % 10
    compile_report(reset=True)
    with use_compile("on"):
        with torch.no_grad():
            assert_close(net(x), net.eager_forward(x), torch.float32, "compiled forward")
        xs = x.clone().requires_grad_()
        grads = torch.autograd.grad(F.cross_entropy(net(xs), y), list(net.parameters()), create_graph=True)
        (got,) = torch.autograd.grad(sum((g ** 2).sum() for g in grads), xs)
    report = compile_report()
    assert report["eval_forward"]["compiled"] and "train_step" not in report  # the synthetic side ran eagerly
    xs = x.clone().requires_grad_()
    grads = torch.autograd.grad(F.cross_entropy(net.eager_forward(xs), y), list(net.parameters()), create_graph=True)
    (want,) = torch.autograd.grad(sum((g ** 2).sum() for g in grads), xs)
    assert_close(got, want, torch.float32, "double backward")


def _oracle_evaluate(net, images, labels, test_images, test_labels, args):
    """DC's evaluate_synset as documented: SGD (momentum 0.9, weight decay 5e-4), epochs + 1 passes over a shuffled
    loader, the rate x 0.1 after pass epochs // 2 + 1, per-batch unseeded DiffAugment (ddfast's: its draws are
    tested against DC's above; here the loop is under test), then the test accuracy."""
    lr, epochs = args.lr_net, args.epoch_eval_train
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=args.batch_train,
                                         shuffle=True)
    net.train()
    for ep in range(epochs + 1):
        correct = 0
        for img, lab in loader:
            out = net.eager_forward(DiffAugment(img, args.dsa_strategy, param=args.dsa_param))
            loss = F.cross_entropy(out, lab)
            correct += int((out.argmax(-1) == lab).sum())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if ep == epochs // 2 + 1:
            lr *= 0.1
            optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    net.eval()
    with torch.no_grad():
        test = int((net.eager_forward(test_images).argmax(-1) == test_labels).sum()) / len(test_labels)
    return correct / len(labels), test


def test_evaluate_synset_is_dcs_loop(capsys):
    images, labels = torch.randn(20, 3, 32, 32, generator=seeded(8)), torch.arange(20) % 10
    test_images, test_labels = torch.randn(30, 3, 32, 32, generator=seeded(9)), torch.arange(30) % 10
    args = _dc_args()
    net = get_dc_network("ConvNetW32", 3, 10)
    twin = copy.deepcopy(net)
    torch.manual_seed(3)
    want_train, want_test = _oracle_evaluate(twin, images, labels, test_images, test_labels, args)
    torch.manual_seed(3)
    testloader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(test_images, test_labels), batch_size=256)
    with use_compile("off"):
        got_net, got_train, got_test = evaluate_synset(0, net, images, labels, testloader, args)
    assert got_net is net and (got_train, got_test) == (want_train, want_test)
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    assert "Evaluate_00: epoch = 0002 train time = " in capsys.readouterr().out


@pytest.mark.parametrize("family", ["crop", "scale", "rotate", "noise"])
def test_augment_draws_from_numpys_and_torchs_global_rng_in_dcs_order(family):
    from scipy.ndimage import rotate

    param = {"crop": 4, "scale": 0.2, "rotate": 45, "noise": 0.001, "strategy": family}
    images = torch.randn(3, 2, 12, 12, generator=seeded(10))
    np.random.seed(4)
    torch.manual_seed(4)
    got = augment(images.clone(), param, "cpu")
    np.random.seed(4)
    torch.manual_seed(4)
    means = images.mean(dim=(0, 2, 3))
    for i, img in enumerate(images):
        assert np.random.permutation([family])[0] == family
        if family == "crop":
            padded = torch.stack([F.pad(img[c], (4, 4, 4, 4), value=float(means[c])) for c in range(2)])
            r, c = np.random.permutation(8)[0], np.random.permutation(8)[0]
            want = padded[:, r:r + 12, c:c + 12]
        elif family == "scale":
            h, w = (int(np.random.uniform(0.8, 1.2) * 12) for _ in range(2))
            big = F.interpolate(img[None], [h, w], mode="nearest")[0]
            side = max(h, w, 12)
            canvas = F.pad(big, ((side - w) // 2, side - w - (side - w) // 2, (side - h) // 2,
                                 side - h - (side - h) // 2))
            want = canvas[:, (side - 12) // 2:(side - 12) // 2 + 12, (side - 12) // 2:(side - 12) // 2 + 12]
        elif family == "rotate":
            turned = rotate(img.numpy(), angle=np.random.randint(-45, 45), axes=(-2, -1), cval=float(means.mean()))
            top, left = (turned.shape[1] - 12) // 2, (turned.shape[2] - 12) // 2
            want = torch.from_numpy(turned[:, top:top + 12, left:left + 12]).float()
        else:
            want = img + 0.001 * torch.randn(2, 12, 12)
        assert_close(got[i], want, torch.float32, f"{family} image {i}")
    assert not torch.equal(got, images)
