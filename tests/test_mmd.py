"""mmd / class_mmd on CPU: tiers 1-4 of docs/semantics.md#testing-tiers (reference vs a brute-force double loop,
backends vs reference, gradcheck/opcheck/compile, bad inputs) and the fused path's O(N + M) memory."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import ddfast
from ddfast.ops.mmd import reference
from ddfast.ops.mmd._op import mmd_backward_op, mmd_op

from conftest import assert_close, cpu_backends, seeded

KERNELS = ("gaussian", "imq", "linear")
ESTIMATORS = ("biased", "unbiased")
ROOT = Path(__file__).resolve().parent.parent


def sigmas_for(kernel, dim):
    return None if kernel == "linear" else [0.5 * math.sqrt(dim), math.sqrt(dim), 2.0 * math.sqrt(dim)]


def samples(n, m, d, dtype=torch.float64, seed=0, shift=0.5):
    """x and y from different distributions, so MMD^2 is not a cancellation to ~0."""
    g = seeded(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = 1.3 * torch.randn(m, d, generator=g, dtype=torch.float64) + shift
    return x.to(dtype), y.to(dtype)


# An independent transcription of Gretton et al. (2012), eqs. 3 and 5, as a double loop over pairs.
def brute_kernel(a, b, kernel, sigmas):
    if kernel == "linear":
        return sum(ai * bi for ai, bi in zip(a, b))
    d2 = sum((ai - bi) ** 2 for ai, bi in zip(a, b))
    if kernel == "gaussian":
        return sum(math.exp(-d2 / (2 * s * s)) for s in sigmas)
    return sum((1 + d2 / (s * s)) ** -0.5 for s in sigmas)


def brute_mmd(x, y, kernel, sigmas, estimator):
    x, y = x.tolist(), y.tolist()
    unbiased = estimator == "unbiased"

    def mean_k(a, b, skip_diagonal):
        terms = [brute_kernel(a[i], b[j], kernel, sigmas) for i in range(len(a)) for j in range(len(b))
                 if not (skip_diagonal and i == j)]
        return sum(terms) / len(terms)

    return mean_k(x, x, unbiased) + mean_k(y, y, unbiased) - 2 * mean_k(x, y, False)


def brute_mmd_torch(x, y, kernel, sigmas, estimator):
    """The same double loop on tensor scalars, for autograd."""
    unbiased = estimator == "unbiased"

    def k(a, b):
        if kernel == "linear":
            return (a * b).sum()
        d2 = ((a - b) ** 2).sum()
        if kernel == "gaussian":
            return sum(torch.exp(-d2 / (2 * s * s)) for s in sigmas)
        return sum((1 + d2 / (s * s)) ** -0.5 for s in sigmas)

    def mean_k(a, b, skip_diagonal):
        terms = [k(a[i], b[j]) for i in range(len(a)) for j in range(len(b)) if not (skip_diagonal and i == j)]
        return sum(terms) / len(terms)

    return mean_k(x, x, unbiased) + mean_k(y, y, unbiased) - 2 * mean_k(x, y, False)


def run(backend, fn, *args, **kwargs):
    with ddfast.use_backend(backend):
        return fn(*args, **kwargs)


def value_and_grads(backend, x, y, kernel, sigmas, estimator, upstream=1.7):
    xr, yr = x.detach().clone().requires_grad_(), y.detach().clone().requires_grad_()
    with ddfast.use_backend(backend):
        out = ddfast.mmd(xr, yr, kernel, sigmas, estimator)
        gx, gy = torch.autograd.grad(out, (xr, yr), torch.tensor(upstream, dtype=out.dtype))
    return out, gx, gy


# Tier 1: the reference against the double loop, value and gradient.
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("n, m, d", [(5, 7, 3), (2, 2, 1), (6, 1, 4)])
def test_reference_matches_double_loop(n, m, d, kernel, estimator):
    if estimator == "unbiased" and m < 2:
        m = 2  # the unbiased estimator needs 2 rows per side (the error is tested in test_bad_inputs)
    x, y = samples(n, m, d, seed=n + m)
    sigmas = sigmas_for(kernel, d)
    got = reference.forward(x, y, None, None, kernel, sigmas or [], estimator)
    want = brute_mmd(x, y, kernel, sigmas, estimator)
    assert got.dtype == torch.float64 and got.shape == ()
    assert_close(got, torch.tensor(want, dtype=torch.float64), torch.float64, f"{kernel}/{estimator} value")


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_gradient_matches_autograd_of_double_loop(backend, kernel, estimator):
    x, y = samples(4, 5, 3, seed=2)
    sigmas = sigmas_for(kernel, 3)
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    want = torch.autograd.grad(brute_mmd_torch(xr, yr, kernel, sigmas, estimator), (xr, yr))
    out, gx, gy = value_and_grads(backend, x, y, kernel, sigmas, estimator, upstream=1.0)
    assert_close(out, torch.tensor(brute_mmd(x, y, kernel, sigmas, estimator), dtype=torch.float64), torch.float64,
                 "value")
    assert_close(gx, want[0], torch.float64, f"{backend} grad x")
    assert_close(gy, want[1], torch.float64, f"{backend} grad y")


def test_linear_biased_is_squared_distance_of_means():
    """DM's mean matching: biased linear MMD = ||mean x - mean y||^2."""
    x, y = samples(9, 4, 6, seed=3)
    for backend in cpu_backends():
        got = run(backend, ddfast.mmd, x, y, "linear")
        assert_close(got, (x.mean(0) - y.mean(0)).square().sum(), torch.float64, backend)


