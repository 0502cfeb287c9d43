"""Custom-op registration of adjoint_step: ``ddfast::adjoint_step`` with a fake registration and
per-device kernels that dispatch to the selected backend. It runs inside backward passes (the adjoint
unroll, and sgd_step's backward), so it has no derivative: its autograd registration raises a clear
error if a caller differentiates through it.

``backend`` names the backend to run ("" = resolve from the caller's context, as the public function
does); sgd_step's backward passes the backend its forward resolved."""

from __future__ import annotations

import torch
from torch import Tensor

from ...backends import OpDispatch
from .._lazy import LazyModule
from . import compiled, reference
from .reference import accumulate_dtype

DISPATCH = OpDispatch(
    "adjoint_step",
    impls={"reference": reference, "cpp": compiled, "cuda": compiled,
           "triton": LazyModule("ddfast.ops.adjoint_step.triton")},
    cuda_preference=("cuda", "triton"),
    dtypes={"triton": frozenset({torch.float16, torch.bfloat16, torch.float32})},
)


@torch.library.custom_op("ddfast::adjoint_step", mutates_args=())
def adjoint_step_op(lam: Tensor, nu: Tensor | None, direction: Tensor | None, lr: Tensor, momentum: float,
                    with_velocity: bool, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    return reference.forward(lam, nu, direction, lr, momentum, with_velocity)


def resolve(device: torch.device, dtype: torch.dtype, backend: str):
    """(name, implementation): ``backend`` if given (the forward pass's), else the caller's context."""
    return DISPATCH.resolve(device, dtype, requested=(backend, "the forward pass") if backend else None)


def _kernel(lam, nu, direction, lr, momentum, with_velocity, backend):
    _, impl = resolve(lam.device, lam.dtype, backend)
    return impl.forward(lam, nu, direction, lr, momentum, with_velocity)


for _device in ("cpu", "cuda"):
    adjoint_step_op.register_kernel(_device)(_kernel)


@adjoint_step_op.register_fake
def _(lam, nu, direction, lr, momentum, with_velocity, backend):
    return (torch.empty_like(lam), lam.new_empty((), dtype=accumulate_dtype(lam.dtype)),
            torch.empty_like(lam) if with_velocity else lam.new_empty(0))


def _no_backward(ctx, *grads):
    raise RuntimeError("ddfast.adjoint_step is not differentiable: it is the vector work of a backward pass "
                       "(use sgd_step, whose backward it is, to differentiate through an inner step)")


adjoint_step_op.register_autograd(_no_backward, setup_context=lambda ctx, inputs, output: None)
