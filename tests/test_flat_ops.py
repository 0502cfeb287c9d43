"""param_match_loss, sgd_step and adjoint_step (the flat-vector ops of the trajectory-matching unroll),
tiers 1-4 on CPU: the references against independent fp64 formulas, the C++ kernels against the
references (ConvNet-3's 320,010 parameters and odd sizes), determinism across thread counts,
gradcheck (and gradgradcheck for sgd_step), opcheck, torch.compile, bad inputs, and the cuda backend as seen
from a CPU machine (registered, refuses CPU tensors, its source hash follows csrc/flat/). The CUDA kernels'
GPU tests are in test_flat_ops_cuda.py."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

import ddfast
from ddfast._source_hash import REPO_DIR, cuda_source_hash
from ddfast.ops.adjoint_step._op import adjoint_step_op
from ddfast.ops.param_match_loss._op import param_match_loss_backward_op, param_match_loss_op
from ddfast.ops.sgd_step._op import sgd_step_op

from conftest import assert_close, cpu_backends, seeded
from flat_cases import (CPU_SIZES, compile_workload, learning_rate, run_param_match_loss as _pml, run_sgd_step as _sgd,
                        vectors)

COMPILED = [b for b in cpu_backends() if b != "reference"]
ALL_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _acc(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---- param_match_loss -------------------------------------------------------------------------------------------

def _pml_formula(n, s, t):
    """MTT's distill.py in fp64: mse_loss(sum) / mse_loss(sum), and its gradient by hand."""
    n, s, t = (x.double() for x in (n, s, t))
    a, b = float(((n - t) ** 2).sum()), float(((s - t) ** 2).sum())
    loss = torch.tensor(a / b, dtype=torch.float64)
    d_n = 1.5 * 2 * (n - t) / b
    d_s = -1.5 * 2 * a / b ** 2 * (s - t)
    return loss, d_n, d_s, -d_n - d_s


@pytest.mark.parametrize("size", CPU_SIZES)
def test_param_match_loss_reference_matches_formula(size):
    inputs = vectors(3, CPU_SIZES[size], torch.float64, seed=1)
    for got, want, what in zip(_pml("reference", *inputs), _pml_formula(*inputs), ("loss", "d_n", "d_start", "d_t")):
        assert_close(got, want, torch.float64, f"{size} {what}")


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("size", CPU_SIZES)
def test_param_match_loss_backend_matches_reference(backend, dtype, size):
    inputs = vectors(3, CPU_SIZES[size], dtype, seed=2)
    got = _pml(backend, *inputs)
    want = _pml("reference", *(x.double() for x in inputs))
    assert got[0].dtype == _acc(dtype) and got[0].dim() == 0
    for g, w, what in zip(got, want, ("loss", "d_n", "d_start", "d_t")):
        assert g.dtype == (_acc(dtype) if what == "loss" else dtype)
        assert_close(g, w, dtype, f"{backend} {size} {what}")


@pytest.mark.parametrize("backend", cpu_backends())
def test_param_match_loss_zero_denominator_and_nan(backend):
    n, t = vectors(2, 9, torch.float32, seed=3)
    with ddfast.use_backend(backend):
        assert torch.isinf(ddfast.param_match_loss(n, t, t))  # no hidden epsilon
        assert torch.isnan(ddfast.param_match_loss(t, t, t))
        n[4] = float("nan")
        assert torch.isnan(ddfast.param_match_loss(n, n.flip(0), t))


@pytest.mark.parametrize("backend", cpu_backends())
def test_param_match_loss_gradient_only_where_required(backend):
    n, s, t = vectors(3, 11, torch.float32, seed=4)
    n.requires_grad_()
    with ddfast.use_backend(backend):
        ddfast.param_match_loss(n, s, t).backward()
        dn, ds, dt = param_match_loss_backward_op(torch.ones(()), n.detach(), s, t, torch.ones(2), True, False, False,
                                                  backend)
    assert n.grad is not None and s.grad is None and t.grad is None
    assert dn.shape == (11,) and ds.numel() == 0 and dt.numel() == 0


# ---- sgd_step ---------------------------------------------------------------------------------------------------

