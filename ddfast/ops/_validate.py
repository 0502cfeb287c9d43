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


def labels_for(labels, features: torch.Tensor, name: str, features_name: str) -> torch.Tensor:
    """1-D integer class labels, one per row of ``features``; returned as int64."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class labels, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class labels, got dtype {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"{name} must be 1-D with one label per row of {features_name} ({features.shape[0]} rows), "
                         f"got shape {tuple(labels.shape)}")
    if labels.device != features.device:
        raise ValueError(f"{name} is on {labels.device} but {features_name} is on {features.device}")
    return labels.long()


def labels_in_range(labels: torch.Tensor, num_classes: int, name: str) -> None:
    """Value check (eager only): every label in [0, num_classes)."""
    if labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise ValueError(f"{name} holds label {bad}, outside [0, num_classes={num_classes})")


def feature_pair(f_syn, f_real, names=("f_syn", "f_real")) -> None:
    """Two [N, D] floating-point feature matrices of the same D, dtype and device."""
    for name, f in zip(names, (f_syn, f_real)):
        if not isinstance(f, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(f).__name__}")
        float_dtype(f, name)
        if f.dim() != 2:
            raise ValueError(f"{name} must be 2-D [rows, features], got shape {tuple(f.shape)}")
    a, b = names
    if f_syn.shape[1] != f_real.shape[1]:
        raise ValueError(f"{a} has {f_syn.shape[1]} features per row but {b} has {f_real.shape[1]}")
    if f_syn.dtype != f_real.dtype:
        raise TypeError(f"{a} has dtype {f_syn.dtype} but {b} has {f_real.dtype}")
    if f_syn.device != f_real.device:
        raise ValueError(f"{a} is on {f_syn.device} but {b} is on {f_real.device}")


def num_classes_arg(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


def nonnegative_number_list(value, length: int, name: str) -> list[float]:
    """``number_list`` whose entries must also be >= 0 (loss weights)."""
    out = number_list(value, length, name)
    for i, w in enumerate(out):
        if w < 0:
            raise ValueError(f"{name}[{i}] is {w}; weights must be >= 0")
    return out
