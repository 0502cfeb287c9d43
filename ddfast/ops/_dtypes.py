"""Dtype rules shared by the fused ops."""

from __future__ import annotations

import torch


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums, statistics and losses are accumulated in: fp64 for fp64 inputs, else fp32 (fp16 and
    bf16 sums overflow or lose too much)."""
    return torch.float64 if dtype == torch.float64 else torch.float32
