"""bn_stat_loss and BNStatHooks on CPU: tiers 1-4 of docs/semantics.md#testing-tiers (reference vs an independent
transcription of SRe2L's BNFeatureHook, backends vs reference, gradcheck/opcheck/compile, bad inputs)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ddfast
from ddfast.models import get_network
from ddfast.ops.bn_stat_loss import reference
from ddfast.ops.bn_stat_loss._op import bn_stat_loss_op

from conftest import TOLERANCE, assert_close, cpu_backends, relative_error, seeded

# Shapes of the inputs of ResNet-18's 20 BatchNorm layers (CIFAR stem, 32x32) for a batch of B.
RESNET18_BN = [(64, 32)] * 5 + [(128, 16)] * 5 + [(256, 8)] * 5 + [(512, 4)] * 5
ODD_SHAPES = [(1, 3, 1, 1), (3, 5), (2, 4, 7), (3, 6, 5, 3), (1, 2, 1)]


def resnet18_shapes(batch):
    return [(batch, c, hw, hw) for c, hw in RESNET18_BN]


def make_case(shapes, dtype=torch.float64, seed=0, mean_scale=1.0):
    """Activations (channel means and spreads differ), running statistics near but not at the batch ones."""
    g = seeded(seed)
    acts, means, variances = [], [], []
    for shape in shapes:
        c = shape[1]
        view = (1, c) + (1,) * (len(shape) - 2)
        center = mean_scale * torch.randn(c, generator=g, dtype=torch.float64)
        spread = 0.5 + torch.rand(c, generator=g, dtype=torch.float64)
        a = center.reshape(view) + spread.reshape(view) * torch.randn(shape, generator=g, dtype=torch.float64)
        acts.append(a.to(dtype))
        means.append((center + 0.3 * torch.randn(c, generator=g, dtype=torch.float64)).to(dtype))
        variances.append((spread.square() * (0.5 + torch.rand(c, generator=g, dtype=torch.float64))).to(dtype))
    weights = [10.0] + [1.0 + 0.5 * i for i in range(len(shapes) - 1)]
    return acts, means, variances, weights


def sre2l_layer(x, running_mean, running_var):
    """SRe2L's BNFeatureHook.hook_fn, transcribed: per-channel batch mean and biased variance, two
    unsquared norms (written for any [B, C, ...] input)."""
    nch = x.shape[1]
    dims = [0] + list(range(2, x.dim()))
    mean = x.mean(dims)
    var = x.transpose(0, 1).contiguous().reshape([nch, -1]).var(1, unbiased=False)
    return torch.norm(running_var - var, 2) + torch.norm(running_mean - mean, 2)


def sre2l_loss(acts, means, variances, weights):
    return sum(w * sre2l_layer(a.double(), m.double(), v.double()) for a, m, v, w in zip(acts, means, variances, weights))


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


# Tier 1: the reference against SRe2L's formula, transcribed independently, in float64.
@pytest.mark.parametrize("shapes", [resnet18_shapes(2), ODD_SHAPES], ids=["resnet18_b2", "odd"])
def test_reference_matches_sre2l_formula(shapes):
    acts, means, variances, weights = make_case(shapes)
    got, stats = reference.forward(acts, means, variances, weights)
    assert_close(got, sre2l_loss(acts, means, variances, weights), torch.float64, "forward")
    assert stats.numel() == 2 * sum(s[1] for s in shapes) + 2 * len(shapes)


@pytest.mark.parametrize("shapes", [resnet18_shapes(2), ODD_SHAPES], ids=["resnet18_b2", "odd"])
def test_reference_backward_matches_autograd_of_sre2l_formula(shapes):
    acts, means, variances, weights = make_case(shapes, seed=1)
    leaves = [t.clone().requires_grad_() for t in acts + means + variances]
    n = len(acts)
    want = torch.autograd.grad(sre2l_loss(leaves[:n], leaves[n:2 * n], leaves[2 * n:], weights) * 1.5, leaves)
    leaves2 = [t.clone().requires_grad_() for t in acts + means + variances]
    with ddfast.use_backend("reference"):
        got = torch.autograd.grad(ddfast.bn_stat_loss(leaves2[:n], leaves2[n:2 * n], leaves2[2 * n:], weights) * 1.5,
                                  leaves2)
    for name, sl in (("activations", slice(0, n)), ("running_means", slice(n, 2 * n)),
                     ("running_vars", slice(2 * n, 3 * n))):
        assert_close(flat(got[sl]), flat(want[sl]), torch.float64, f"grad of {name}")


class SRe2LHook:
    """SRe2L's BNFeatureHook as the recover code uses it (written here independently of ddfast)."""

    def __init__(self, module):
        self.hook = module.register_forward_hook(self.hook_fn)

    def hook_fn(self, module, inputs, output):
        self.r_feature = sre2l_layer(inputs[0], module.running_mean.data, module.running_var.data)

    def close(self):
        self.hook.remove()


