"""DSA's Triton kernels. Tier 5 (CPU tensors under TRITON_INTERPRET=1, CUDA tensors on a GPU): tiny odd
images (non-power-of-two sizes, pixel blocks with masked tails, 1 and 3 channels, batch 1), every family,
DC's 'M' sequence, compose=True, odd family orders, shared / per-sample / group sets. GPU tier (``gpu``):
DC's shapes in fp32/fp16/bf16 and determinism."""

from __future__ import annotations

import pytest
import torch

import ddfast

from conftest import HAS_CUDA, assert_close, seeded

pytestmark = [pytest.mark.triton, pytest.mark.validates("dsa", "triton")]
DEVICE = "cuda" if HAS_CUDA else "cpu"
DC = "color_crop_cutout_flip_scale_rotate"


def _run(backend, x, params, group_index=None, compose=False):
    x = x.detach().clone().requires_grad_()
    with ddfast.use_backend(backend):
        y = ddfast.dsa(x, params, group_index, compose)
    up = torch.randn(y.shape, generator=seeded(7), dtype=torch.float64).to(device=y.device, dtype=y.dtype)
    (dx,) = torch.autograd.grad(y, x, up)
    return y, dx


def _check(shape, strategy, dtype=torch.float32, compose=False, rows="sample", seed=0):
    n = shape[0]
    x = torch.randn(shape, generator=seeded(seed), dtype=torch.float64).to(device=DEVICE, dtype=dtype)
    gen = torch.Generator(device=DEVICE).manual_seed(seed + 1)
    group_index = None
    if rows == "group":
        params = ddfast.dsa_sample(n, strategy, gen, mode="M", groups=3)
        group_index = torch.arange(n, device=DEVICE) % 3
    else:
        params = ddfast.dsa_sample(n, strategy, gen, mode="M", shared=rows == "shared")
    got = _run("triton", x, params, group_index, compose)
    want = _run("reference", x.double(), params, group_index, compose)
    for g, w, what in zip(got, want, ("out", "dx")):
        assert g.dtype == dtype
        assert_close(g, w, dtype, f"{strategy} {what}")


@pytest.mark.parametrize("family", ["color", "crop", "cutout", "flip", "scale", "rotate"])
def test_each_family(family):
    _check((2, 3, 7, 9), family)


@pytest.mark.parametrize("compose", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 13, 11), (1, 1, 5, 6), (3, 3, 17, 16)], ids=str)
def test_m_mode(shape, compose):
    _check(shape, DC, compose=compose)


@pytest.mark.parametrize("strategy", ["rotate_crop_color_flip", "scale_cutout_crop_rotate", "flip_crop"])
def test_odd_orders(strategy):
    _check((2, 2, 9, 7), strategy)


@pytest.mark.parametrize("rows", ["shared", "group"])
def test_shared_and_group_sets(rows):
    _check((4, 3, 6, 5), DC, rows=rows)


# --- GPU tier ------------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("compose", [False, True])
def test_gpu_dc_shapes(dtype, size, compose):
    _check((256, 3, size, size), DC, dtype=dtype, compose=compose)


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["color", "crop", "cutout", "flip", "scale", "rotate"])
def test_gpu_families_28x28x1(family):
    _check((256, 1, 28, 28), family)


@pytest.mark.gpu
def test_gpu_deterministic_and_groups():
    _check((100, 3, 32, 32), DC, rows="group")
    x = torch.randn(64, 3, 32, 32, device="cuda")
    params = ddfast.dsa_sample(64, DC, torch.Generator(device="cuda").manual_seed(0), mode="M", shared=False)
    a, b = _run("triton", x, params), _run("triton", x, params)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
