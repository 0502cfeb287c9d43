"""class_mean_distance, tiers 1-4 on CPU: the reference against DM's per-class loop in fp64, the C++
kernels against the reference, gradcheck, opcheck, torch.compile, and bad inputs."""

from __future__ import annotations

import pytest
import torch

import ddfast
from ddfast.ops.class_mean_distance._op import class_mean_distance_backward_op, class_mean_distance_op

from cmd_cases import ODD, REALISTIC, brute_force, make_case
from conftest import assert_close, cpu_backends

CASES = {**REALISTIC, **ODD}


def _loss_and_grads(backend, f_syn, y_syn, f_real, y_real, classes, reduction="none", missing="raise"):
    f_syn = f_syn.detach().clone().requires_grad_()
    f_real = f_real.detach().clone().requires_grad_()
    with ddfast.use_backend(backend):
        loss = ddfast.class_mean_distance(f_syn, y_syn, f_real, y_real, classes, reduction, missing)
        weights = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
        d_syn, d_real = torch.autograd.grad((loss * weights).sum(), (f_syn, f_real))
    return loss, d_syn, d_real


def _brute_force_grads(f_syn, y_syn, f_real, y_real, classes, reduction):
    f_syn = f_syn.detach().double().requires_grad_()
    f_real = f_real.detach().double().requires_grad_()
    loss = brute_force(f_syn, y_syn, f_real, y_real, classes)
    if reduction == "sum":
        loss = loss.sum()
    weights = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    return (loss.detach(), *torch.autograd.grad((loss * weights).sum(), (f_syn, f_real)))


# Tier 1: the reference is DM's loop.
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_reference_matches_dm_loop(case, reduction):
    classes = CASES[case][0]
    inputs = make_case(*CASES[case], torch.float64, seed=1)
    got = _loss_and_grads("reference", *inputs, classes, reduction)
    want = _brute_force_grads(*inputs, classes, reduction)
    for g, w, what in zip(got, want, ("loss", "d f_syn", "d f_real")):
        assert_close(g, w, torch.float64, f"{case} {what}")


def test_class_absent_on_both_sides_contributes_zero_and_one_sided_is_ignored_on_request():
    f_syn, y_syn, f_real, y_real = make_case(4, 2, 3, 6, torch.float64, seed=2)
    y_syn = torch.where(y_syn == 3, 0, y_syn)  # class 3: real rows only
    y_real = torch.where(y_real == 2, 1, y_real)  # class 2: synthetic rows only
    for backend in cpu_backends():
        loss, d_syn, d_real = _loss_and_grads(backend, f_syn, y_syn, f_real, y_real, 5, missing="ignore")
        want, want_syn, want_real = _brute_force_grads(f_syn, y_syn, f_real, y_real, 5, "none")
        assert loss[2] == 0 and loss[3] == 0 and loss[4] == 0 and loss[0] > 0
        assert torch.all(d_syn[y_syn == 2] == 0) and torch.all(d_real[y_real == 3] == 0)
        assert_close(loss, want, torch.float64, backend)
        assert_close(d_syn, want_syn, torch.float64, backend)
        assert_close(d_real, want_real, torch.float64, backend)


