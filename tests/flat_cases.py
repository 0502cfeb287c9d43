"""Shared inputs of the flat-vector op tests (param_match_loss, sgd_step, adjoint_step)."""

from __future__ import annotations

import torch

import ddfast
from conftest import assert_close, seeded

CONVNET3 = 320_010  # parameters of ConvNet-3 on CIFAR-10 (MTT's flat vector)
CPU_SIZES = {"convnet3": CONVNET3, "one": 1, "seven": 7, "odd": 16_385 * 2 + 3}  # the last spans 3 C++ chunks
TINY_SIZES = {"one": 1, "seven": 7, "odd": 300}  # Triton under the interpreter (with BLOCK = 64 in the tests)
# Forms of the step: (velocity given, momentum). "first_momentum_step": momentum form without a velocity (v = 0).
GPU_MODES = {"plain": (False, 0.0), "first_momentum_step": (False, 0.9), "momentum": (True, 0.9)}


def vectors(count: int, numel: int, dtype: torch.dtype, seed: int = 0, device="cpu") -> list[torch.Tensor]:
    g = seeded(seed)
    return [torch.randn(numel, generator=g, dtype=torch.float64).to(device=device, dtype=dtype) for _ in range(count)]


def learning_rate(dtype: torch.dtype, device="cpu", value: float = 0.01) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64 if dtype == torch.float64 else torch.float32, device=device)


def _leaf(x, requires_grad=True, misalign=False):
    """(a fresh leaf holding x, the tensor to pass on): the leaf itself, or with ``misalign`` the view
    leaf[1:] of a leaf one element longer, so the op sees a vector that is not 16-byte aligned."""
    if not misalign:
        leaf = x.detach().clone().requires_grad_(requires_grad)
        return leaf, leaf
    leaf = torch.cat([x.detach()[:1], x.detach()]).requires_grad_(requires_grad)
    return leaf, leaf[1:]


def _drop_pad(grads, leaves, passed):
    """Gradients w.r.t. the leaves, cut back to the tensors passed on."""
    return tuple(g[1:] if leaf is not arg else g for g, leaf, arg in zip(grads, leaves, passed))


def run_param_match_loss(backend, n, s, t, need=(True, True, True), misalign=False):
    """The loss and 1.5 x its gradients w.r.t. the inputs flagged in ``need``."""
    leaves, passed = zip(*(_leaf(x, r, misalign) for x, r in zip((n, s, t), need)))
    with ddfast.use_backend(backend):
        loss = ddfast.param_match_loss(*passed)
        wanted = [i for i, r in enumerate(need) if r]
        grads = torch.autograd.grad(loss * 1.5, [leaves[i] for i in wanted])
    return (loss, *_drop_pad(grads, [leaves[i] for i in wanted], [passed[i] for i in wanted]))


def run_sgd_step(backend, theta, grad, lr, velocity, momentum, create_graph=False, misalign=False):
    """(outputs, gradients of (theta, grad, lr[, velocity])) for fixed random cotangents of the outputs."""
    pairs = [_leaf(theta, misalign=misalign), _leaf(grad, misalign=misalign), _leaf(lr)]
    if velocity is not None:
        pairs.append(_leaf(velocity, misalign=misalign))
    leaves, passed = zip(*pairs)
    with ddfast.use_backend(backend):
        out = ddfast.sgd_step(*passed[:3], passed[3] if velocity is not None else None, momentum)
        outs = out if isinstance(out, tuple) else (out,)
        cot = vectors(len(outs), theta.numel(), theta.dtype, seed=99, device=theta.device)
        total = sum((o.to(torch.float64) * c.to(torch.float64)).sum() for o, c in zip(outs, cot))
        grads = torch.autograd.grad(total, leaves, create_graph=create_graph)
    return outs, _drop_pad(grads, leaves, passed)


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# GPU backends (and Triton under the interpreter) against the fp64 reference on the same inputs.
def check_param_match_loss(backend, numel, dtype, seed, need=(True, True, True), device="cpu", views=False):
    """``views``: the backend sees every vector as x[1:] of a longer one (not 16-byte aligned)."""
    inputs = vectors(3, numel, dtype, seed=seed, device=device)
    got = run_param_match_loss(backend, *inputs, need=need, misalign=views)
    want = run_param_match_loss("reference", *(x.double() for x in inputs), need=need)
    assert got[0].dtype == accumulate_dtype(dtype) and all(g.dtype == dtype for g in got[1:])
    for g, w in zip(got, want):
        assert_close(g, w, dtype, f"{backend} param_match_loss {numel} {dtype}")


def check_sgd_step(backend, numel, dtype, mode, seed, device="cpu", views=False):
    has_v, mu = GPU_MODES[mode]
    theta, grad, velocity = vectors(3, numel, dtype, seed=seed, device=device)
    lr = learning_rate(dtype, device=device, value=0.2)
    got = run_sgd_step(backend, theta, grad, lr, velocity if has_v else None, mu, misalign=views)
    want = run_sgd_step("reference", theta.double(), grad.double(), lr.double(), velocity.double() if has_v else None,
                        mu)
    for i, (g, w) in enumerate(zip(sum(got, ()), sum(want, ()))):
        assert_close(g, w, dtype, f"{backend} sgd_step {mode} {numel} {dtype} output/gradient {i}")


def check_adjoint_step(backend, numel, dtype, mode, seed, device="cpu", views=False):
    has_nu, mu = GPU_MODES[mode]
    lam, nu, direction = vectors(3, numel + views, dtype, seed=seed, device=device)
    if views:
        lam, nu, direction = lam[1:], nu[1:], direction[1:]
    lr = learning_rate(dtype, device=device, value=0.2)
    with ddfast.use_backend(backend):
        got = ddfast.adjoint_step(lam, nu if has_nu else None, direction, lr, mu)
    with ddfast.use_backend("reference"):
        want = ddfast.adjoint_step(lam.double(), nu.double() if has_nu else None, direction.double(), lr.double(), mu)
    assert len(got) == len(want) and got[1].dtype == accumulate_dtype(dtype) and got[0].dtype == dtype
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, dtype, f"{backend} adjoint_step {mode} {numel} {dtype} output {i}")


def compile_workload(device="cpu"):
    """(fn, args) for the torch.compile(fullgraph=True) tests: a momentum step, a plain step, an adjoint step
    and MTT's loss; fn returns (loss, u, dlr, nu_next), and the loss is differentiable w.r.t. grad and lr."""
    theta, grad, velocity, start, target = vectors(5, 301, torch.float32, seed=19, device=device)
    lr = learning_rate(torch.float32, device=device).requires_grad_()
    grad.requires_grad_()

    def fn(theta, grad, velocity, lr):
        theta1, v1 = ddfast.sgd_step(theta, grad, lr, velocity, 0.5)
        theta2 = ddfast.sgd_step(theta1, v1, lr)
        u, dlr, nu = ddfast.adjoint_step(theta2.detach(), v1.detach(), grad.detach(), lr.detach(), 0.5)
        return ddfast.param_match_loss(theta2, start, target), u, dlr, nu

    return fn, (theta, grad, velocity, lr)
