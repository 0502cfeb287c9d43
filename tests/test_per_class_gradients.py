"""per_class_gradients: both strategies equal a plain create_graph loop, including the second-order
gradient of a gradient-matching loss w.r.t. the synthetic images (docs/semantics.md#per_class_gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ddfast
from ddfast.models import ConvNet

from conftest import assert_close, relative_error, seeded

K, B = 3, 4


def _model(norm="instancenorm", seed=0):
    torch.manual_seed(seed)
    return ConvNet(3, K, net_width=8, net_depth=2, net_norm=norm, im_size=(8, 8)).double()


def _plain_loop(model, x, create_graph=True):
    """The reference code's way: one forward/backward per class with create_graph."""
    grads = []
    for k in range(K):
        loss = F.cross_entropy(model(x[k]), torch.full((x.shape[1],), k))
        grads.append(torch.autograd.grad(loss, list(model.parameters()), create_graph=create_graph))
    return [torch.stack(g) for g in zip(*grads)]


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def _images(seed, requires_grad=False):
    x = torch.randn(K, B, 3, 8, 8, generator=seeded(seed), dtype=torch.float64)
    return x.requires_grad_(requires_grad)


@pytest.mark.parametrize("strategy", ["loop", "vmap", "auto"])
@pytest.mark.parametrize("norm", ["instancenorm", "batchnorm", "none"])
def test_matches_plain_loop_first_and_second_order(strategy, norm):
    model = _model(norm)
    x_real = _images(1)
    model.eval()  # the plain loop with BatchNorm frozen, as per_class_gradients runs it
    g_real = [g.detach() for g in _plain_loop(model, x_real, create_graph=False)]
    x_plain = _images(2, requires_grad=True)
    want = _plain_loop(model, x_plain)
    want_dx = torch.autograd.grad(ddfast.grad_distance(want, g_real, batched=True).sum(), x_plain)[0]
    model.train()
    x = _images(2, requires_grad=True)
    got = ddfast.per_class_gradients(model, None, x, None, K, strategy=strategy)
    assert [g.shape for g in got] == [(K, *p.shape) for p in model.parameters()]
    # Measured over all parameters at once: a conv bias before GroupNorm(C, C) has a gradient of
    # exactly 0 up to rounding noise, meaningless on its own.
    assert_close(_flat(got), _flat(want), torch.float64, f"{strategy}/{norm} per-class gradients")
    got_dx = torch.autograd.grad(ddfast.grad_distance(got, g_real, batched=True).sum(), x)[0]
    assert_close(got_dx, want_dx, torch.float64, f"{strategy}/{norm} d loss / d x_syn")
    assert all(m.training for m in model.modules())  # BatchNorm restored to train mode


def test_labelled_form_with_unequal_classes_uses_the_loop():
    model = _model()
    g = seeded(3)
    y = torch.tensor([2, 0, 1, 0, 2, 2, 1])
    x = torch.randn(len(y), 3, 8, 8, generator=g, dtype=torch.float64)
    got = ddfast.per_class_gradients(model, None, x, y, K, create_graph=False)
    for k in range(K):
        want = torch.autograd.grad(F.cross_entropy(model(x[y == k]), y[y == k]), list(model.parameters()))
        assert_close(_flat([a[k] for a in got]), _flat(want), torch.float64, f"class {k}")
    with pytest.raises(ValueError, match="same number of samples in every class"):
        ddfast.per_class_gradients(model, None, x, y, K, strategy="vmap")


def test_labelled_form_with_equal_classes_matches_stacked_form():
    model = _model()
    x = _images(4)
    y = torch.arange(K).repeat_interleave(B)
    perm = torch.randperm(K * B, generator=seeded(5))
    a = ddfast.per_class_gradients(model, None, x.reshape(K * B, 3, 8, 8)[perm], y[perm], K, strategy="vmap")
    b = ddfast.per_class_gradients(model, None, x, None, K, strategy="loop")
    assert_close(_flat(a), _flat(b), torch.float64, "labelled vs stacked")


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_a_subset_of_classes_gives_those_rows_of_the_full_call(strategy):
    """classes=[2, 0] (a rank's share of a class-sharded method): the rows of classes 2 and 0 of the call over all
    classes, in that order, and the same second-order gradient into those classes' images."""
    model = _model("batchnorm")
    x = _images(3, requires_grad=True)
    y = torch.arange(K).repeat_interleave(B)
    full = ddfast.per_class_gradients(model, None, x.reshape(K * B, 3, 8, 8), y, K, strategy=strategy)
    g_real = [torch.randn_like(g) for g in full]
    want_dx = _matching_dx([g[[2, 0]] for g in full], [g[[2, 0]] for g in g_real], x)
    part = torch.cat([x[2], x[0]])
    got = ddfast.per_class_gradients(model, None, part, torch.tensor([2] * B + [0] * B), K, strategy=strategy,
                                     classes=[2, 0])
    assert_close(_flat(got), _flat([g[[2, 0]] for g in full]), torch.float64, "subset rows")
    assert_close(_matching_dx(got, [g[[2, 0]] for g in g_real], x), want_dx, torch.float64, "subset second order")
    stacked = ddfast.per_class_gradients(model, None, x[[2, 0]], None, K, strategy=strategy, classes=[2, 0])
    assert_close(_flat(stacked), _flat(got), torch.float64, "stacked form with classes")