def _labelled(counts_syn, counts_real, d, dtype=torch.float64, seed=0):
    """Features with labels in shuffled order; counts per class."""
    g = seeded(seed)
    y_syn = torch.repeat_interleave(torch.arange(len(counts_syn)), torch.tensor(counts_syn))
    y_real = torch.repeat_interleave(torch.arange(len(counts_real)), torch.tensor(counts_real))
    y_syn, y_real = y_syn[torch.randperm(len(y_syn), generator=g)], y_real[torch.randperm(len(y_real), generator=g)]
    f_syn = torch.randn(len(y_syn), d, generator=g, dtype=torch.float64) + y_syn[:, None] * 0.1
    f_real = 1.2 * torch.randn(len(y_real), d, generator=g, dtype=torch.float64) + 0.4
    return f_syn.to(dtype), y_syn, f_real.to(dtype), y_real


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_class_mmd_equals_per_class_calls(backend, kernel, estimator):
    counts_syn, counts_real = [3, 2, 0, 5, 1], [4, 7, 0, 2, 3]  # class 2 absent on both sides
    if estimator == "unbiased":
        counts_syn[4] = 2
    f_syn, y_syn, f_real, y_real = _labelled(counts_syn, counts_real, 4, seed=4)
    sigmas = sigmas_for(kernel, 4)
    with ddfast.use_backend(backend):
        got = ddfast.class_mmd(f_syn, y_syn, f_real, y_real, 5, kernel, sigmas, estimator, reduction="none")
        total = ddfast.class_mmd(f_syn, y_syn, f_real, y_real, 5, kernel, sigmas, estimator)
    want = torch.stack([torch.tensor(0.0, dtype=torch.float64) if counts_syn[c] == 0 else
                        torch.tensor(brute_mmd(f_syn[y_syn == c], f_real[y_real == c], kernel, sigmas, estimator),
                                     dtype=torch.float64)
                        for c in range(5)])
    assert got.shape == (5,) and got[2] == 0
    assert_close(got, want, torch.float64, f"{backend} per class")
    assert_close(total, want.sum(), torch.float64, f"{backend} sum")
    for c in (0, 1, 3, 4):  # and each class equals its own plain mmd call
        one = run(backend, ddfast.mmd, f_syn[y_syn == c], f_real[y_real == c], kernel, sigmas, estimator)
        assert_close(got[c], one, torch.float64, f"{backend} class {c} vs mmd")


