"""Pure-PyTorch param_match_loss: THE specification (docs/semantics.md#param_match_loss).

MTT's trajectory-matching loss (Cazenavette et al., CVPR 2022; GeorgeCazenavette/mtt-distillation
``distill.py``: ``param_loss`` / ``param_dist``):
``L = ||theta_n - theta_target||^2 / ||theta_start - theta_target||^2`` over flat parameter vectors.
Both sums and the quotient are in the accumulate dtype (fp32 for fp16/bf16/fp32 inputs, fp64 for
fp64). There is no epsilon: a zero denominator gives inf or NaN, exactly as the formula (and MTT).

Backend contract (shared by cpp, cuda and triton):

* ``forward(theta_n, theta_start, theta_target)`` returns ``(loss, sums)``: loss 0-d and
  sums = [A, B] = [||theta_n - theta_target||^2, ||theta_start - theta_target||^2], both in the
  accumulate dtype; sums is saved for backward.
* ``backward(grad_out, theta_n, theta_start, theta_target, sums, need_n, need_start, need_target)``
  returns ``(d_n, d_start, d_target)`` in the inputs' dtype, an empty tensor where not needed, with
  ``c_n = 2 g / B``, ``c_s = -2 g (A / B) / B``:
  d_n = c_n (theta_n - theta_target), d_start = c_s (theta_start - theta_target),
  d_target = -(d_n + d_start) (computed in the accumulate dtype before rounding).
"""

from __future__ import annotations

import torch

from .._dtypes import accumulate_dtype


def forward(theta_n, theta_start, theta_target):
    acc = accumulate_dtype(theta_n.dtype)
    target = theta_target.to(acc)
    num = (theta_n.to(acc) - target).square().sum()
    den = (theta_start.to(acc) - target).square().sum()
    return num / den, torch.stack([num, den])


def coefficients(grad_out, sums):
    """(c_n, c_s) of the backward, in the accumulate dtype."""
    g = grad_out.to(sums.dtype)
    num, den = sums[0], sums[1]
    return 2 * g / den, -2 * g * (num / den) / den


def backward(grad_out, theta_n, theta_start, theta_target, sums, need_n: bool, need_start: bool, need_target: bool):
    acc, dtype = sums.dtype, theta_n.dtype
    c_n, c_s = coefficients(grad_out, sums)
    target = theta_target.to(acc)
    d_n = c_n * (theta_n.to(acc) - target)
    d_s = c_s * (theta_start.to(acc) - target)
    return (d_n.to(dtype) if need_n else theta_n.new_empty(0), d_s.to(dtype) if need_start else theta_n.new_empty(0),
            (-(d_n + d_s)).to(dtype) if need_target else theta_n.new_empty(0))