def _teacher(name, seed):
    torch.manual_seed(seed)
    net = get_network(name, 3, 10, (32, 32)).double()
    with torch.no_grad():  # running statistics that differ from the defaults (0 and 1), as a trained teacher's
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("network", ["ResNet18", "ConvNetBN"])
def test_hooks_match_sre2l_hook_loop(network, backend):
    net = _teacher(network, seed=2)
    images = torch.randn(2, 3, 32, 32, generator=seeded(3), dtype=torch.float64)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    hooks = [SRe2LHook(m) for m in bns]
    x_ref = images.clone().requires_grad_()
    net(x_ref)
    rescale = [10.0] + [1.0] * (len(hooks) - 1)
    want = sum(mod.r_feature * rescale[i] for i, mod in enumerate(hooks))
    want_grad, = torch.autograd.grad(want, x_ref)
    for h in hooks:
        h.close()
    x = images.clone().requires_grad_()
    with ddfast.use_backend(backend), ddfast.BNStatHooks(net) as bn:
        net(x)
        got = bn.loss()
        got_grad, = torch.autograd.grad(got, x)
        assert len(bn.layers) == len(bns) == (20 if network == "ResNet18" else 3)
    assert_close(got, want, torch.float64, f"{network} loss")
    assert_close(got_grad, want_grad, torch.float64, f"{network} gradient w.r.t. the images")
    assert all(not m._forward_hooks for m in bns) and not net._forward_pre_hooks


# Tier 2: every CPU backend against the reference computed in float64.
@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["resnet18_b4", "odd", "batch1"])
def test_backend_matches_reference(backend, dtype, case):
    shapes = {"resnet18_b4": resnet18_shapes(4), "odd": ODD_SHAPES,
              "batch1": [(1, 3, 1, 1), (1, 5), (1, 7, 3), (1, 16, 9, 9)]}[case]
    acts, means, variances, weights = make_case(shapes, dtype, seed=4)
    ref_acts = [a.double().requires_grad_() for a in acts]
    with ddfast.use_backend("reference"):
        want = ddfast.bn_stat_loss(ref_acts, [m.double() for m in means], [v.double() for v in variances], weights)
        want_grads = torch.autograd.grad(want * 0.75, ref_acts)
    xs = [a.clone().requires_grad_() for a in acts]
    with ddfast.use_backend(backend):
        got = ddfast.bn_stat_loss(xs, means, variances, weights)
        got_grads = torch.autograd.grad(got * 0.75, xs)
    assert got.dtype == dtype and got.shape == ()
    assert all(g.dtype == dtype and g.shape == a.shape for g, a in zip(got_grads, acts))
    assert_close(got, want, dtype, f"{backend}/{case} loss")
    assert_close(flat(got_grads), flat(want_grads), dtype, f"{backend}/{case} gradient")


