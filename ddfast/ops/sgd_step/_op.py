"""Custom-op registration of sgd_step: ``ddfast::sgd_step`` (theta' and, in momentum form, v'), with a
fake registration, per-device kernels that dispatch to the selected backend, and an autograd formula.

The backward is the step's vector-Jacobian product, which is adjoint_step's computation
(ddfast/ops/adjoint_step/): with cotangents gt for theta' and gv for v' (0 for plain SGD),
u = gv - lr gt is the gradient of ``grad``, momentum * u that of ``velocity``, -<gt, direction> that of
lr (direction = grad, or v' with momentum) and gt that of theta. It runs the ``ddfast::adjoint_step``
kernels of the backend the forward resolved. When autograd records the backward itself
(create_graph=True with inputs that require grad, MTT's "autograd" unroll differentiated twice), the
same formula runs as differentiable torch ops instead (ddfast.ops._higher_order), so double backward is exact."""

from __future__ import annotations

import torch
from torch import Tensor

from ...backends import OpDispatch
from .._higher_order import input_gradients
from .._lazy import LazyModule
from ..adjoint_step import reference as adjoint_reference
from ..adjoint_step._op import adjoint_step_op
from . import compiled, reference

DISPATCH = OpDispatch(
    "sgd_step",
    impls={"reference": reference, "cpp": compiled, "cuda": compiled,
           "triton": LazyModule("ddfast.ops.sgd_step.triton")},
    cuda_preference=("cuda", "triton"),
    dtypes={"triton": frozenset({torch.float16, torch.bfloat16, torch.float32})},
)


@torch.library.custom_op("ddfast::sgd_step", mutates_args=())
def sgd_step_op(theta: Tensor, grad: Tensor, lr: Tensor, velocity: Tensor | None, momentum: float,
                with_velocity: bool) -> tuple[Tensor, Tensor]:
    return reference.forward(theta, grad, lr, velocity, momentum, with_velocity)


def _kernel(theta, grad, lr, velocity, momentum, with_velocity):
    _, impl = DISPATCH.resolve(theta.device, theta.dtype)
    return impl.forward(theta, grad, lr, velocity, momentum, with_velocity)


for _device in ("cpu", "cuda"):
    sgd_step_op.register_kernel(_device)(_kernel)


@sgd_step_op.register_fake
def _(theta, grad, lr, velocity, momentum, with_velocity):
    return torch.empty_like(theta), torch.empty_like(theta) if with_velocity else theta.new_empty(0)


def _setup_context(ctx, inputs, output):
    theta, grad, lr, velocity, momentum, with_velocity = inputs
    # direction of the lr gradient: grad for plain SGD, v' with momentum.
    ctx.save_for_backward(output[1] if with_velocity else grad, lr)
    ctx.args = (momentum, with_velocity)
    ctx.backend, _ = DISPATCH.resolve(theta.device, theta.dtype)  # the one the forward ran


def _backward(ctx, grad_theta, grad_velocity):
    direction, lr = ctx.saved_tensors
    momentum, with_velocity = ctx.args
    need_theta, need_grad, need_lr, need_velocity = ctx.needs_input_grad[:4]
    gv = grad_velocity if with_velocity else None
    u, dlr, nu_next = input_gradients(
        "sgd_step", ctx.backend, (grad_theta, gv, direction, lr),
        kernel=lambda: adjoint_step_op(grad_theta.contiguous(), None if gv is None else gv.contiguous(),
                                       direction if need_lr else None, lr, momentum, with_velocity and need_velocity,
                                       ctx.backend),
        differentiable=lambda: adjoint_reference.forward(grad_theta, gv, direction, lr, momentum, with_velocity))
    return (grad_theta if need_theta else None, u if need_grad else None, dlr.to(lr.dtype) if need_lr else None,
            nu_next if need_velocity else None, None, None)


sgd_step_op.register_autograd(_backward, setup_context=_setup_context)
