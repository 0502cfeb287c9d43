"""Label-cycle-shifting gradient matching: the shift schedule, one round against a hand-written
computation, the EMA output, early exit, and the CLI."""

from __future__ import annotations

import pytest
import torch

from ddfast.data import load_dataset
from ddfast.methods import METHODS, lcs_gm, make_config
from ddfast.methods import _common as common
from ddfast.ops.grad_distance import grad_distance

SMALL = {"model": "ConvNetD2", "batch_real": 8, "pretrain_epochs": 1, "dsa_strategy": "none"}


@pytest.fixture(scope="module")
def digits8():
    return load_dataset("digits", im_size=8)


def _run(data, iterations, **settings):
    config = make_config("lcs_gm", data.name, ipc=1, iterations=iterations, **{**SMALL, **settings})
    return config, METHODS["lcs_gm"].distill(data, config, progress=False)


def test_shift_cycles_over_one_to_k_minus_one():
    config = lcs_gm.LCSGMConfig()
    assert [lcs_gm.label_shift(config, r, 4) for r in range(7)] == [1, 2, 3, 1, 2, 3, 1]
    assert lcs_gm.label_shift(lcs_gm.LCSGMConfig(shift="none"), 5, 4) == 0


@pytest.mark.parametrize("shift", ["none", "cycle"])
def test_one_round_equals_the_hand_computation(digits8, shift):
    config, syn = _run(digits8, 1, shift=shift, dm_weight=0.0, ema=0.0, momentum=0.0, lr_img=0.5)
    real = common.RealData.of(digits8)
    K = real.num_classes
    start = common.initial_images(real.images, real.sampler, 1, "real", config.seed).requires_grad_()
    labels = common.class_labels(K, 1, "cpu")
    net = lcs_gm.pretrained_network(config, real, "fixed")
    x_real, y_real = real.sampler.batch(real.images, config.batch_real, config.seed, "real", 0)
    s = 1 if shift == "cycle" else 0
    params = [p.requires_grad_() for p in net.parameters()]
    # by hand: per class, shifted labels, DC's distance, one plain SGD step
    g_real = [torch.autograd.grad(torch.nn.functional.cross_entropy(net(x_real[y_real == c]),
                                                                   torch.full((int((y_real == c).sum()),), (c + s) % K)),
                                  params) for c in range(K)]
    g_syn = [torch.autograd.grad(torch.nn.functional.cross_entropy(net(start[c:c + 1]), torch.tensor([(c + s) % K])),
                                 params, create_graph=True) for c in range(K)]
    loss = sum(grad_distance(gs, gr) for gs, gr in zip(g_syn, g_real))
    expected = start - 0.5 * torch.autograd.grad(loss, start)[0]
    torch.testing.assert_close(syn.images, expected.detach(), rtol=1e-4, atol=1e-5)


def test_output_is_the_ema_of_the_rounds(digits8):
    _, last = _run(digits8, 2, ema=0.0)
    _, first = _run(digits8, 1, ema=0.0)
    _, ema = _run(digits8, 2, ema=0.5)
    start = common.initial_images(digits8.train_images, common.ClassSampler(digits8), 1, "real", 0)
    expected = 0.5 * (0.5 * start + 0.5 * first.images) + 0.5 * last.images
    torch.testing.assert_close(ema.images, expected, rtol=1e-5, atol=1e-6)


def test_early_exit_stops_when_the_loss_stalls(digits8):
    # lr 1e-12 (images all but frozen; lr 0 is refused), every real image each round, no shift: the GM loss stays
    # put, so the run stops after 2W rounds
    _, syn = _run(digits8, 10, lr_img=1e-12, early_exit_window=2, batch_real=1000, shift="none")
    assert syn.metadata["iterations"] == 4 and syn.metadata["stopped_early"] is True
    _, syn = _run(digits8, 3, early_exit_window=0)
    assert syn.metadata["iterations"] == 3 and syn.metadata["stopped_early"] is False


def test_plateaued_compares_two_windows():
    assert not lcs_gm.plateaued([5.0, 5.0, 5.0], 2, 1e-3)  # fewer than two windows
    assert lcs_gm.plateaued([1.0, 1.0, 1.0, 1.0], 2, 1e-3)
    assert not lcs_gm.plateaued([4.0, 4.0, 2.0, 2.0], 2, 1e-3)
    assert lcs_gm.plateaued([4.0, 4.0, 3.999, 3.999], 2, 1e-3)  # improved by 2.5e-4 relative < 1e-3
    assert lcs_gm.plateaued([2.0, 2.0, 3.0, 3.0], 2, 1e-3)  # got worse


def test_bad_options_name_themselves(digits8):
    with pytest.raises(ValueError, match="shift"):
        _run(digits8, 1, shift="sideways")
    with pytest.raises(ValueError, match="ema"):
        _run(digits8, 1, ema=1.0)