# Tier 2: each backend against the reference.
@pytest.mark.parametrize("backend", [b for b in cpu_backends() if b != "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_backend_matches_reference(backend, dtype, case, reduction):
    classes = CASES[case][0]
    inputs = make_case(*CASES[case], dtype, seed=3)
    got = _loss_and_grads(backend, *inputs, classes, reduction)
    want = _brute_force_grads(*inputs, classes, reduction)
    assert got[0].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert got[1].dtype == dtype and got[2].dtype == dtype
    for g, w, what in zip(got, want, ("loss", "d f_syn", "d f_real")):
        assert_close(g, w, dtype, f"{backend} {case} {what}")


@pytest.mark.parametrize("backend", cpu_backends())
def test_large_feature_offset_in_fp32(backend):
    """Means of features around 100 with unit spread: accumulating in fp32 keeps the difference."""
    classes = 10
    inputs = make_case(classes, 10, 64, 256, torch.float32, seed=4, offset=100.0)
    got = _loss_and_grads(backend, *inputs, classes)
    want = _brute_force_grads(*inputs, classes, "none")
    assert_close(got[0], want[0], torch.float32, "loss")


@pytest.mark.parametrize("backend", cpu_backends())
def test_gradient_only_where_required(backend):
    f_syn, y_syn, f_real, y_real = make_case(3, 2, 4, 8, torch.float32, seed=5)
    f_syn.requires_grad_()
    with ddfast.use_backend(backend):
        loss = ddfast.class_mean_distance(f_syn, y_syn, f_real, y_real, 3)
        loss.backward()
    assert f_syn.grad is not None and f_real.grad is None
    d_syn, d_real = class_mean_distance_backward_op(torch.ones(()), y_syn, y_real, torch.ones(3, 8),
                                                    torch.ones(2, 3), torch.float32, True, False, backend)
    assert d_syn.shape == (6, 8) and d_real.numel() == 0


@pytest.mark.parametrize("backend", cpu_backends())
def test_nan_propagates_to_its_class_only(backend):
    f_syn, y_syn, f_real, y_real = make_case(3, 2, 4, 8, torch.float32, seed=6)
    f_real[(y_real == 1).nonzero()[0, 0], 3] = float("nan")
    with ddfast.use_backend(backend):
        loss = ddfast.class_mean_distance(f_syn, y_syn, f_real, y_real, 3, reduction="none")
    assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2]]).all()


@pytest.mark.parametrize("backend", cpu_backends())
def test_deterministic_and_non_contiguous(backend):
    f_syn, y_syn, f_real, y_real = make_case(10, 10, 64, 300, torch.float32, seed=7)
    with ddfast.use_backend(backend):
        a = _loss_and_grads(backend, f_syn, y_syn, f_real, y_real, 10)
        b = _loss_and_grads(backend, f_syn, y_syn, f_real, y_real, 10)
        strided = ddfast.class_mean_distance(f_syn.t().contiguous().t(), y_syn, f_real[:, :].T.T, y_real, 10,
                                             reduction="none")
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert_close(strided, a[0], torch.float32, "non-contiguous")


# Tier 3: gradcheck, opcheck, torch.compile.
@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_gradcheck(backend, reduction):
    f_syn, y_syn, f_real, y_real = make_case(3, 2, 3, 5, torch.float64, seed=8)
    y_syn[0] = 2  # unequal class sizes

    def fn(a, b):
        return ddfast.class_mean_distance(a, y_syn, b, y_real, 4, reduction, missing="ignore")

    with ddfast.use_backend(backend):
        assert torch.autograd.gradcheck(fn, (f_syn.requires_grad_(), f_real.requires_grad_()))


@pytest.mark.parametrize("per_class", [True, False])
def test_opcheck(per_class):
    f_syn, y_syn, f_real, y_real = make_case(3, 2, 3, 5, torch.float32, seed=9)
    result = torch.library.opcheck(class_mean_distance_op, (f_syn.requires_grad_(), y_syn, f_real.requires_grad_(),
                                                            y_real, 3, per_class))
    assert set(result.values()) == {"SUCCESS"}, result


def test_opcheck_backward_op():
    f_syn, y_syn, f_real, y_real = make_case(3, 2, 3, 5, torch.float32, seed=10)
    _, diff, scale = class_mean_distance_op(f_syn, y_syn, f_real, y_real, 3, True)
    result = torch.library.opcheck(class_mean_distance_backward_op,
                                   (torch.ones(3), y_syn, y_real, diff, scale, torch.float32, True, True, "reference"))
    assert set(result.values()) == {"SUCCESS"}, result


def test_torch_compile_fullgraph():
    """aot_eager: dynamo, the fake kernels and AOT autograd around the real kernels (Inductor would
    compile C++ for minutes on 2 cores)."""
    f_syn, y_syn, f_real, y_real = make_case(10, 10, 32, 128, torch.float32, seed=11)
    f_syn.requires_grad_()

    def loss(a, b):
        return ddfast.class_mean_distance(a, y_syn, b, y_real, 10) * 2

    got = torch.compile(loss, fullgraph=True, backend="aot_eager")(f_syn, f_real)
    want = loss(f_syn, f_real)
    assert_close(got, want, torch.float32, "compiled forward")
    assert_close(torch.autograd.grad(got, f_syn)[0], torch.autograd.grad(want, f_syn)[0], torch.float32,
                 "compiled backward")