def _sgd_formula(theta, grad, lr, velocity, momentum):
    """AST/MTT in fp64: v' = mu v + g, theta' = theta - lr v' (plain: v' = g, only theta'), and the
    gradients by hand."""
    theta, grad, lr = theta.double(), grad.double(), lr.double()
    v = grad if velocity is None else momentum * velocity.double() + grad
    outs = (theta - lr * v,) + ((v,) if velocity is not None or momentum else ())
    cot = [c.double() for c in vectors(len(outs), theta.numel(), torch.float64, seed=99)]
    gv = cot[1] if len(outs) == 2 else torch.zeros_like(theta)
    u = gv - lr * cot[0]
    grads = [cot[0], u, -(cot[0] * v).sum()] + ([momentum * u] if velocity is not None else [])
    return outs, grads


SGD_MODES = {"plain": (False, 0.0), "first_momentum_step": (False, 0.9), "momentum": (True, 0.9),
             "velocity_mu0": (True, 0.0)}


@pytest.mark.parametrize("mode", SGD_MODES)
@pytest.mark.parametrize("size", CPU_SIZES)
def test_sgd_step_reference_matches_formula(mode, size):
    has_v, mu = SGD_MODES[mode]
    theta, grad, velocity = vectors(3, CPU_SIZES[size], torch.float64, seed=6)
    lr = learning_rate(torch.float64)
    args = (theta, grad, lr, velocity if has_v else None, mu)
    (outs, grads), (want_outs, want_grads) = _sgd("reference", *args), _sgd_formula(*args)
    assert len(outs) == len(want_outs)
    for i, (g, w) in enumerate(zip(outs + grads, want_outs + tuple(want_grads))):
        assert_close(g, w, torch.float64, f"{mode} {size} output/gradient {i}")


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("mode", SGD_MODES)
@pytest.mark.parametrize("size", CPU_SIZES)
def test_sgd_step_backend_matches_reference(backend, dtype, mode, size):
    has_v, mu = SGD_MODES[mode]
    theta, grad, velocity = vectors(3, CPU_SIZES[size], dtype, seed=7)
    lr = learning_rate(dtype)
    outs, grads = _sgd(backend, theta, grad, lr, velocity if has_v else None, mu)
    want_outs, want_grads = _sgd("reference", theta.double(), grad.double(), lr.double(),
                                 velocity.double() if has_v else None, mu)
    assert all(o.dtype == dtype for o in outs) and grads[2].dtype == lr.dtype
    for i, (g, w) in enumerate(zip(outs + grads, want_outs + want_grads)):
        assert_close(g, w, dtype, f"{backend} {mode} {size} output/gradient {i}")


@pytest.mark.parametrize("backend", cpu_backends())
def test_sgd_step_return_values_and_number_lr(backend):
    theta, grad, velocity = vectors(3, 13, torch.float32, seed=8)
    with ddfast.use_backend(backend):
        plain = ddfast.sgd_step(theta, grad, 0.5)
        first = ddfast.sgd_step(theta, grad, 0.5, momentum=0.9)
        mom = ddfast.sgd_step(theta, grad, torch.tensor(0.5), velocity, 0.9)
    assert isinstance(plain, torch.Tensor)
    assert_close(plain, theta - 0.5 * grad, torch.float32, "plain")
    assert isinstance(first, tuple) and torch.equal(first[1], grad) and first[1].data_ptr() != grad.data_ptr()
    assert_close(mom[1], 0.9 * velocity + grad, torch.float32, "velocity")
    assert_close(mom[0], theta - 0.5 * mom[1], torch.float32, "momentum step")


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("mode", SGD_MODES)
def test_sgd_step_gradcheck_and_gradgradcheck(backend, mode):
    has_v, mu = SGD_MODES[mode]
    theta, grad, velocity = (x.requires_grad_() for x in vectors(3, 9, torch.float64, seed=9))
    lr = learning_rate(torch.float64, value=0.3).requires_grad_()
    inputs = (theta, grad, lr) + ((velocity,) if has_v else ())

    def fn(*args):
        return ddfast.sgd_step(*args[:3], args[3] if has_v else None, mu)

    with ddfast.use_backend(backend):
        assert torch.autograd.gradcheck(fn, inputs)
        assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("backend", cpu_backends())
