"""Pure-PyTorch sgd_step: THE specification (docs/semantics.md#sgd_step).

One inner step of MTT's unrolled SGD (GeorgeCazenavette/mtt-distillation ``distill.py``:
``student_params.append(student_params[-1] - syn_lr * grad)``) or of AST's momentum form
(``v' = mu v + g``, ``theta' = theta - lr v'``), in one pass over the flat vectors. Arithmetic is in
the accumulate dtype (fp32 for fp16/bf16/fp32, fp64 for fp64); with momentum, theta' uses v' before
it is rounded to the inputs' dtype. A missing velocity is 0 (the first momentum step: v' = g).

Backend contract (shared by cpp, cuda and triton):
``forward(theta, grad, lr, velocity, momentum, with_velocity)`` returns ``(theta_new, v_new)``; v_new
is an empty tensor unless ``with_velocity``. The backward is adjoint_step's forward (the step's
vector-Jacobian product; ddfast/ops/adjoint_step/reference.py).
"""

from __future__ import annotations

import torch

from ..adjoint_step.reference import accumulate_dtype


def forward(theta, grad, lr, velocity, momentum: float, with_velocity: bool):
    acc, dtype = accumulate_dtype(theta.dtype), theta.dtype
    step = grad.to(acc)
    if with_velocity:
        if velocity is not None:
            step = momentum * velocity.to(acc) + step
        v_new = step.to(dtype, copy=True)  # never an alias of grad (custom-op outputs are fresh)
    else:
        v_new = theta.new_empty(0)
    return (theta.to(acc) - lr.to(acc) * step).to(dtype), v_new
