"""The ``cpp`` backend: the private ops of ddfast._C (csrc/dsa/cpu.cpp). Same contract as reference.py."""

from __future__ import annotations

import torch


def forward(x, table, row_index, ops, geometry):
    return torch.ops.ddfast._dsa_pass_forward(x, table, row_index, list(ops), list(geometry))


def backward(grad, table, row_index, ops, geometry):
    return torch.ops.ddfast._dsa_pass_backward(grad, table, row_index, list(ops), list(geometry))