def test_sgd_step_unroll_meta_gradient_matches_plain_torch(backend):
    """Two create_graph inner steps of a quadratic model then MTT's loss, differentiated w.r.t. the
    data and lr (the "autograd" unroll mode): equal to the same unroll in plain torch ops."""
    start, target, x = vectors(3, 17, torch.float64, seed=10)

    def unroll(step, loss_fn, x, lr):
        theta = start
        for _ in range(2):
            (g,) = torch.autograd.grad(((theta * x) ** 2).sum() + (theta ** 3).sum(), theta, create_graph=True)
            theta = step(theta, g, lr)
        return loss_fn(theta, start, target)

    def torch_loss(n, s, t):
        return ((n - t) ** 2).sum() / ((s - t) ** 2).sum()

    results = []
    for step, loss_fn in ((lambda t, g, lr: t - lr * g, torch_loss), (ddfast.sgd_step, ddfast.param_match_loss)):
        x_, lr_ = x.clone().requires_grad_(), torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
        start.requires_grad_()
        with ddfast.use_backend(backend):
            loss = unroll(step, loss_fn, x_, lr_)
            results.append((loss, *torch.autograd.grad(loss, (x_, lr_))))
        start.requires_grad_(False)
    for got, want, what in zip(results[1], results[0], ("loss", "dL/dx", "dL/dlr")):
        assert_close(got, want, torch.float64, what)


# ---- adjoint_step -----------------------------------------------------------------------------------------------

def _adjoint_formula(lam, nu, direction, lr, momentum):
    lam, direction, lr = lam.double(), direction.double(), float(lr)
    u = (-lr * lam) if nu is None else nu.double() - lr * lam
    dlr = torch.tensor(-math.fsum((lam * direction).tolist()), dtype=torch.float64)
    return (u, dlr) + ((momentum * u,) if nu is not None or momentum else ())


@pytest.mark.parametrize("mode", SGD_MODES)
@pytest.mark.parametrize("size", ["one", "seven", "odd"])
def test_adjoint_step_reference_matches_formula(mode, size):
    has_nu, mu = SGD_MODES[mode]
    lam, nu, direction = vectors(3, CPU_SIZES[size], torch.float64, seed=11)
    lr = learning_rate(torch.float64, value=0.2)
    args = (lam, nu if has_nu else None, direction, lr, mu)
    with ddfast.use_backend("reference"):
        got = ddfast.adjoint_step(*args)
    want = _adjoint_formula(*args)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, torch.float64, f"{mode} {size} output {i}")


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("mode", SGD_MODES)
@pytest.mark.parametrize("size", CPU_SIZES)
def test_adjoint_step_backend_matches_reference(backend, dtype, mode, size):
    has_nu, mu = SGD_MODES[mode]
    lam, nu, direction = vectors(3, CPU_SIZES[size], dtype, seed=12)
    lr = learning_rate(dtype, value=0.2)
    with ddfast.use_backend(backend):
        got = ddfast.adjoint_step(lam, nu if has_nu else None, direction, lr, mu)
    with ddfast.use_backend("reference"):
        want = ddfast.adjoint_step(lam.double(), nu.double() if has_nu else None, direction.double(), lr.double(), mu)
    assert got[1].dtype == _acc(dtype) and got[1].dim() == 0 and got[0].dtype == dtype
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, dtype, f"{backend} {mode} {size} output {i}")


def test_adjoint_step_is_not_differentiable():
    lam, direction = vectors(2, 5, torch.float64, seed=13)
    lr = learning_rate(torch.float64).requires_grad_()
    u, dlr = ddfast.adjoint_step(lam.requires_grad_(), None, direction, lr)
    with pytest.raises(RuntimeError, match="adjoint_step is not differentiable"):
        (u.sum() + dlr).backward()


# ---- all three: determinism, opcheck, torch.compile --------------------------------------------------------------

