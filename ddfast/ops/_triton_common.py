"""Helpers shared by the Triton kernels and launchers: dtype maps, element offsets into pointer tables,
and correctly rounded fp32 arithmetic (no fast-math anywhere in ddfast)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

SIGNATURE_TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}


def accumulate_type(dtype: torch.dtype):
    """fp32 accumulation for fp16/bf16/fp32, fp64 for fp64 (docs/semantics.md#op-contract)."""
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


def offset_table(lists, device: torch.device) -> tuple[torch.Tensor, bool]:
    """Element offsets of every tensor of each list from that list's first tensor, concatenated into
    one int64 table on ``device``, and whether every tensor starts on a 16-byte boundary."""
    offsets, aligned = [], True
    for tensors in lists:
        these, ok = element_offsets(tensors)
        offsets += these
        aligned = aligned and ok
    table = torch.tensor(offsets, dtype=torch.int64)
    if device.type != "cpu":
        table = table.pin_memory().to(device, non_blocking=True)
    return table, aligned


@triton.jit
def sqrt_rn(x):
    """Correctly rounded square root (tl.sqrt is approximate for fp32)."""
    if x.dtype == tl.float64:
        return tl.sqrt(x)
    else:
        return tl.sqrt_rn(x)


@triton.jit
def div_rn(a, b):
    """Correctly rounded division (fp32 '/' is approximate)."""
    if a.dtype == tl.float64:
        return a / b
    else:
        return tl.div_rn(a, b)
