"""class_mean_distance's Triton kernels. Tier 5 (CPU tensors under TRITON_INTERPRET=1, CUDA tensors on a
GPU): tiny odd shapes - non-power-of-two feature counts, several column blocks, class segments longer
than one row block, one row, a class on one side only, gradients of one side only. GPU tier
(``gpu`` marker): realistic DM shapes in fp32/fp16/bf16, determinism and opcheck on CUDA."""

from __future__ import annotations

import pytest
import torch

import ddfast
from ddfast.ops.class_mean_distance._op import class_mean_distance_op

from cmd_cases import REALISTIC, brute_force, make_case
from conftest import HAS_CUDA, assert_close

pytestmark = [pytest.mark.triton, pytest.mark.validates("class_mean_distance", "triton")]
DEVICE = "cuda" if HAS_CUDA else "cpu"
TINY = {"odd": (3, 3, 5, 130), "long_segment": (2, 3, 70, 9), "one_row": (1, 1, 1, 1), "k5": (5, 1, 2, 257)}


def _run(backend, f_syn, y_syn, f_real, y_real, classes, reduction, need_real=True, missing="raise"):
    f_syn = f_syn.detach().clone().requires_grad_()
    f_real = f_real.detach().clone().requires_grad_(need_real)
    with ddfast.use_backend(backend):
        loss = ddfast.class_mean_distance(f_syn, y_syn, f_real, y_real, classes, reduction, missing)
        weights = torch.linspace(0.5, 1.5, loss.numel(), device=loss.device).reshape(loss.shape)
        grads = torch.autograd.grad((loss * weights).sum(), (f_syn, f_real) if need_real else (f_syn,))
    return (loss, *grads)


def _check(inputs, classes, reduction, dtype, need_real=True, missing="raise"):
    got = _run("triton", *inputs, classes, reduction, need_real, missing)
    ref = [t.double() if t.is_floating_point() else t for t in inputs]
    want = _run("reference", *ref, classes, reduction, need_real, missing)
    for g, w, what in zip(got, want, ("loss", "d f_syn", "d f_real")):
        assert g.dtype == (torch.float32 if what == "loss" else dtype)
        assert_close(g, w, dtype, what)


@pytest.mark.parametrize("case", TINY)
@pytest.mark.parametrize("reduction", ["none", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_matches_reference(case, reduction, dtype):
    classes = TINY[case][0]
    _check(make_case(*TINY[case], dtype, seed=20, device=DEVICE), classes, reduction, dtype)


def test_one_sided_class_ignored_and_one_side_differentiated():
    f_syn, y_syn, f_real, y_real = make_case(4, 2, 3, 33, torch.float32, seed=21, device=DEVICE)
    y_syn = torch.where(y_syn == 3, 0, y_syn)
    _check((f_syn, y_syn, f_real, y_real), 6, "none", torch.float32, need_real=False, missing="ignore")


def test_triton_rejects_fp64():
    f_syn, y_syn, f_real, y_real = make_case(2, 1, 1, 3, torch.float64, device=DEVICE)
    with ddfast.use_backend("triton"), pytest.raises(ddfast.BackendUnavailableError, match="torch.float64"):
        ddfast.class_mean_distance(f_syn, y_syn, f_real, y_real, 2)


# GPU tier.
@pytest.mark.gpu
@pytest.mark.parametrize("case", REALISTIC)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_gpu_realistic_shapes(case, dtype, reduction):
    classes = REALISTIC[case][0]
    _check(make_case(*REALISTIC[case], dtype, seed=22, device="cuda"), classes, reduction, dtype)


@pytest.mark.gpu
def test_gpu_cifar100_classes_and_brute_force():
    inputs = make_case(100, 10, 50, 2048, torch.float32, seed=23, device="cuda")
    with ddfast.use_backend("triton"):
        got = ddfast.class_mean_distance(*inputs, 100, reduction="none")
    assert_close(got, brute_force(*inputs, 100), torch.float32, "CIFAR-100 shapes")


@pytest.mark.gpu
def test_gpu_deterministic():
    inputs = make_case(10, 50, 256, 2048, torch.float32, seed=24, device="cuda")
    a = _run("triton", *inputs, 10, "none")
    b = _run("triton", *inputs, 10, "none")
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.gpu
def test_gpu_opcheck():
    f_syn, y_syn, f_real, y_real = make_case(3, 2, 3, 40, torch.float32, seed=25, device="cuda")
    with ddfast.use_backend("triton"):
        result = torch.library.opcheck(class_mean_distance_op, (f_syn.requires_grad_(), y_syn,
                                                                f_real.requires_grad_(), y_real, 3, True))
    assert set(result.values()) == {"SUCCESS"}, result


def test_out_of_range_labels_are_never_read():
    """Under torch.compile the label checks are skipped; the Triton kernels then leave rows with labels
    outside [0, K) out (no out-of-bounds access) and give them gradient 0."""
    f_syn, y_syn, f_real, y_real = make_case(3, 2, 3, 9, torch.float32, seed=26, device=DEVICE)
    bad_syn = y_syn.clone()
    bad_syn[0] = 3  # would collide with real class 0's key if not mapped out
    bad_real = y_real.clone()
    bad_real[1] = -1
    keep_s, keep_r = bad_syn < 3, bad_real >= 0
    f_syn = f_syn.requires_grad_()
    with ddfast.use_backend("triton"):
        got, _, _ = class_mean_distance_op(f_syn, bad_syn, f_real, bad_real, 3, True)
        (d_syn,) = torch.autograd.grad(got.sum(), f_syn)
    want = brute_force(f_syn[keep_s].detach(), y_syn[keep_s], f_real[keep_r], y_real[keep_r], 3)
    assert_close(got, want, torch.float32, "loss without the out-of-range rows")
    assert torch.all(d_syn[0] == 0)