@pytest.mark.parametrize("backend", COMPILED)
def test_deterministic_for_any_thread_count(backend):
    """Fixed chunks and a chunk-order reduction: bitwise equal results with 1 and 2 threads."""
    n, s, t, lam, d = vectors(5, CPU_SIZES["convnet3"], torch.float32, seed=14)
    lr = learning_rate(torch.float32)
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            results.append((*_pml(backend, n, s, t), *_sgd(backend, n, s, lr, t, 0.9)[1],
                            *ddfast.adjoint_step(lam, s, d, lr, 0.9)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize("backend", cpu_backends())
def test_non_contiguous_inputs(backend):
    n, s, t = (x[::2] for x in vectors(3, 41, torch.float32, seed=15))
    with ddfast.use_backend(backend):
        got = ddfast.param_match_loss(n, s, t)
        step = ddfast.sgd_step(n, s, 0.1)
    assert_close(got, ((n - t) ** 2).sum() / ((s - t) ** 2).sum(), torch.float32, "param_match_loss")
    assert_close(step, n - 0.1 * s, torch.float32, "sgd_step")


def _opcheck(op, args):
    result = torch.library.opcheck(op, args)
    assert set(result.values()) == {"SUCCESS"}, result


def test_opcheck_param_match_loss():
    n, s, t = vectors(3, 37, torch.float32, seed=16)
    _opcheck(param_match_loss_op, (n.requires_grad_(), s.requires_grad_(), t.requires_grad_()))
    _, sums = param_match_loss_op(n, s, t)
    _opcheck(param_match_loss_backward_op, (torch.tensor(2.0), n.detach(), s.detach(), t.detach(), sums.detach(), True, False,
                                            True, "reference"))


@pytest.mark.parametrize("mode", SGD_MODES)
def test_opcheck_sgd_step(mode):
    has_v, mu = SGD_MODES[mode]
    theta, grad, velocity = vectors(3, 37, torch.float32, seed=17)
    lr = learning_rate(torch.float32).requires_grad_()
    _opcheck(sgd_step_op, (theta.requires_grad_(), grad.requires_grad_(), lr,
                           velocity.requires_grad_() if has_v else None, mu, has_v or mu != 0.0))


@pytest.mark.parametrize("mode", SGD_MODES)
def test_opcheck_adjoint_step(mode):
    has_nu, mu = SGD_MODES[mode]
    lam, nu, direction = vectors(3, 37, torch.float32, seed=18)
    _opcheck(adjoint_step_op, (lam, nu if has_nu else None, direction, learning_rate(torch.float32), mu,
                               has_nu or mu != 0.0, ""))


def test_torch_compile_fullgraph():
    """One momentum step, a plain step, MTT's loss and an adjoint step under torch.compile(fullgraph=True)
    (aot_eager: dynamo, the fake kernels and AOT autograd around the real kernels)."""
    fn, args = compile_workload()
    got = torch.compile(fn, fullgraph=True, backend="aot_eager")(*args)
    want = fn(*args)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, torch.float32, f"compiled output {i}")
    grad, lr = args[1], args[3]
    for g, w in zip(torch.autograd.grad(got[0], (grad, lr)), torch.autograd.grad(want[0], (grad, lr))):
        assert_close(g, w, torch.float32, "compiled backward")


# ---- tier 4: bad inputs -----------------------------------------------------------------------------------------

def _good():
    a, b, c = vectors(3, 6, torch.float32, seed=20)
    return {"a": a, "b": b, "c": c}


BAD_VECTORS = [
    (lambda v: v[:-1], ValueError, "{name} has 5 elements but {ref} has 6"),
    (lambda v: v.double(), TypeError, "{name} has dtype torch.float64 but {ref} has torch.float32"),
    (lambda v: v.to("meta"), ValueError, "{name} is on meta but {ref} is on cpu"),
    (lambda v: v.reshape(2, 3), ValueError, r"{name} must be a 1-D flat vector, got shape \(2, 3\)"),
    (lambda v: v.tolist(), TypeError, "{name} must be a torch.Tensor, got list"),
]


@pytest.mark.parametrize("bad, error, message", BAD_VECTORS)
@pytest.mark.parametrize("op, names", [
    ("param_match_loss", ("theta_start", "theta_target")),
    ("sgd_step", ("grad", "velocity")),
    ("adjoint_step", ("direction", "nu")),
])
def test_bad_vectors(op, names, bad, error, message):
    ref = {"param_match_loss": "theta_n", "sgd_step": "theta", "adjoint_step": "lam"}[op]
    for name in names:
        v = _good()
        args = {"param_match_loss": {"theta_n": v["a"], "theta_start": v["b"], "theta_target": v["c"]},
                "sgd_step": {"theta": v["a"], "grad": v["b"], "lr": 0.1, "velocity": v["c"], "momentum": 0.9},
                "adjoint_step": {"lam": v["a"], "nu": v["b"], "direction": v["c"], "lr": 0.1}}[op]
        args[name] = bad(args[name])
        with pytest.raises(error, match=message.format(name=name, ref=ref)):
            getattr(ddfast, op)(**args)


@pytest.mark.parametrize("first, error, message", [
    (torch.zeros(0), ValueError, "{name} is empty"),
    (torch.zeros(4, dtype=torch.int64), TypeError, "{name} has dtype torch.int64"),
    (torch.zeros(2, 2), ValueError, "{name} must be a 1-D flat vector"),
])
def test_bad_first_vector(first, error, message):
    other = torch.zeros(first.shape[-1] if first.dim() else 1)
    for fn, name in ((lambda: ddfast.param_match_loss(first, other, other), "theta_n"),
                     (lambda: ddfast.sgd_step(first, other, 0.1), "theta"),
                     (lambda: ddfast.adjoint_step(first, None, other, 0.1), "lam")):
        with pytest.raises(error, match=message.format(name=name)):
            fn()


@pytest.mark.parametrize("kwargs, error, message", [
    ({"lr": torch.ones(1)}, ValueError, r"lr must be a 0-d tensor or a number, got a tensor of shape \(1,\)"),
    ({"lr": "0.1"}, TypeError, "lr must be a 0-d tensor or a real number, got str"),
    ({"lr": True}, TypeError, "lr must be a 0-d tensor or a real number, got bool"),
    ({"lr": float("nan")}, ValueError, "lr must be finite"),
    ({"lr": torch.tensor(1)}, TypeError, "lr has dtype torch.int64"),
    ({"lr": torch.tensor(0.1, device="meta")}, ValueError, "lr is on meta but"),
    ({"momentum": float("inf")}, ValueError, "momentum must be finite, got inf"),
    ({"momentum": torch.tensor(0.9)}, TypeError, "momentum must be a real number, got Tensor"),
])
def test_bad_scalars(kwargs, error, message):
    a, b, c = vectors(3, 6, torch.float32, seed=21)
    args = {"lr": 0.1, "momentum": 0.9, **kwargs}
    with pytest.raises(error, match=message):
        ddfast.sgd_step(a, b, args["lr"], c, args["momentum"])
    with pytest.raises(error, match=message):
        ddfast.adjoint_step(a, c, b, args["lr"], args["momentum"])


# ---- the cuda backend from a CPU machine -------------------------------------------------------------------------

@pytest.mark.parametrize("fn, op", [
    (lambda a, b, c: ddfast.param_match_loss(a, b, c), "param_match_loss"),
    (lambda a, b, c: ddfast.sgd_step(a, b, 0.1, c, 0.9), "sgd_step"),
    (lambda a, b, c: ddfast.adjoint_step(a, b, c, 0.1), "adjoint_step"),
])
def test_forced_cuda_backend_on_cpu_tensors_is_a_clear_error(fn, op):
    """The cuda backend is registered (it is not "not implemented for this op") and refuses CPU tensors."""
    with ddfast.use_backend("cuda"), pytest.raises(ddfast.BackendUnavailableError,
                                                   match=f"{op}: backend 'cuda' .* cannot run: the cuda backend runs "
                                                         "CUDA tensors only"):
        fn(*vectors(3, 5, torch.float32, seed=22))


def test_cuda_source_hash_covers_the_shared_headers(tmp_path):
    """The validation record of the flat ops' CUDA kernels follows csrc/flat/ (included by their .cu and glue)."""
    csrc = tmp_path / "csrc"
    shutil.copytree(REPO_DIR / "csrc", csrc)
    flat_ops = ("param_match_loss", "sgd_step", "adjoint_step")
    before = {op: cuda_source_hash(op, csrc) for op in (*flat_ops, "grad_distance")}
    assert before == {op: cuda_source_hash(op) for op in before}  # a copy hashes the same
    for header in ("flat_cuda.cuh", "flat_cuda.h", "flat.h"):
        path = csrc / "flat" / header
        original = path.read_text()
        path.write_text(original + "// changed\n")
        after = {op: cuda_source_hash(op, csrc) for op in before}
        assert all(after[op] != before[op] for op in flat_ops), header
        assert after["grad_distance"] == before["grad_distance"], header
        path.write_text(original)