@pytest.mark.parametrize("backend", cpu_backends())
def test_large_mean_in_fp32(backend):
    """Activations with mean 100 and std 1: fp32 must match fp64 on the same values to the fp32
    tolerance (the plain E[x^2] - E[x]^2 in fp32 does not: checked below, so this test can fail)."""
    g = seeded(5)
    acts = [(100 + torch.randn(16, 32, 8, 8, generator=g, dtype=torch.float64)).float(),
            (100 + torch.randn(16, 64, 4, 4, generator=g, dtype=torch.float64)).float()]
    means = [torch.full((32,), 100.5), torch.full((64,), 99.0)]
    variances = [torch.full((32,), 1.2), torch.full((64,), 0.9)]
    xs = [a.clone().requires_grad_() for a in acts]
    with ddfast.use_backend(backend):
        got = ddfast.bn_stat_loss(xs, means, variances)
        got_grads = torch.autograd.grad(got, xs)
    ref_xs = [a.double().requires_grad_() for a in acts]
    want = sre2l_loss(ref_xs, means, variances, [1.0, 1.0])
    want_grads = torch.autograd.grad(want, ref_xs)
    assert_close(got, want, torch.float32, f"{backend} loss")
    assert_close(flat(got_grads), flat(want_grads), torch.float32, f"{backend} gradient")
    x = acts[0].transpose(0, 1).reshape(32, -1)
    naive_var = (x * x).mean(1) - x.mean(1).square()
    exact_var = acts[0].double().transpose(0, 1).reshape(32, -1).var(1, unbiased=False)
    assert relative_error(naive_var, exact_var) > 10 * TOLERANCE[torch.float32]


@pytest.mark.parametrize("backend", cpu_backends())
def test_zero_norm_uses_subgradient_zero(backend):
    """Channel values 1, 3, 1, 3: mean 2 and variance 1 exactly."""
    base = torch.tensor([1.0, 3.0, 1.0, 3.0], dtype=torch.float64)
    a = torch.stack([base, 2 * base]).T.reshape(2, 2, 2, 1).transpose(1, 2).contiguous()  # [2, 2, 2, 1]
    a = a.permute(0, 1, 2, 3).contiguous()
    mean = a.mean((0, 2, 3))
    var = a.var((0, 2, 3), correction=0)
    assert torch.equal(mean, torch.tensor([2.0, 4.0], dtype=torch.float64))
    cases = {"both": (mean, var), "mean only": (mean, var + torch.tensor([0.5, -1.0], dtype=torch.float64)),
             "var only": (mean + torch.tensor([1.0, 2.0], dtype=torch.float64), var)}
    for name, (mu, rv) in cases.items():
        for dtype in (torch.float32, torch.float64):
            x = a.to(dtype).requires_grad_()
            leaves = [mu.to(dtype).requires_grad_(), rv.to(dtype).requires_grad_()]
            with ddfast.use_backend(backend):
                got = ddfast.bn_stat_loss([x], [leaves[0]], [leaves[1]])
                got_grads = torch.autograd.grad(got, [x, *leaves])
            x_ref = a.clone().requires_grad_()
            ref_leaves = [mu.clone().requires_grad_(), rv.clone().requires_grad_()]
            want = sre2l_layer(x_ref, *ref_leaves)  # torch.norm's backward: 0 at 0
            want_grads = torch.autograd.grad(want, [x_ref, *ref_leaves])
            assert all(torch.isfinite(t).all() for t in got_grads), name
            assert_close(got, want, dtype, f"{name} loss")
            for i, (gg, ww) in enumerate(zip(got_grads, want_grads)):
                assert_close(gg, ww, dtype, f"{name} grad {i} ({dtype})")
            if name == "both":
                assert got.item() == 0 and all(torch.count_nonzero(t) == 0 for t in got_grads)


@pytest.mark.parametrize("backend", cpu_backends())
def test_half_precision_accumulates_in_fp32(backend):
    acts, means, variances, weights = make_case(ODD_SHAPES + resnet18_shapes(1)[:3], torch.float32, seed=6)
    for dtype in (torch.float16, torch.bfloat16):
        low = [a.to(dtype).requires_grad_() for a in acts]
        # BatchNorm buffers stay fp32 under autocast: both fp32 and low-precision statistics are accepted.
        for stats_dtype in (torch.float32, dtype):
            m = [t.to(stats_dtype) for t in means]
            v = [t.to(stats_dtype) for t in variances]
            with ddfast.use_backend(backend):
                got = ddfast.bn_stat_loss(low, m, v, weights)
                grads = torch.autograd.grad(got, low)
            ref_x = [a.detach().double().requires_grad_() for a in low]
            want = sre2l_loss(ref_x, m, v, weights)
            want_grads = torch.autograd.grad(want, ref_x)
            assert got.dtype == torch.float32 and all(gr.dtype == dtype for gr in grads)
            assert_close(got, want, dtype, f"{backend} {dtype} loss, statistics in {stats_dtype}")
            assert_close(flat(grads), flat(want_grads), dtype, f"{backend} {dtype} gradient")


