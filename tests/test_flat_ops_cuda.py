"""CUDA kernels of param_match_loss, sgd_step and adjoint_step (csrc/<op>/<op>.cu), GPU tier: the
``cuda`` backend against the fp64 reference on ConvNet-3's 320,010 parameters and odd sizes (1, 7, 1023,
4097: one partial block, a scalar tail, several blocks with a tail) in fp32/fp16/bf16/fp64, views that
start 4 bytes past a 16-byte boundary (the unaligned kernels), gradcheck in fp64, determinism, opcheck
and torch.compile on CUDA, and the elementwise outputs bit-for-bit against the reference (the kernels
round every product as it does, no FMA contraction). Skipped without a GPU (the GPU pass runs them:
scripts/gpu_validate.sh). sgd_step's backward runs adjoint_step's kernels, so its tests validate both."""

from __future__ import annotations

import pytest
import torch

import ddfast
from ddfast.ops.adjoint_step._op import adjoint_step_op
from ddfast.ops.param_match_loss._op import param_match_loss_backward_op, param_match_loss_op
from ddfast.ops.sgd_step._op import sgd_step_op

from conftest import assert_close
from flat_cases import (CONVNET3, GPU_MODES, check_adjoint_step, check_param_match_loss, check_sgd_step,
                        compile_workload, learning_rate, run_param_match_loss, run_sgd_step, vectors)

pytestmark = pytest.mark.gpu
SIZES = {"convnet3": CONVNET3, "one": 1, "seven": 7, "p1023": 1023, "p4097": 4097}
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
PML = pytest.mark.validates("param_match_loss", "cuda")
SGD = pytest.mark.validates("sgd_step", "cuda")
ADJ = pytest.mark.validates("adjoint_step", "cuda")


@PML
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_cuda_param_match_loss(size, dtype):
    check_param_match_loss("cuda", SIZES[size], dtype, seed=20, device="cuda")


@PML
@pytest.mark.parametrize("need", [(True, False, False), (False, True, False), (False, False, True), (True, False, True)])
def test_cuda_param_match_loss_some_gradients(need):
    check_param_match_loss("cuda", 4097, torch.float32, seed=21, need=need, device="cuda")