@pytest.mark.parametrize("backend", cpu_backends())
def test_class_mmd_gradients_equal_per_class_calls(backend):
    f_syn, y_syn, f_real, y_real = _labelled([3, 4, 2], [5, 2, 6], 3, seed=5)
    sigmas = [0.8, 2.0]
    fs, fr = f_syn.clone().requires_grad_(), f_real.clone().requires_grad_()
    with ddfast.use_backend(backend):
        loss = (ddfast.class_mmd(fs, y_syn, fr, y_real, 3, "imq", sigmas, reduction="none")
                * torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)).sum()
        got = torch.autograd.grad(loss, (fs, fr))
    fs2, fr2 = f_syn.clone().requires_grad_(), f_real.clone().requires_grad_()
    want_loss = sum(w * brute_mmd_torch(fs2[y_syn == c], fr2[y_real == c], "imq", sigmas, "biased")
                    for c, w in enumerate([1.0, -2.0, 0.5]))
    want = torch.autograd.grad(want_loss, (fs2, fr2))
    assert_close(got[0], want[0], torch.float64, "grad f_syn")
    assert_close(got[1], want[1], torch.float64, "grad f_real")


def test_class_mmd_missing_ignore_contributes_zero():
    f_syn, y_syn, f_real, y_real = _labelled([3, 0, 2], [4, 3, 2], 3, seed=6)
    for backend in cpu_backends():
        got = run(backend, ddfast.class_mmd, f_syn, y_syn, f_real, y_real, 3, "linear", reduction="none",
                  missing="ignore")
        assert got[1] == 0
        assert_close(got[0], torch.tensor(brute_mmd(f_syn[y_syn == 0], f_real[y_real == 0], "linear", None,
                                                    "biased"), dtype=torch.float64), torch.float64, backend)