# Tier 4: bad inputs raise errors naming the argument.
def _good():
    return make_case(3, 2, 3, 4, torch.float32, seed=12)


@pytest.mark.parametrize("change, error, message", [
    (lambda a: {**a, "y_syn": a["y_syn"] + 1}, ValueError, r"y_syn has label 3 outside \[0, num_classes=3\)"),
    (lambda a: {**a, "y_real": a["y_real"] - 1}, ValueError, r"y_real has label -1"),
    (lambda a: {**a, "f_real": a["f_real"][:, :3]}, ValueError, r"f_syn has 4 features \(shape \(6, 4\)\) but f_real has 3"),
    (lambda a: {**a, "f_real": a["f_real"].double()}, TypeError, "f_real has dtype torch.float64 but f_syn has torch.float32"),
    (lambda a: {**a, "f_real": a["f_real"].to("meta")}, ValueError, "f_real is on meta but f_syn is on cpu"),
    (lambda a: {**a, "f_syn": a["f_syn"][0]}, ValueError, r"f_syn must be 2-D"),
    (lambda a: {**a, "f_syn": a["f_syn"].long()}, TypeError, "f_syn has dtype torch.int64"),
    (lambda a: {**a, "y_syn": a["y_syn"].float()}, TypeError, "y_syn must have dtype torch.int64"),
    (lambda a: {**a, "y_real": a["y_real"][:-1]}, ValueError, r"y_real must be 1-D with one label per row of f_real"),
    (lambda a: {**a, "y_syn": [0, 1]}, TypeError, "y_syn must be a torch.Tensor"),
    (lambda a: {**a, "num_classes": 0}, ValueError, "num_classes must be at least 1"),
    (lambda a: {**a, "reduction": "mean"}, ValueError, "reduction must be one of"),
    (lambda a: {**a, "missing": "skip"}, ValueError, "missing must be one of"),
    (lambda a: {**a, "num_classes": 4, "y_syn": torch.where(a["y_syn"] == 0, 3, a["y_syn"])}, ValueError,
     r"class 0 has no rows in y_syn but 3 in y_real; pass missing='ignore'"),
])
def test_bad_inputs(change, error, message):
    f_syn, y_syn, f_real, y_real = _good()
    args = change({"f_syn": f_syn, "y_syn": y_syn, "f_real": f_real, "y_real": y_real, "num_classes": 3})
    with pytest.raises(error, match=message):
        ddfast.class_mean_distance(**args)


def test_compiled_kernel_rejects_out_of_range_labels():
    """Value checks are skipped under torch.compile; the C++ kernel still refuses to index out of bounds."""
    f_syn, y_syn, f_real, y_real = _good()
    with pytest.raises(RuntimeError, match="y_real holds label 7"):
        torch.ops.ddfast._class_mean_distance_forward(f_syn, y_syn, f_real, torch.full_like(y_real, 7), 3, True)


@pytest.mark.parametrize("backend", cpu_backends())
def test_ignored_one_sided_class_gives_zero_even_with_inf_rows(backend):
    """A class that does not contribute gives exactly 0 in every backend, whatever its rows hold."""
    f_syn, y_syn = torch.randn(2, 3), torch.tensor([0, 0])
    f_real, y_real = torch.randn(2, 3), torch.tensor([0, 1])
    f_real[1] = float("inf")
    with ddfast.use_backend(backend):
        loss = ddfast.class_mean_distance(f_syn, y_syn, f_real.requires_grad_(), y_real, 2, "none", "ignore")
        (d_real,) = torch.autograd.grad(loss.sum(), f_real)
    assert torch.isfinite(loss).all() and loss[1] == 0 and loss[0] > 0
    assert torch.all(d_real[1] == 0)
