"""Pure-PyTorch adjoint_step: THE specification (docs/semantics.md#adjoint_step).

The vector work of one reverse step of the adjoint (reverse-mode) sweep through MTT's SGD or AST's
momentum inner loop: with lambda = dL/dtheta_{n+1} (``lam``) and nu = dL/dv_{n+1} (``nu``; absent
for plain SGD, where it is 0):

* ``u = nu - lr * lam``        (plain SGD: ``u = -lr * lam``),
* ``dlr = -<lam, direction>``  (direction = g_n for SGD, v_{n+1} with momentum),
* ``nu_next = momentum * u``   (the velocity adjoint of the step before; momentum form only).

This is exactly the vector-Jacobian product of sgd_step (ddfast/ops/sgd_step/): u is the gradient of
the step's gradient input, dlr that of lr, nu_next that of the incoming velocity; sgd_step's
backward runs these kernels. u and nu_next are rounded to the inputs' dtype after computing in the
accumulate dtype (fp32 for fp16/bf16/fp32, fp64 for fp64); dlr is a 0-d tensor in the accumulate dtype.

Backend contract (shared by cpp, cuda and triton):
``forward(lam, nu, direction, lr, momentum, with_velocity)`` returns ``(u, dlr, nu_next)``;
``nu`` may be None (treated as 0); ``direction`` may be None (then dlr is 0 and not computed);
nu_next is an empty tensor unless ``with_velocity``.
"""

from __future__ import annotations

import torch

from .._dtypes import accumulate_dtype


def forward(lam, nu, direction, lr, momentum: float, with_velocity: bool):
    acc, dtype = accumulate_dtype(lam.dtype), lam.dtype
    lam_a = lam.to(acc)
    step = lr.to(acc) * lam_a
    u = -step if nu is None else nu.to(acc) - step
    dlr = -(lam_a * direction.to(acc)).sum() if direction is not None else lam_a.new_zeros(())
    nu_next = (momentum * u).to(dtype) if with_velocity else lam.new_empty(0)
    return u.to(dtype), dlr, nu_next
