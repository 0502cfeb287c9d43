"""Tier 5: mmd's Triton kernels against the reference (CPU tensors under TRITON_INTERPRET=1, CUDA
tensors on a GPU) on tiny odd shapes: tiles larger than the inputs, several tiles with ragged tails
(blocks shrunk to 16), one-row sides, classes with one or no rows. The GPU tier (marked ``gpu``,
skipped without CUDA) checks realistic shapes in fp32/fp16/bf16."""

from __future__ import annotations

import math

import pytest
import torch

import ddfast
from ddfast.ops.mmd import triton as mmd_triton

from conftest import HAS_CUDA, assert_close, seeded

pytestmark = [pytest.mark.triton, pytest.mark.validates("mmd", "triton")]
DEVICE = "cuda" if HAS_CUDA else "cpu"
KERNELS = ("gaussian", "imq", "linear")
ESTIMATORS = ("biased", "unbiased")


@pytest.fixture
def small_tiles(monkeypatch):
    """16-row tiles and 16-wide feature chunks (tl.dot's minimum), so tiny inputs span several tiles,
    and the class lookup in steps of 4 classes, so 5 classes take two steps."""
    for name in ("BLOCK_M", "BLOCK_N", "BLOCK_D"):
        monkeypatch.setattr(mmd_triton, name, 16)
    monkeypatch.setattr(mmd_triton, "BLOCK_K", 4)


def sigmas_for(kernel, dim):
    return None if kernel == "linear" else [0.5 * math.sqrt(dim), 2.0 * math.sqrt(dim)]


