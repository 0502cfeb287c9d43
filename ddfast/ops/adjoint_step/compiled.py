"""The ``cpp`` and ``cuda`` backends: the private op of ddfast._C (csrc/adjoint_step/), which the torch
dispatcher routes to the CPU kernel (cpu.cpp) or the CUDA kernels (adjoint_step.cu) by device. Same
contract as reference.py."""

from __future__ import annotations

import torch


def forward(lam, nu, direction, lr, momentum: float, with_velocity: bool):
    return torch.ops.ddfast._adjoint_step(lam, nu, direction, lr, momentum, with_velocity)