@pytest.mark.parametrize("backend", cpu_backends())
def test_nan_propagates(backend):
    acts, means, variances, weights = make_case(ODD_SHAPES, seed=7)
    acts[2][1, 3, 4] = float("nan")
    xs = [a.requires_grad_() for a in acts]
    with ddfast.use_backend(backend):
        out = ddfast.bn_stat_loss(xs, means, variances, weights)
        grads = torch.autograd.grad(out, xs)
    assert torch.isnan(out)
    assert torch.isnan(grads[2]).all() and torch.isfinite(grads[0]).all()


@pytest.mark.parametrize("backend", cpu_backends())
def test_deterministic_and_layouts(backend):
    """Bitwise-equal repeated calls; channels_last and non-contiguous inputs equal contiguous ones."""
    acts, means, variances, weights = make_case(resnet18_shapes(4)[::4] + [(5, 6, 7)], torch.float32, seed=8)
    with ddfast.use_backend(backend):
        runs = []
        for _ in range(2):
            xs = [a.clone().requires_grad_() for a in acts]
            out = ddfast.bn_stat_loss(xs, means, variances, weights)
            runs.append((out, torch.autograd.grad(out, xs)))
        odd = [a.to(memory_format=torch.channels_last) if a.dim() == 4 else a.transpose(0, 2).contiguous().transpose(0, 2)
               for a in acts]
        assert not all(a.is_contiguous() for a in odd)
        odd = [a.requires_grad_() for a in odd]
        out = ddfast.bn_stat_loss(odd, means, variances, weights)
        odd_grads = torch.autograd.grad(out, odd)
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    assert torch.equal(out, runs[0][0])
    assert all(torch.equal(a, b) for a, b in zip(odd_grads, runs[0][1]))


# BNStatHooks behaviour.
def test_hooks_lifecycle():
    net = _teacher("ConvNetBN", seed=9)
    bn = ddfast.BNStatHooks(net, first_weight=3.0)
    assert bn.weights == [3.0, 1.0, 1.0]
    with pytest.raises(RuntimeError, match="before a forward pass"):
        bn.loss()
    g = seeded(10)
    x1, x2 = torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64), torch.randn(3, 3, 32, 32, generator=g,
                                                                                          dtype=torch.float64)
    net(x1)
    first = bn.loss()
    net(x2)  # replaces the recorded inputs
    assert [a.shape[0] for a in bn.inputs] == [3, 3, 3]
    second = bn.loss()
    layers = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    net(x2)
    want = ddfast.bn_stat_loss(bn.inputs, [m.running_mean for m in layers], [m.running_var for m in layers],
                               [3.0, 1.0, 1.0])
    assert torch.equal(second, want) and not torch.equal(first, second)
    y = torch.randn(1, 128, 2, 2, dtype=torch.float64)
    layers[1](y)  # a forward of one submodule is not a forward of the model: only that input changes
    assert bn.inputs[1] is y and bn.inputs[0].shape[0] == 3
    bn.remove()
    assert not net._forward_pre_hooks and all(not m._forward_hooks for m in layers)
    with pytest.raises(RuntimeError, match="removed"):
        bn.loss()


