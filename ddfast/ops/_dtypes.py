"""Dtype rules shared by the fused ops."""

from __future__ import annotations

import torch


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums, statistics and losses are accumulated in: fp64 for fp64 inputs, else fp32 (fp16 and
    bf16 sums overflow or lose too much)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# A FusedOp ``dtypes`` value: the Triton kernels serve fp16, bf16 and fp32 and leave fp64 to the other backends
# (tier 6 compiles the Triton kernels for those three; tl.dot in fp64 is not checked on GPUs).
TRITON_WITHOUT_FP64 = {"triton": frozenset({torch.float16, torch.bfloat16, torch.float32})}
