"""Helpers shared by the Triton launchers: dtype maps and element offsets into pointer tables."""

from __future__ import annotations

import torch
import triton.language as tl

SIGNATURE_TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}


def accumulate_type(dtype: torch.dtype):
    """fp32 accumulation for fp16/bf16/fp32, fp64 for fp64 (ARCHITECTURE.md, op contract)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def vector_width(dtype: torch.dtype) -> int:
    """Elements per 16-byte access."""
    return 16 // torch.empty(0, dtype=dtype).element_size()


def element_offsets(tensors) -> tuple[list[int], bool]:
    """Offsets (in elements) of every tensor's data from the first one's, and whether every tensor
    starts on a 16-byte boundary (then the kernels may use 16-byte vector accesses)."""
    base = tensors[0].data_ptr()
    size = tensors[0].element_size()
    offsets = [(t.data_ptr() - base) // size for t in tensors]
    aligned = all(t.data_ptr() % 16 == 0 for t in tensors)
    return offsets, aligned