def test_hooks_report_layers_a_forward_skipped():
    class TwoPaths(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.BatchNorm2d(3), nn.BatchNorm1d(4)

        def forward(self, x, use_b=True):
            x = self.a(x)
            return self.b(x.mean((2, 3)).repeat(1, 2)[:, :4]) if use_b else x

    net = TwoPaths().eval()
    with ddfast.BNStatHooks(net) as bn:
        net(torch.randn(2, 3, 4, 4))
        assert bn.loss().shape == ()
        net(torch.randn(2, 3, 4, 4), use_b=False)
        with pytest.raises(RuntimeError, match=r"did not run BatchNorm layer\(s\) \['b'\]"):
            bn.loss()


@pytest.mark.parametrize("model, first_weight, error, message", [
    (nn.Linear(3, 3), 10.0, ValueError, "has no nn.BatchNorm1d/nn.BatchNorm2d layers"),
    (nn.BatchNorm2d(3, track_running_stats=False), 10.0, ValueError, "has no running statistics"),
    (nn.BatchNorm2d(3), -1.0, ValueError, "first_weight must be a finite number >= 0"),
    (nn.BatchNorm2d(3), float("inf"), ValueError, "first_weight must be a finite number >= 0"),
    ("net", 10.0, TypeError, "model must be a torch.nn.Module"),
])
def test_hooks_bad_arguments(model, first_weight, error, message):
    with pytest.raises(error, match=message):
        ddfast.BNStatHooks(model, first_weight)


# Tier 3: gradcheck, opcheck, torch.compile.
@pytest.mark.parametrize("backend", cpu_backends())
def test_gradcheck(backend):
    acts, means, variances, weights = make_case([(3, 2, 2, 3), (4, 3), (2, 2, 5)], seed=11)
    inputs = tuple(t.requires_grad_() for t in acts + means + variances)

    def fn(*tensors):
        return ddfast.bn_stat_loss(list(tensors[:3]), list(tensors[3:6]), list(tensors[6:]), weights)

    with ddfast.use_backend(backend):
        assert torch.autograd.gradcheck(fn, inputs)


def test_opcheck():
    acts, means, variances, weights = make_case([(3, 4, 3, 3), (5, 2), (2, 3, 4)], torch.float32, seed=12)
    acts = [a.requires_grad_() for a in acts]
    result = torch.library.opcheck(bn_stat_loss_op, (acts, means, variances, weights))
    assert set(result.values()) == {"SUCCESS"}, result
    stats_grad = [t.clone().requires_grad_() for t in means]
    result = torch.library.opcheck(bn_stat_loss_op, (acts, stats_grad, variances, weights))
    assert set(result.values()) == {"SUCCESS"}, result


def test_torch_compile_fullgraph():
    """aot_eager traces the same graph as inductor (dynamo, fake kernels, AOT autograd) and runs the
    custom op's real kernels, without minutes of C++ compilation on 2 cores."""
    acts, means, variances, weights = make_case(resnet18_shapes(2)[::5], torch.float32, seed=13)
    xs = [a.requires_grad_() for a in acts]

    def loss(a):
        return ddfast.bn_stat_loss(a, means, variances, weights) * 0.01 + 1

    got = torch.compile(loss, fullgraph=True, backend="aot_eager")(xs)
    got_grads = torch.autograd.grad(got, xs)
    want = loss(xs)
    want_grads = torch.autograd.grad(want, xs)
    assert_close(got, want, torch.float32, "compiled forward")
    assert_close(flat(got_grads), flat(want_grads), torch.float32, "compiled backward")


@pytest.mark.parametrize("backend", cpu_backends())
def test_custom_op_path_equals_eager_path(backend):
    acts, means, variances, weights = make_case(ODD_SHAPES, seed=14)
    xa = [a.clone().requires_grad_() for a in acts]
    xb = [a.clone().requires_grad_() for a in acts]
    with ddfast.use_backend(backend):
        eager = ddfast.bn_stat_loss(xa, means, variances, weights)
        via_op = bn_stat_loss_op(xb, means, variances, weights)[0]
        ga = torch.autograd.grad(eager, xa)
        gb = torch.autograd.grad(via_op, xb)
    assert torch.equal(eager, via_op)
    assert all(torch.equal(a, b) for a, b in zip(ga, gb))


def test_no_gradient_for_buffers_that_do_not_require_it():
    acts, means, variances, weights = make_case(ODD_SHAPES, seed=15)
    for backend in cpu_backends():
        with ddfast.use_backend(backend):
            xs = [a.clone().requires_grad_() for a in acts]
            ddfast.bn_stat_loss(xs, means, variances, weights).backward()
        assert all(x.grad is not None for x in xs)
        assert all(t.grad is None for t in means + variances)


# Tier 4: bad inputs raise errors naming the argument.
def _args():
    acts = [torch.ones(2, 3, 4, 4), torch.ones(2, 5)]
    return acts, [torch.zeros(3), torch.zeros(5)], [torch.ones(3), torch.ones(5)]


@pytest.mark.parametrize("change, error, message", [
    (lambda a, m, v: (a, m[:1], v), ValueError, "activations has 2 tensors but running_means has 1"),
    (lambda a, m, v: (a, m, v[:1]), ValueError, "activations has 2 tensors but running_vars has 1"),
    (lambda a, m, v: ([], [], []), ValueError, "activations is empty"),
    (lambda a, m, v: (a[0], m, v), TypeError, "activations must be a list or tuple"),
    (lambda a, m, v: ([a[0], "x"], m, v), TypeError, r"activations\[1\] must be a torch.Tensor"),
    (lambda a, m, v: (a, [m[0], torch.zeros(4)], v), ValueError,
     r"running_means\[1\] has shape \(4,\) but activations\[1\] has 5 channels"),
    (lambda a, m, v: (a, m, [v[0], torch.ones(1, 5)]), ValueError, r"running_vars\[1\] has shape \(1, 5\)"),
    (lambda a, m, v: ([a[0], torch.ones(2, 5, 1, 1, 1)], m, v), ValueError, r"activations\[1\] has 5 dimensions"),
    (lambda a, m, v: ([a[0], torch.ones(5)], m, v), ValueError, r"activations\[1\] has 1 dimensions"),
    (lambda a, m, v: ([a[0], torch.ones(0, 5)], m, v), ValueError, r"activations\[1\] has shape \(0, 5\)"),
    (lambda a, m, v: ([a[0], a[1].double()], m, v), TypeError, r"activations\[1\] has dtype torch.float64"),
    (lambda a, m, v: ([t.long() for t in a], m, v), TypeError, r"activations\[0\] has dtype torch.int64"),
    (lambda a, m, v: ([a[0], a[1].to("meta")], m, v), ValueError, r"activations\[1\] is on meta"),
    (lambda a, m, v: (a, [m[0], m[1].double()], v), TypeError, r"running_means\[1\] has dtype torch.float64"),
    (lambda a, m, v: ([t.half() for t in a], m, [v[0], v[1].double()]), TypeError,
     r"running_vars\[1\] has dtype torch.float64; with torch.float16 activations it must be torch.float16 or "
     r"torch.float32"),
    (lambda a, m, v: (a, [m[0], m[1].to("meta")], v), ValueError, r"running_means\[1\] is on meta"),
])
def test_bad_inputs(change, error, message):
    with pytest.raises(error, match=message):
        ddfast.bn_stat_loss(*change(*_args()))


@pytest.mark.parametrize("weights, error, message", [
    ([1.0], ValueError, "weights has 1 entries but there are 2"),
    ([1.0, -0.5], ValueError, r"weights\[1\] is -0.5; weights must be >= 0"),
    ([1.0, float("inf")], ValueError, r"weights\[1\] must be finite"),
    ([1.0, float("nan")], ValueError, r"weights\[1\] must be finite"),
    ([1.0, "a"], TypeError, r"weights\[1\] must be a real number"),
])
def test_bad_weights(weights, error, message):
    with pytest.raises(error, match=message):
        ddfast.bn_stat_loss(*_args(), weights=weights)


@pytest.mark.parametrize("backend", cpu_backends())
def test_gradient_of_running_statistics_only(backend):
    """Activations that do not require grad: only the running statistics' gradients are computed."""
    acts, means, variances, weights = make_case(ODD_SHAPES, seed=16)
    ms = [t.clone().requires_grad_() for t in means]
    with ddfast.use_backend(backend):
        got = torch.autograd.grad(ddfast.bn_stat_loss(acts, ms, variances, weights), ms)
    ref = [t.clone().requires_grad_() for t in means]
    want = torch.autograd.grad(sre2l_loss(acts, ref, variances, weights), ref)
    assert_close(flat(got), flat(want), torch.float64, f"{backend} grad of running_means")
