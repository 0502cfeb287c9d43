"""The ``cpp`` backend: the private op of ddfast._C (csrc/sgd_step/cpu.cpp). Same contract as
reference.py; the backward is adjoint_step's cpp kernel."""

from __future__ import annotations

import torch


def forward(theta, grad, lr, velocity, momentum: float, with_velocity: bool):
    return torch.ops.ddfast._sgd_step_forward(theta, grad, lr, velocity, momentum, with_velocity)
