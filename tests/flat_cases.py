"""Shared inputs of the flat-vector op tests (param_match_loss, sgd_step, adjoint_step)."""

from __future__ import annotations

import torch

import ddfast
from conftest import seeded

CONVNET3 = 320_010  # parameters of ConvNet-3 on CIFAR-10 (MTT's flat vector)
CPU_SIZES = {"convnet3": CONVNET3, "one": 1, "seven": 7, "odd": 16_385 * 2 + 3}  # the last spans 3 C++ chunks
TINY_SIZES = {"one": 1, "seven": 7, "odd": 300}  # Triton under the interpreter (with BLOCK = 64 in the tests)


def vectors(count: int, numel: int, dtype: torch.dtype, seed: int = 0, device="cpu") -> list[torch.Tensor]:
    g = seeded(seed)
    return [torch.randn(numel, generator=g, dtype=torch.float64).to(device=device, dtype=dtype) for _ in range(count)]


def learning_rate(dtype: torch.dtype, device="cpu", value: float = 0.01) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64 if dtype == torch.float64 else torch.float32, device=device)


def run_param_match_loss(backend, n, s, t, need=(True, True, True)):
    """The loss and 1.5 x its gradients w.r.t. the inputs flagged in ``need``."""
    leaves = [x.detach().clone().requires_grad_(r) for x, r in zip((n, s, t), need)]
    with ddfast.use_backend(backend):
        loss = ddfast.param_match_loss(*leaves)
        grads = torch.autograd.grad(loss * 1.5, [x for x in leaves if x.requires_grad])
    return (loss, *grads)


def run_sgd_step(backend, theta, grad, lr, velocity, momentum, create_graph=False):
    """(outputs, gradients of (theta, grad, lr[, velocity])) for fixed random cotangents of the outputs."""
    leaves = [x.detach().clone().requires_grad_() for x in (theta, grad, lr)]
    if velocity is not None:
        leaves.append(velocity.detach().clone().requires_grad_())
    with ddfast.use_backend(backend):
        out = ddfast.sgd_step(*leaves[:3], leaves[3] if velocity is not None else None, momentum)
        outs = out if isinstance(out, tuple) else (out,)
        cot = vectors(len(outs), theta.numel(), theta.dtype, seed=99, device=theta.device)
        total = sum((o.to(torch.float64) * c.to(torch.float64)).sum() for o, c in zip(outs, cot))
        grads = torch.autograd.grad(total, leaves, create_graph=create_graph)
    return outs, grads