@SGD
@ADJ  # the backward runs adjoint_step's kernels
@pytest.mark.parametrize("mode", GPU_MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_cuda_sgd_step(size, dtype, mode):
    check_sgd_step("cuda", SIZES[size], dtype, mode, seed=22, device="cuda")


@ADJ
@pytest.mark.parametrize("mode", GPU_MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_cuda_adjoint_step(size, dtype, mode):
    check_adjoint_step("cuda", SIZES[size], dtype, mode, seed=23, device="cuda")


@PML
@SGD
@ADJ
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("size", ["convnet3", "p4097", "seven"])
def test_cuda_unaligned_views(size, dtype):
    """x[1:] of each vector: no 16-byte vector accesses (the ALIGNED=false kernels)."""
    check_param_match_loss("cuda", SIZES[size], dtype, seed=24, device="cuda", views=True)
    for mode in GPU_MODES:
        check_sgd_step("cuda", SIZES[size], dtype, mode, seed=25, device="cuda", views=True)
        check_adjoint_step("cuda", SIZES[size], dtype, mode, seed=26, device="cuda", views=True)


@SGD
@ADJ
@pytest.mark.parametrize("mode", GPU_MODES)
def test_cuda_sgd_step_constant_lr(mode):
    """lr a number (no lr gradient): the backward's adjoint kernel runs without a direction (dlr not reduced)."""
    has_v, mu = GPU_MODES[mode]
    theta, grad, velocity = vectors(3, 4097, torch.float32, seed=27, device="cuda")
    cot = vectors(2, 4097, torch.float32, seed=28, device="cuda")
    results = {}
    for backend, dtype in (("cuda", torch.float32), ("reference", torch.float64)):
        inputs = [x.to(dtype).requires_grad_() for x in ((theta, grad, velocity) if has_v else (theta, grad))]
        with ddfast.use_backend(backend):
            out = ddfast.sgd_step(inputs[0], inputs[1], 0.3, inputs[2] if has_v else None, mu)
            outs = out if isinstance(out, tuple) else (out,)
            results[backend] = torch.autograd.grad(sum((o * c.to(dtype)).sum() for o, c in zip(outs, cot)), inputs)
    for i, (g, w) in enumerate(zip(results["cuda"], results["reference"])):
        assert_close(g, w, torch.float32, f"sgd_step {mode} constant lr, gradient {i}")


@PML
def test_cuda_param_match_loss_gradcheck():
    n, s, t = (x.requires_grad_() for x in vectors(3, 37, torch.float64, seed=29, device="cuda"))
    with ddfast.use_backend("cuda"):
        assert torch.autograd.gradcheck(ddfast.param_match_loss, (n, s, t))


@SGD
@ADJ
@pytest.mark.parametrize("mode", GPU_MODES)
def test_cuda_sgd_step_gradcheck_and_gradgradcheck(mode):
    has_v, mu = GPU_MODES[mode]
    theta, grad, velocity = (x.requires_grad_() for x in vectors(3, 37, torch.float64, seed=30, device="cuda"))
    lr = learning_rate(torch.float64, device="cuda", value=0.3).requires_grad_()
    inputs = (theta, grad, lr) + ((velocity,) if has_v else ())

    def fn(*args):
        return ddfast.sgd_step(*args[:3], args[3] if has_v else None, mu)

    with ddfast.use_backend("cuda"):
        assert torch.autograd.gradcheck(fn, inputs)
        assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("views", [False, True], ids=["aligned", "views"])
def test_cuda_elementwise_outputs_are_bitwise_the_reference(dtype, views):
    """Same formula, same roundings: theta', v', u and nu_next equal the reference's in the same dtype."""
    theta, grad, velocity = (x[1:] if views else x for x in vectors(3, CONVNET3 + 1, dtype, seed=31, device="cuda"))
    lr = learning_rate(dtype, device="cuda", value=0.2)
    got, want = [], []
    for backend, out in (("cuda", got), ("reference", want)):
        with ddfast.use_backend(backend):
            out += [ddfast.sgd_step(theta, grad, lr), *ddfast.sgd_step(theta, grad, lr, velocity, 0.9),
                    ddfast.adjoint_step(theta, None, grad, lr)[0], *ddfast.adjoint_step(theta, velocity, grad, lr, 0.9)]
    for i, (g, w) in enumerate(zip(got, want)):
        if g.dim() == 0:
            continue  # dlr: a reduction, summed in another order
        assert torch.equal(g, w), f"output {i}: max difference {(g.double() - w.double()).abs().max().item()}"


@PML
@SGD
@ADJ
def test_cuda_deterministic():
    n, s, t, v = vectors(4, 11_173_962, torch.float32, seed=32, device="cuda")  # ResNet-18's parameter count
    lr = learning_rate(torch.float32, device="cuda")
    runs = [(*run_param_match_loss("cuda", n, s, t), *sum(run_sgd_step("cuda", n, s, lr, v, 0.9), ()))
            for _ in range(3)]
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(run, runs[0]))


@PML
@SGD
@ADJ
def test_cuda_opcheck():
    n, s, t = vectors(3, 5000, torch.float32, seed=33, device="cuda")
    lr = learning_rate(torch.float32, device="cuda").requires_grad_()
    with ddfast.use_backend("cuda"):
        _, sums = param_match_loss_op(n, s, t)
        for op, args in ((param_match_loss_op, (n.requires_grad_(), s, t)),
                         (param_match_loss_backward_op, (torch.tensor(2.0, device="cuda"), n.detach(), s.detach(),
                                                         t.detach(), sums.detach(), True, True, True, "cuda")),
                         (sgd_step_op, (n, s.requires_grad_(), lr, t, 0.9, True)),
                         (adjoint_step_op, (n.detach(), t, s.detach(), lr.detach(), 0.9, True, "cuda"))):
            result = torch.library.opcheck(op, args)
            assert set(result.values()) == {"SUCCESS"}, result


@PML
@SGD
@ADJ
def test_cuda_torch_compile_fullgraph():
    fn, args = compile_workload("cuda")
    grad, lr = args[1], args[3]
    with ddfast.use_backend("cuda"):
        got = torch.compile(fn, fullgraph=True)(*args)
        want = fn(*args)
        got_grads = torch.autograd.grad(got[0], (grad, lr))
        want_grads = torch.autograd.grad(want[0], (grad, lr))
    for i, (g, w) in enumerate(zip(got + got_grads, want + want_grads)):
        assert_close(g, w, torch.float32, f"compiled output/gradient {i}")