def test_explicit_params_list_and_dict():
    model = _model()
    x = _images(6)
    params = [p.detach() * 1.5 for p in model.parameters()]
    names = [n for n, _ in model.named_parameters()]
    a = ddfast.per_class_gradients(model, params, x, None, K, create_graph=False)
    b = ddfast.per_class_gradients(model, dict(zip(names, params)), x, None, K, create_graph=False, strategy="vmap")
    with torch.no_grad():
        for p, q in zip(model.parameters(), params):
            p.copy_(q)
    c = _plain_loop(model, x, create_graph=False)
    assert_close(_flat(a), _flat(c), torch.float64, "list params")
    assert_close(_flat(b), _flat(c), torch.float64, "dict params")


def _instance_norm_case():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4, affine=True), nn.ReLU(), nn.Flatten(),
                          nn.Linear(144, K)).double()
    x = torch.randn(K, 2, 3, 8, 8, generator=seeded(7), dtype=torch.float64).requires_grad_()
    g_real = [torch.randn(K, *p.shape, generator=seeded(8), dtype=torch.float64) for p in model.parameters()]
    return model, x, g_real


def _matching_dx(grads, g_real, x):
    return torch.autograd.grad(ddfast.grad_distance(grads, g_real, "mse", batched=True).sum(), x)[0]


def test_instance_norm_pitfall_is_real():
    """torch.func's second-order gradients through nn.InstanceNorm2d are wrong (first order is
    right): the reason for the guard below. If torch fixes this, this test fails and the guard can go."""
    from ddfast.ops.per_class_gradients import _loop, _vmap

    model, x, g_real = _instance_norm_case()
    params = dict(model.named_parameters())
    y = torch.arange(K).repeat_interleave(2).view(K, 2)
    by_vmap, by_loop = _vmap(model, params, {}, x, y, True), _loop(model, params, {}, x, y, True)
    assert_close(_flat(by_vmap), _flat(by_loop), torch.float64, "first order agrees")
    assert relative_error(_matching_dx(by_vmap, g_real, x), _matching_dx(by_loop, g_real, x)) > 1e-3


def test_instance_norm_guard(monkeypatch):
    from ddfast.ops import per_class_gradients as module

    model, x, g_real = _instance_norm_case()
    with pytest.raises(ValueError, match="wrong second-order gradients through nn.InstanceNorm"):
        ddfast.per_class_gradients(model, None, x, None, K, strategy="vmap")
    monkeypatch.setitem(module.AUTO_STRATEGY, "cpu", "vmap")  # auto would pick vmap here, but must not
    got = _matching_dx(ddfast.per_class_gradients(model, None, x, None, K), g_real, x)
    want = _matching_dx(ddfast.per_class_gradients(model, None, x, None, K, strategy="loop"), g_real, x)
    assert_close(got, want, torch.float64, "auto with InstanceNorm: second order")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(x=torch.randn(2, 4, 3, 8, 8), y=None), ValueError, r"x must be \[len\(classes\), B, ...\]"),
    (dict(x=torch.randn(6, 3, 8, 8), y=torch.tensor([0, 1, 2, 3, 0, 1])), ValueError, r"labels outside \[0, 3\)"),
    (dict(x=torch.randn(4, 3, 8, 8), y=torch.tensor([0, 1, 0, 1])), ValueError, r"classes \[2\] have no samples"),
    (dict(x=torch.randn(4, 3, 8, 8), y=torch.tensor([0.0, 1, 2, 1])), TypeError, "integer class labels"),
    (dict(x=torch.randn(4, 3, 8, 8), y=torch.tensor([0, 1, 2])), ValueError, "one label per row of x"),
    (dict(x=torch.randn(3, 4, 3, 8, 8), y=None, strategy="batched"), ValueError, "strategy must be one of"),
    (dict(x=torch.randn(4, 3, 8, 8), y=torch.tensor([0, 1, 0, 1]), classes=[0]), ValueError,
     r"labels outside classes \[0\]"),
    (dict(x=torch.randn(4, 3, 8, 8), y=torch.tensor([0, 1, 0, 1]), classes=[1, 1]), ValueError,
     r"classes must be distinct class indices in \[0, 3\)"),
    (dict(x=torch.randn(4, 3, 8, 8), y=torch.tensor([0, 1, 0, 1]), classes=[0, 3]), ValueError,
     "classes must be distinct"),
    (dict(x=torch.randn(4, 3, 8, 8), y=torch.tensor([0, 1, 0, 1]), classes=[]), ValueError,
     "classes must be a non-empty sequence of ints"),
    (dict(x=torch.randn(3, 4, 3, 8, 8), y=None, params=[torch.ones(2)]), ValueError, "params has 1 tensors"),
])
def test_bad_inputs(kwargs, error, message):
    model = ConvNet(3, K, net_width=8, net_depth=2, im_size=(8, 8))
    kwargs.setdefault("params", None)
    with pytest.raises(error, match=message):
        ddfast.per_class_gradients(model, kwargs.pop("params"), kwargs.pop("x"), kwargs.pop("y"), K, **kwargs)
