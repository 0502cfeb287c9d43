"""The ``cpp`` and ``cuda`` backends: the private op of ddfast._C (csrc/sgd_step/), which the torch
dispatcher routes to the CPU kernel (cpu.cpp) or the CUDA kernel (sgd_step.cu) by device. Same contract as
reference.py; the backward is adjoint_step's kernel of the same backend."""

from __future__ import annotations

import torch


def forward(theta, grad, lr, velocity, momentum: float, with_velocity: bool):
    return torch.ops.ddfast._sgd_step_forward(theta, grad, lr, velocity, momentum, with_velocity)
