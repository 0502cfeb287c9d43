"""The ``cpp`` backend: the private ops of ddfast._C (csrc/class_mean_distance/cpu.cpp). Same
contract as reference.py."""

from __future__ import annotations

import torch


def forward(f_syn, y_syn, f_real, y_real, num_classes: int, per_class: bool):
    return torch.ops.ddfast._class_mean_distance_forward(f_syn, y_syn, f_real, y_real, num_classes, per_class)


def backward(grad_out, y_syn, y_real, diff, scale, dtype: torch.dtype, need_syn: bool, need_real: bool):
    return torch.ops.ddfast._class_mean_distance_backward(grad_out, y_syn, y_real, diff, scale, dtype, need_syn,
                                                          need_real)
