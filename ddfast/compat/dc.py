"""Drop-in replacements for DC's gradient-matching helpers (VICO-UoE/DatasetCondensation, utils.py).

``from ddfast.compat.dc import match_loss, distance_wb`` in place of DC's own: same signatures, same
results (metrics 'ours', 'mse', 'cos'; 'l1' too), computed by the fused :func:`ddfast.grad_distance`.
"""

from __future__ import annotations

import torch

from ..ops.grad_distance import grad_distance


def distance_wb(gwr: torch.Tensor, gws: torch.Tensor) -> torch.Tensor:
    """DC's per-tensor 'ours' distance (real gradient first): rows of conv/3-D/2-D gradients,
    sum of 1 - cos per row with eps 1e-6 on the norm product; 0 for 1-D tensors."""
    return grad_distance([gws], [gwr], metric="ours")


def match_loss(gw_syn, gw_real, args) -> torch.Tensor:
    """DC's ``match_loss(gw_syn, gw_real, args)``: ``args.dis_metric`` in {'ours', 'mse', 'cos'}
    (and 'l1'); the result lives on ``args.device``. DC exits on an unknown metric; this raises."""
    metric = getattr(args, "dis_metric", None)
    if metric not in ("ours", "mse", "cos", "l1"):
        raise ValueError(f"args.dis_metric must be 'ours', 'mse', 'cos' or 'l1', got {metric!r}")
    return grad_distance(list(gw_syn), list(gw_real), metric=metric).to(args.device)
