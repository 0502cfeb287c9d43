"""The ``cpp`` backend: the private op of ddfast._C (csrc/adjoint_step/cpu.cpp). Same contract as
reference.py."""

from __future__ import annotations

import torch


def forward(lam, nu, direction, lr, momentum: float, with_velocity: bool):
    return torch.ops.ddfast._adjoint_step(lam, nu, direction, lr, momentum, with_velocity)
