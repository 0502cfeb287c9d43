"""Triton kernels of param_match_loss, sgd_step and adjoint_step. Tier 5 (CPU tensors under
TRITON_INTERPRET=1, CUDA tensors on a GPU): tiny odd sizes with a small block (several full blocks,
a masked tail, a single element), plain and momentum forms, gradients of some inputs only. GPU tier
(``gpu`` marker): ConvNet-3's 320,010 parameters and a ResNet-18-sized vector in fp32/fp16/bf16,
determinism and opcheck on CUDA."""

from __future__ import annotations

import functools
import importlib

import pytest
import torch

import ddfast
from ddfast.ops.adjoint_step._op import adjoint_step_op
from ddfast.ops.param_match_loss._op import param_match_loss_op
from ddfast.ops.sgd_step._op import sgd_step_op

from conftest import HAS_CUDA, assert_close
from flat_cases import (CONVNET3, GPU_MODES, TINY_SIZES, check_adjoint_step, check_param_match_loss, check_sgd_step,
                        learning_rate, run_param_match_loss as _pml, run_sgd_step, vectors)

pytestmark = pytest.mark.triton
DEVICE = "cuda" if HAS_CUDA else "cpu"
GPU_SIZES = {"convnet3": CONVNET3, "resnet18": 11_173_962}
PML = pytest.mark.validates("param_match_loss", "triton")
SGD = pytest.mark.validates("sgd_step", "triton")
ADJ = pytest.mark.validates("adjoint_step", "triton")


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 64 elements (the interpreter runs one program per block), so tiny vectors span
    several full blocks and a masked tail, and the finalize loops over several chunks of partials."""
    if HAS_CUDA:
        return
    for op in ("param_match_loss", "sgd_step", "adjoint_step"):
        module = importlib.import_module(f"ddfast.ops.{op}.triton")
        monkeypatch.setattr(module, "BLOCK", 64)
        if hasattr(module, "FINALIZE_BLOCK"):
            monkeypatch.setattr(module, "FINALIZE_BLOCK", 2)


_check_pml = functools.partial(check_param_match_loss, "triton", device=DEVICE)
_check_sgd = functools.partial(check_sgd_step, "triton", device=DEVICE)
_check_adjoint = functools.partial(check_adjoint_step, "triton", device=DEVICE)


# Tier 5 (interpreter on CPU, or a GPU).
@PML
@pytest.mark.parametrize("size", TINY_SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_param_match_loss_triton(small_blocks, size, dtype):
    _check_pml(TINY_SIZES[size], dtype, seed=1)


@PML
def test_param_match_loss_triton_some_gradients(small_blocks):
    _check_pml(130, torch.float32, seed=2, need=(False, True, False))


@SGD
@ADJ  # the backward runs adjoint_step's kernels
@pytest.mark.parametrize("size", TINY_SIZES)
@pytest.mark.parametrize("mode", GPU_MODES)
def test_sgd_step_triton(small_blocks, size, mode):
    _check_sgd(TINY_SIZES[size], torch.float32, mode, seed=3)


@SGD
@ADJ
def test_sgd_step_triton_fp16(small_blocks):
    _check_sgd(300, torch.float16, "momentum", seed=4)


@ADJ
@pytest.mark.parametrize("size", TINY_SIZES)
@pytest.mark.parametrize("mode", GPU_MODES)
def test_adjoint_step_triton(small_blocks, size, mode):
    _check_adjoint(TINY_SIZES[size], torch.float32, mode, seed=5)


@PML
@SGD
@ADJ
def test_triton_rejects_fp64():
    a, b, c = vectors(3, 3, torch.float64, device=DEVICE)
    with ddfast.use_backend("triton"):
        for fn in (lambda: ddfast.param_match_loss(a, b, c), lambda: ddfast.sgd_step(a, b, 0.1),
                   lambda: ddfast.adjoint_step(a, None, b, 0.1)):
            with pytest.raises(ddfast.BackendUnavailableError, match="torch.float64"):
                fn()


# GPU tier.
GPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@PML
@pytest.mark.gpu
@pytest.mark.parametrize("size", GPU_SIZES)
@pytest.mark.parametrize("dtype", GPU_DTYPES)
def test_gpu_param_match_loss(size, dtype):
    _check_pml(GPU_SIZES[size], dtype, seed=10, device="cuda")


@SGD
@ADJ  # the backward runs adjoint_step's kernels
@pytest.mark.gpu
@pytest.mark.parametrize("size", GPU_SIZES)
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("mode", GPU_MODES)
def test_gpu_sgd_step(size, dtype, mode):
    _check_sgd(GPU_SIZES[size], dtype, mode, seed=11, device="cuda")


@ADJ
@pytest.mark.gpu
@pytest.mark.parametrize("size", GPU_SIZES)
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("mode", GPU_MODES)
def test_gpu_adjoint_step(size, dtype, mode):
    _check_adjoint(GPU_SIZES[size], dtype, mode, seed=12, device="cuda")


@PML
@SGD
@ADJ
@pytest.mark.gpu
def test_gpu_unaligned_views():
    """Views starting 4 bytes into their storage: the kernels take the masked (unaligned) path."""
    storage = vectors(5, CONVNET3 + 1, torch.float32, seed=13, device="cuda")
    n, s, t, lam, d = (x[1:] for x in storage)
    lr = learning_rate(torch.float32, device="cuda")
    with ddfast.use_backend("triton"):
        got = (ddfast.param_match_loss(n, s, t), ddfast.sgd_step(n, s, lr), *ddfast.adjoint_step(lam, t, d, lr, 0.9))
    with ddfast.use_backend("reference"):
        want = (ddfast.param_match_loss(n, s, t), ddfast.sgd_step(n, s, lr), *ddfast.adjoint_step(lam, t, d, lr, 0.9))
    for g, w in zip(got, want):
        assert_close(g, w, torch.float32, "unaligned")


@PML
@SGD
@ADJ
@pytest.mark.gpu
def test_gpu_deterministic():
    n, s, t, v = vectors(4, GPU_SIZES["resnet18"], torch.float32, seed=14, device="cuda")
    lr = learning_rate(torch.float32, device="cuda")
    runs = [(*_pml("triton", n, s, t), *sum(run_sgd_step("triton", n, s, lr, v, 0.9), ())) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@PML
@SGD
@ADJ
@pytest.mark.gpu
def test_gpu_opcheck():
    n, s, t = vectors(3, 5000, torch.float32, seed=15, device="cuda")
    lr = learning_rate(torch.float32, device="cuda").requires_grad_()
    with ddfast.use_backend("triton"):
        for op, args in ((param_match_loss_op, (n.requires_grad_(), s, t)),
                         (sgd_step_op, (n, s.requires_grad_(), lr, t, 0.9, True)),
                         (adjoint_step_op, (n.detach(), t, s.detach(), lr.detach(), 0.9, True, ""))):
            result = torch.library.opcheck(op, args)
            assert set(result.values()) == {"SUCCESS"}, result