# Tier 2: every CPU backend against the fp64 reference on realistic shapes (tiles of 512 rows: 600
# and 517 rows make two tiles with a ragged tail).
SHAPES = {"dm_300x300x128": (300, 300, 128), "ragged_600x517x37": (600, 517, 37)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_cpp_matches_reference(shape, kernel, estimator, dtype):
    if "cpp" not in cpu_backends():
        pytest.fail("ddfast._C is not built: build it (setup.py build_ext --inplace) before running the tests")
    n, m, d = SHAPES[shape]
    x, y = samples(n, m, d, seed=7)
    sigmas = sigmas_for(kernel, d)
    want = value_and_grads("reference", x, y, kernel, sigmas, estimator)
    got = value_and_grads("cpp", x.to(dtype), y.to(dtype), kernel, sigmas, estimator)
    assert got[0].dtype == dtype and got[1].dtype == dtype
    for name, g, w in zip(("value", "grad x", "grad y"), got, want):
        assert_close(g, w, dtype, f"cpp {shape} {kernel}/{estimator} {name}")


@pytest.mark.parametrize("backend", cpu_backends())
def test_class_mmd_realistic_matches_reference(backend):
    """DM-sized: 10 classes, IPC 10 synthetic and 64 real rows per class, D = 128, fp32."""
    f_syn, y_syn, f_real, y_real = _labelled([10] * 10, [64] * 10, 128, seed=8)
    sigmas = sigmas_for("gaussian", 128)
    fs, fr = f_syn.float().requires_grad_(), f_real.float().requires_grad_()
    fs64, fr64 = f_syn.clone().requires_grad_(), f_real.clone().requires_grad_()
    up = torch.linspace(0.5, 2.0, 10, dtype=torch.float64)
    with ddfast.use_backend("reference"):
        want = ddfast.class_mmd(fs64, y_syn, fr64, y_real, 10, "gaussian", sigmas, reduction="none")
        want_g = torch.autograd.grad(want, (fs64, fr64), up)
    with ddfast.use_backend(backend):
        got = ddfast.class_mmd(fs, y_syn, fr, y_real, 10, "gaussian", sigmas, reduction="none")
        got_g = torch.autograd.grad(got, (fs, fr), up.float())
    assert_close(got, want, torch.float32, "value")
    assert_close(got_g[0], want_g[0], torch.float32, "grad f_syn")
    assert_close(got_g[1], want_g[1], torch.float32, "grad f_real")


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_fp32(backend, dtype):
    x, y = samples(40, 33, 16, dtype=dtype, seed=9)
    sigmas = sigmas_for("gaussian", 16)
    got, gx, gy = value_and_grads(backend, x, y, "gaussian", sigmas, "unbiased")
    want = value_and_grads("reference", x.double(), y.double(), "gaussian", sigmas, "unbiased")
    assert got.dtype == torch.float32 and gx.dtype == dtype and gy.dtype == dtype
    assert_close(got, want[0], dtype, "value (inputs rounded to the dtype first)")
    assert_close(gx, want[1], dtype, "grad x")
    assert_close(gy, want[2], dtype, "grad y")


@pytest.mark.parametrize("backend", cpu_backends())
def test_nan_propagates(backend):
    x, y = samples(6, 5, 3, seed=10)
    x[2, 1] = float("nan")
    for kernel in KERNELS:
        assert torch.isnan(run(backend, ddfast.mmd, x, y, kernel, sigmas_for(kernel, 3)))


@pytest.mark.parametrize("backend", cpu_backends())
def test_gradient_only_where_required(backend):
    x, y = samples(7, 6, 5, seed=11)
    xr = x.clone().requires_grad_()
    with ddfast.use_backend(backend):
        (gx,) = torch.autograd.grad(ddfast.mmd(xr, y, "gaussian", [1.0, 3.0]), (xr,))
    want = value_and_grads("reference", x, y, "gaussian", [1.0, 3.0], "biased", upstream=1.0)[1]
    assert_close(gx, want, torch.float64, "grad x")
    assert y.grad is None


@pytest.mark.parametrize("backend", cpu_backends())
def test_deterministic(backend):
    x, y = samples(530, 270, 24, dtype=torch.float32, seed=12)
    runs = [value_and_grads(backend, x, y, "gaussian", [2.0, 5.0], "biased") for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_non_contiguous_inputs():
    x, y = samples(6, 9, 4, seed=13)
    xt = x.t().contiguous().t()  # same values, column-major
    for backend in cpu_backends():
        assert_close(run(backend, ddfast.mmd, xt, y, "gaussian", [1.5]), run("reference", ddfast.mmd, x, y, "gaussian",
                                                                             [1.5]), torch.float64, backend)


# Tier 3: gradcheck, opcheck, torch.compile.
@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_gradcheck(backend, kernel, estimator):
    x, y = samples(4, 5, 3, seed=14)
    sigmas = sigmas_for(kernel, 3)
    with ddfast.use_backend(backend):
        assert torch.autograd.gradcheck(lambda a, b: ddfast.mmd(a, b, kernel, sigmas, estimator),
                                        (x.requires_grad_(), y.requires_grad_()))


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_gradcheck_class_form(backend, estimator):
    f_syn, y_syn, f_real, y_real = _labelled([2, 3, 0], [3, 2, 0], 3, seed=15)
    with ddfast.use_backend(backend):
        assert torch.autograd.gradcheck(
            lambda a, b: ddfast.class_mmd(a, y_syn, b, y_real, 3, "gaussian", [0.7, 2.0], estimator, reduction="none"),
            (f_syn.requires_grad_(), f_real.requires_grad_()))


@pytest.mark.parametrize("offsets", [False, True])
@pytest.mark.parametrize("kernel", KERNELS)
def test_opcheck(kernel, offsets):
    x, y = samples(5, 6, 3, dtype=torch.float32, seed=16)
    xo = torch.tensor([0, 2, 2, 5]) if offsets else None
    yo = torch.tensor([0, 3, 3, 6]) if offsets else None
    sigmas = sigmas_for(kernel, 3) or []
    result = torch.library.opcheck(mmd_op, (x.requires_grad_(), y.requires_grad_(), xo, yo, kernel, sigmas, "biased"))
    assert set(result.values()) == {"SUCCESS"}, result
    grad_out = torch.ones(3 if offsets else ())
    result = torch.library.opcheck(mmd_backward_op, (grad_out, x.detach(), y.detach(), xo, yo, kernel, sigmas,
                                                     "unbiased", True, False, "reference"))
    assert set(result.values()) == {"SUCCESS"}, result


def test_torch_compile_fullgraph():
    """aot_eager traces the same graph as inductor (dynamo, fake kernels, AOT autograd) without
    compiling C++ for minutes on 2 cores, and runs the custom op's real kernels."""
    f_syn, y_syn, f_real, y_real = _labelled([3, 4, 2], [5, 6, 4], 8, dtype=torch.float32, seed=17)

    def loss(a, b):
        return ddfast.class_mmd(a, y_syn, b, y_real, 3, "gaussian", [1.0, 4.0]) + ddfast.mmd(a, b, "linear") * 0.5

    fs = f_syn.requires_grad_()
    got = torch.compile(loss, fullgraph=True, backend="aot_eager")(fs, f_real)
    (got_g,) = torch.autograd.grad(got, (fs,))
    want = loss(fs, f_real)
    (want_g,) = torch.autograd.grad(want, (fs,))
    assert_close(got, want, torch.float32, "compiled forward")
    assert_close(got_g, want_g, torch.float32, "compiled backward")


# Tier 4: bad inputs raise errors naming the argument.
def _xy(n=4, m=5, d=3, dtype=torch.float32):
    return torch.ones(n, d, dtype=dtype), torch.ones(m, d, dtype=dtype)


def _labels(n, k=2):
    return torch.arange(n) % k


BAD_MMD = [
    (lambda x, y: ddfast.mmd(x, torch.ones(5, 4), "gaussian", [1.0]), ValueError, "x has 3 features .* y has 4"),
    (lambda x, y: ddfast.mmd(x, y, "gaussian", [1.0, 0.0]), ValueError, r"sigmas\[1\] must be positive"),
    (lambda x, y: ddfast.mmd(x, y, "gaussian", [-2.0]), ValueError, r"sigmas\[0\] must be positive"),
    (lambda x, y: ddfast.mmd(x, y, "imq", [float("inf")]), ValueError, r"sigmas\[0\] must be positive and finite"),
    (lambda x, y: ddfast.mmd(x, y, "gaussian"), ValueError, "sigmas is required for kernel='gaussian'"),
    (lambda x, y: ddfast.mmd(x, y, "imq", []), ValueError, "sigmas is empty"),
    (lambda x, y: ddfast.mmd(x, y, "gaussian", 1.0), TypeError, "sigmas must be a list or tuple"),
    (lambda x, y: ddfast.mmd(x, y, "linear", [1.0]), ValueError, "sigmas must be None or empty for kernel='linear'"),
    (lambda x, y: ddfast.mmd(x, y, "rbf", [1.0]), ValueError, "kernel must be one of"),
    (lambda x, y: ddfast.mmd(x, y, "linear", estimator="mle"), ValueError, "estimator must be one of"),
    (lambda x, y: ddfast.mmd(x[:1], y, "linear", estimator="unbiased"), ValueError,
     "x has 1 rows; estimator='unbiased'"),
    (lambda x, y: ddfast.mmd(x, y[:1], "linear", estimator="unbiased"), ValueError, "y has 1 rows"),
    (lambda x, y: ddfast.mmd(x[:0], y, "linear"), ValueError, "x has 0 rows"),
    (lambda x, y: ddfast.mmd(x, y.double(), "linear"), TypeError, "y has dtype torch.float64 but x has torch.float32"),
    (lambda x, y: ddfast.mmd(x, y.to("meta"), "linear"), ValueError, "y is on meta but x is on cpu"),
    (lambda x, y: ddfast.mmd(x.long(), y.long(), "linear"), TypeError, "x has dtype torch.int64"),
    (lambda x, y: ddfast.mmd(x[0], y, "linear"), ValueError, r"x must be 2-D \[rows, features\]"),
    (lambda x, y: ddfast.mmd(x.numpy(), y, "linear"), TypeError, "x must be a torch.Tensor"),
    # class_mmd
    (lambda x, y: ddfast.class_mmd(x, _labels(4), y, _labels(5), 2, "linear"), None, None),
    (lambda x, y: ddfast.class_mmd(x, _labels(4, 3), y, _labels(5), 2, "linear"), ValueError,
     r"y_syn has label 2 outside \[0, num_classes=2\)"),
    (lambda x, y: ddfast.class_mmd(x, _labels(4), y, _labels(5) - 1, 2, "linear"), ValueError, "y_real has label -1"),
    (lambda x, y: ddfast.class_mmd(x, _labels(4).int(), y, _labels(5), 2, "linear"), TypeError,
     "y_syn must have dtype torch.int64"),
    (lambda x, y: ddfast.class_mmd(x, _labels(3), y, _labels(5), 2, "linear"), ValueError,
     r"y_syn must be 1-D with one label per row of f_syn \(4\)"),
    (lambda x, y: ddfast.class_mmd(x, _labels(4), y, _labels(5)[:, None], 2, "linear"), ValueError,
     "y_real must be 1-D"),
    (lambda x, y: ddfast.class_mmd(x, torch.zeros(4, dtype=torch.long), y, _labels(5), 2, "linear"), ValueError,
     "class 1 has no rows in y_syn but 2 in y_real"),
    (lambda x, y: ddfast.class_mmd(x, _labels(4), y, torch.ones(5, dtype=torch.long), 2, "linear"), ValueError,
     "class 0 has no rows in y_real but 2 in y_syn"),
    (lambda x, y: ddfast.class_mmd(x, torch.tensor([0, 0, 0, 1]), y, _labels(5), 2, "linear", estimator="unbiased"),
     ValueError, "class 1 has 1 row in y_syn; estimator='unbiased'"),
    (lambda x, y: ddfast.class_mmd(x, _labels(4), y, _labels(5), 0, "linear"), ValueError,
     "num_classes must be at least 1"),
    (lambda x, y: ddfast.class_mmd(x, _labels(4), y, _labels(5), 2.0, "linear"), TypeError,
     "num_classes must be an int"),
    (lambda x, y: ddfast.class_mmd(x, _labels(4), y, _labels(5), 2, "linear", reduction="mean"), ValueError,
     "reduction must be one of"),
    (lambda x, y: ddfast.class_mmd(x, _labels(4), y, _labels(5), 2, "linear", missing="skip"), ValueError,
     "missing must be one of"),
    (lambda x, y: ddfast.class_mmd(x, _labels(4), y.half(), _labels(5), 2, "linear"), TypeError,
     "f_real has dtype torch.float16 but f_syn"),
    (lambda x, y: ddfast.class_mmd(x, _labels(4), torch.ones(5, 2), _labels(5), 2, "linear"), ValueError,
     "f_syn has 3 features"),
    (lambda x, y: ddfast.class_mmd(x, _labels(4), y, _labels(5).to("meta"), 2, "linear"), ValueError,
     "y_real is on meta but f_real is on cpu"),
]


@pytest.mark.parametrize("index", range(len(BAD_MMD)))
def test_bad_inputs(index):
    call, error, message = BAD_MMD[index]
    x, y = _xy()
    if error is None:  # the well-formed call the bad ones are variations of
        assert torch.isfinite(call(x, y))
        return
    with pytest.raises(error, match=message):
        call(x, y)


def test_missing_ignore_allows_one_sided_class_and_unbiased_skips_it():
    x, y = _xy()
    out = ddfast.class_mmd(x, torch.zeros(4, dtype=torch.long), y, torch.tensor([0, 0, 0, 0, 1]), 2, "linear",
                           estimator="unbiased", reduction="none", missing="ignore")
    assert out[1] == 0


# The fused path's memory is O(N + M): N = M = 6000, D = 8 would need 144 MB per N x M fp32 matrix.
MEMORY_SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {root!r})
    import ddfast
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    def step(n):
        x = torch.randn(n, 8, generator=g).requires_grad_()
        y = (torch.randn(n, 8, generator=g) + 0.5).requires_grad_()
        with ddfast.use_backend({backend!r}):
            out = ddfast.mmd(x, y, "gaussian", [1.0, 2.0, 4.0])
            torch.autograd.grad(out, (x, y))
    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    step(600)  # warm up: libraries, thread pools, allocator
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident size
    before = status("VmRSS")
    step({n})
    print(status("VmHWM") - before)
""")


def _peak_growth(backend: str, n: int) -> int:
    script = MEMORY_SCRIPT.format(root=str(ROOT), backend=backend, n=n)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout.strip().splitlines()[-1])


def test_cpp_memory_is_linear_in_rows():
    if "cpp" not in cpu_backends():
        pytest.fail("ddfast._C is not built")
    n = 6000
    matrix = n * n * 4
    growth = _peak_growth("cpp", n)
    print(f"peak RSS growth {growth / 2**20:.1f} MiB")
    # Inputs, gradients and norms are ~1 MB; the tile workspace ~2 MB. One N x M matrix would be 144 MB.
    assert growth < matrix // 8, (f"peak RSS grew by {growth / 2**20:.1f} MiB (one N x M matrix: "
                                  f"{matrix / 2**20:.0f} MiB)")


def test_memory_probe_sees_quadratic_memory():
    """The probe above can fail: the tensorised reference at N = M = 2000 grows by several N x M matrices."""
    n = 2000
    assert _peak_growth("reference", n) > n * n * 4


def test_unvalidated_one_row_class_is_nan_in_every_backend():
    """Under torch.compile the value checks are skipped: a class with one row under the unbiased
    estimator then gives NaN (an infinite weight on an empty sum) in every backend, never a crash."""
    x, y = samples(3, 4, 2, seed=18)
    xo, yo = torch.tensor([0, 1, 3]), torch.tensor([0, 2, 4])
    for backend in cpu_backends():
        with ddfast.use_backend(backend):
            out = mmd_op(x, y, xo, yo, "gaussian", [1.0], "unbiased")
        assert torch.isnan(out[0]) and torch.isfinite(out[1]), backend


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_linear_kernel_keeps_fp32_precision_with_a_large_common_mean(backend, estimator):
    """Features around 100 (DM's regime: the loss pulls both means together). Summing <a, b> over all pairs
    cancels ~1e6-sized terms to ~10 in fp32; the closed form around the means does not."""
    g = seeded(31)
    x = (100 + torch.randn(64, 256, generator=g, dtype=torch.float64)).float()
    y = (100.1 + torch.randn(48, 256, generator=g, dtype=torch.float64)).float()
    want = value_and_grads("reference", x.double(), y.double(), "linear", None, estimator)  # same inputs, fp64
    got = value_and_grads(backend, x, y, "linear", None, estimator)
    for g_, w_, what in zip(got, want, ("value", "d x", "d y")):
        assert_close(g_, w_, torch.float32, what)


def test_linear_reference_equals_expanded_estimator_in_fp64():
    """The closed form around the means is the expanded Gretton estimator, not an approximation of it."""
    x, y = samples(9, 6, 4)
    for estimator in ESTIMATORS:
        got = run("reference", ddfast.mmd, x, y, "linear", None, estimator)
        assert_close(got, torch.tensor(brute_mmd(x, y, "linear", None, estimator), dtype=torch.float64),
                     torch.float64, estimator)
