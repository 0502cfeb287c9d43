"""Input validation shared by the public ops (ARCHITECTURE.md, op contract): errors name the
argument and the index of the offending tensor; nothing is broadcast or truncated silently."""

from __future__ import annotations

import math
from numbers import Real

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def tensor_list(value, name: str) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list or tuple of tensors, got {type(value).__name__}")
    for i, t in enumerate(value):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a torch.Tensor, got {type(t).__name__}")
    return list(value)


def float_dtype(t: torch.Tensor, name: str) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; supported: float16, bfloat16, float32, float64")


def number_list(value, length: int, name: str) -> list[float]:
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list or tuple of numbers, got {type(value).__name__}")
    if len(value) != length:
        raise ValueError(f"{name} has {len(value)} entries but there are {length} tensors")
    out = []
    for i, w in enumerate(value):
        if isinstance(w, bool) or not isinstance(w, Real):
            raise TypeError(f"{name}[{i}] must be a real number, got {type(w).__name__}")
        if not math.isfinite(w):
            raise ValueError(f"{name}[{i}] must be finite, got {w}")
        out.append(float(w))
    return out


def choice(value, options, name: str) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value


def nonnegative_number_list(value, length: int, name: str) -> list[float]:
    """``number_list`` whose entries must also be >= 0 (loss weights)."""
    out = number_list(value, length, name)
    for i, w in enumerate(out):
        if w < 0:
            raise ValueError(f"{name}[{i}] is {w}; weights must be >= 0")
    return out