def samples(n, m, d, dtype=torch.float32, seed=0):
    g = seeded(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = 1.3 * torch.randn(m, d, generator=g, dtype=torch.float64) + 1.0  # MMD^2 well away from 0 (no cancellation)
    return x.to(dtype=dtype, device=DEVICE), y.to(dtype=dtype, device=DEVICE)


def value_and_grads(backend, fn, tensors, upstream):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    with ddfast.use_backend(backend):
        out = fn(*leaves)
        grads = torch.autograd.grad(out, leaves, upstream.to(device=out.device, dtype=out.dtype))
    return (out, *grads)


def check_against_reference(fn, tensors, dtype, what, upstream=None):
    want = value_and_grads("reference", fn, [t.double() for t in tensors],
                           torch.tensor(1.7, dtype=torch.float64) if upstream is None else upstream)
    got = value_and_grads("triton", fn, tensors, torch.tensor(1.7) if upstream is None else upstream)
    assert got[0].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == (got[0].dtype if i == 0 else dtype)
        assert_close(g, w, dtype, f"{what} {'value' if i == 0 else f'grad {i - 1}'}")


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("n, m, d", [(5, 7, 3), (2, 1, 5)])
def test_triton_mmd_tiles_larger_than_inputs(n, m, d, kernel, estimator):
    if estimator == "unbiased" and m < 2:
        m = 3  # 2 rows per side at least
    x, y = samples(n, m, d, seed=n * m)
    check_against_reference(lambda a, b: ddfast.mmd(a, b, kernel, sigmas_for(kernel, d), estimator), (x, y),
                            torch.float32, f"{n}x{m}x{d} {kernel}/{estimator}")


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_triton_mmd_several_tiles(small_tiles, kernel, estimator):
    x, y = samples(37, 21, 19, seed=3)  # 3 x 2 tiles with ragged tails, 2 feature chunks
    check_against_reference(lambda a, b: ddfast.mmd(a, b, kernel, sigmas_for(kernel, 19), estimator), (x, y),
                            torch.float32, f"several tiles {kernel}/{estimator}")


def _labelled(counts_syn, counts_real, d, seed):
    g = seeded(seed)
    y_syn = torch.repeat_interleave(torch.arange(len(counts_syn)), torch.tensor(counts_syn))
    y_real = torch.repeat_interleave(torch.arange(len(counts_real)), torch.tensor(counts_real))
    y_syn, y_real = y_syn[torch.randperm(len(y_syn), generator=g)], y_real[torch.randperm(len(y_real), generator=g)]
    f_syn, f_real = samples(len(y_syn), len(y_real), d, seed=seed + 1)
    return f_syn, y_syn.to(DEVICE), f_real, y_real.to(DEVICE)


@pytest.mark.parametrize("kernel, estimator", [("gaussian", "biased"), ("imq", "unbiased"), ("linear", "unbiased"),
                                               ("linear", "biased")])
def test_triton_class_mmd(small_tiles, kernel, estimator):
    # class 0 spans 2 x-tiles and 3 y-tiles, class 2 is empty on both sides, class 1 has one row in
    # y_syn (biased only), class 3 is one-sided (missing="ignore").
    counts_syn = [20, 1 if estimator == "biased" else 2, 0, 3, 0]
    counts_real = [33, 4, 0, 2, 5]
    f_syn, y_syn, f_real, y_real = _labelled(counts_syn, counts_real, 5, seed=7)
    upstream = torch.linspace(0.5, 2.0, 5, dtype=torch.float64, device=DEVICE)
    check_against_reference(
        lambda a, b: ddfast.class_mmd(a, y_syn, b, y_real, 5, kernel, sigmas_for(kernel, 5), estimator,
                                      reduction="none", missing="ignore"),
        (f_syn, f_real), torch.float32, f"class form {kernel}/{estimator}", upstream)


def test_triton_one_sided_gradient_and_determinism():
    x, y = samples(9, 11, 6, seed=9)
    xr = x.clone().requires_grad_()
    with ddfast.use_backend("triton"):
        runs = [torch.autograd.grad(ddfast.mmd(xr, y, "gaussian", [1.0, 3.0]), (xr,))[0] for _ in range(2)]
        first, again = (ddfast.mmd(x, y, "imq", [2.0], "unbiased") for _ in range(2))
    assert torch.equal(runs[0], runs[1]) and torch.equal(first, again)
    assert y.grad is None
    want = value_and_grads("reference", lambda a: ddfast.mmd(a, y.double(), "gaussian", [1.0, 3.0]), [x.double()],
                           torch.tensor(1.0, dtype=torch.float64))[1]
    assert_close(runs[0], want, torch.float32, "grad x only")


def test_triton_nan_propagates():
    x, y = samples(4, 6, 3, seed=10)
    x[1, 2] = float("nan")
    with ddfast.use_backend("triton"):
        for kernel in KERNELS:
            assert torch.isnan(ddfast.mmd(x, y, kernel, sigmas_for(kernel, 3)))


# GPU tier: realistic shapes (DM/IDM embeddings: 2048 features), fp32/fp16/bf16.
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kernel, estimator", [("gaussian", "biased"), ("imq", "unbiased"), ("linear", "biased")])
def test_gpu_mmd_realistic(dtype, kernel, estimator):
    x, y = samples(1000, 777, 2048, dtype=dtype, seed=11)
    check_against_reference(lambda a, b: ddfast.mmd(a, b, kernel, sigmas_for(kernel, 2048), estimator), (x, y),
                            dtype, f"gpu {dtype} {kernel}/{estimator}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_class_mmd_realistic(dtype):
    """DM on CIFAR-10: 10 classes, IPC 50 synthetic and 256 real rows per class, 2048 features."""
    f_syn, y_syn, f_real, y_real = _labelled([50] * 10, [256] * 10, 2048, seed=12)
    f_syn, f_real = f_syn.to(dtype), f_real.to(dtype)
    upstream = torch.linspace(0.5, 2.0, 10, dtype=torch.float64, device=DEVICE)
    check_against_reference(
        lambda a, b: ddfast.class_mmd(a, y_syn, b, y_real, 10, "gaussian", sigmas_for("gaussian", 2048),
                                      reduction="none"), (f_syn, f_real), dtype, f"gpu class form {dtype}", upstream)


@pytest.mark.gpu
def test_gpu_large_rows_deterministic():
    x, y = samples(20000, 9000, 64, seed=13)
    xr = x.clone().requires_grad_()
    with ddfast.use_backend("triton"):
        outs = [ddfast.mmd(xr, y, "gaussian", [4.0, 8.0]) for _ in range(2)]
        grads = [torch.autograd.grad(o, (xr,))[0] for o in outs]
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_triton_linear_kernel_with_a_large_common_mean(estimator):
    """The linear kernel runs the closed form around the class means: fp32 keeps the value of features
    around 100, where summing <a, b> over all pairs would cancel catastrophically."""
    g = seeded(33)
    x = (100 + torch.randn(20, 64, generator=g, dtype=torch.float64)).float().to(DEVICE)
    y = (100.1 + torch.randn(17, 64, generator=g, dtype=torch.float64)).float().to(DEVICE)
    check_against_reference(lambda a, b: ddfast.mmd(a, b, "linear", None, estimator), [x, y], torch.float32,
                            "linear, mean 100")
