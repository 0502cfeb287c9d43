"""The ``cpp`` and ``cuda`` backends: the private ops of ddfast._C (csrc/param_match_loss/), which the torch
dispatcher routes to the CPU kernels (cpu.cpp) or the CUDA kernels (param_match_loss.cu) by device. Same
contract as reference.py."""

from __future__ import annotations

import torch


def forward(theta_n, theta_start, theta_target):
    return torch.ops.ddfast._param_match_loss_forward(theta_n, theta_start, theta_target)


def backward(grad_out, theta_n, theta_start, theta_target, sums, need_n: bool, need_start: bool, need_target: bool):
    return torch.ops.ddfast._param_match_loss_backward(grad_out, theta_n, theta_start, theta_target, sums, need_n,
                                                       need_start, need_target)
