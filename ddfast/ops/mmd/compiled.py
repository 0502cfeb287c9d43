"""The ``cpp`` backend: the private ops of ddfast._C (csrc/mmd/). Same contract as reference.py;
offsets of None mean one segment holding every row (the plain ``mmd``)."""

from __future__ import annotations

import torch

from .reference import KERNEL_CODES, coefficients, offset_tensors


def forward(x, y, x_offsets, y_offsets, kernel: str, sigmas, estimator: str):
    xo, yo = offset_tensors(x, y, x_offsets, y_offsets)
    out = torch.ops.ddfast._mmd_forward(x, y, xo, yo, KERNEL_CODES[kernel], coefficients(kernel, sigmas),
                                        estimator == "unbiased")
    return out.reshape(()) if x_offsets is None else out


def backward(grad_out, x, y, x_offsets, y_offsets, kernel: str, sigmas, estimator: str, need_x: bool,
             need_y: bool):
    xo, yo = offset_tensors(x, y, x_offsets, y_offsets)
    return torch.ops.ddfast._mmd_backward(grad_out.reshape(-1), x, y, xo, yo, KERNEL_CODES[kernel],
                                          coefficients(kernel, sigmas), estimator == "unbiased", need_x, need_y)
