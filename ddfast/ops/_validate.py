"""Input validation shared by the public ops (docs/semantics.md#op-contract): errors name the
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


def float_tensor(t, name: str, dims: int, shape: str) -> torch.Tensor:
    """A floating-point tensor of ``dims`` dimensions; ``shape`` says which in the error."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    float_dtype(t, name)
    if t.dim() != dims:
        raise ValueError(f"{name} must be {shape}, got shape {tuple(t.shape)}")
    return t


def feature_matrix(t, name: str) -> torch.Tensor:
    """A 2-D floating-point tensor [rows, features]."""
    return float_tensor(t, name, 2, "2-D [rows, features]")


def same_dtype_and_device(t: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str) -> None:
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def positive_numbers(value, name: str) -> list[float]:
    """A non-empty sequence of positive finite reals (bandwidths and the like)."""
    if isinstance(value, torch.Tensor):
        value = value.tolist() if value.dim() else [value.item()]
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list or tuple of positive numbers, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} is empty; give at least one positive number")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, Real):
            raise TypeError(f"{name}[{i}] must be a real number, got {type(v).__name__}")
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name}[{i}] must be positive and finite, got {v}")
        out.append(float(v))
    return out


def class_labels(labels, rows: torch.Tensor, num_classes: int, name: str, rows_name: str) -> torch.Tensor:
    """int64 1-D labels on the device of ``rows``, one per row; values in [0, num_classes) (checked in
    eager mode only: it reads the values)."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype != torch.int64:
        raise TypeError(f"{name} must have dtype torch.int64, got {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != rows.shape[0]:
        raise ValueError(f"{name} must be 1-D with one label per row of {rows_name} ({rows.shape[0]}), got shape "
                         f"{tuple(labels.shape)}")
    if labels.device != rows.device:
        raise ValueError(f"{name} is on {labels.device} but {rows_name} is on {rows.device}")
    if not torch.compiler.is_compiling() and labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} has label {bad} outside [0, num_classes={num_classes})")
    return labels


def positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def nonnegative_number_list(value, length: int, name: str) -> list[float]:
    """``number_list`` whose entries must also be >= 0 (loss weights)."""
    out = number_list(value, length, name)
    for i, w in enumerate(out):
        if w < 0:
            raise ValueError(f"{name}[{i}] is {w}; weights must be >= 0")
    return out


def feature_pair(x, y, x_name: str, y_name: str) -> None:
    """Two [rows, D] floating-point matrices with the same D, dtype and device."""
    feature_matrix(x, x_name)
    feature_matrix(y, y_name)
    same_dtype_and_device(y, y_name, x, x_name)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{x_name} has {x.shape[1]} features (shape {tuple(x.shape)}) but {y_name} has "
                         f"{y.shape[1]} (shape {tuple(y.shape)})")


def class_feature_pairs(f_syn, y_syn, f_real, y_real, num_classes) -> None:
    """The arguments of the class-batched distribution-matching ops (class_mean_distance, class_mmd)."""
    feature_pair(f_syn, f_real, "f_syn", "f_real")
    positive_int(num_classes, "num_classes")
    class_labels(y_syn, f_syn, num_classes, "y_syn", "f_syn")
    class_labels(y_real, f_real, num_classes, "y_real", "f_real")


def class_row_counts(y_syn: torch.Tensor, y_real: torch.Tensor, num_classes: int,
                     missing: str) -> tuple[list[int], list[int]]:
    """Rows per class on each side (a value check: eager mode only). A class with rows on one side only
    raises unless ``missing == "ignore"``; a class absent on both sides is fine (sharded classes)."""
    n_syn = torch.bincount(y_syn, minlength=num_classes).tolist()
    n_real = torch.bincount(y_real, minlength=num_classes).tolist()
    if missing == "raise":
        for c, (ns, nr) in enumerate(zip(n_syn, n_real)):
            if (ns == 0) != (nr == 0):
                side, other = ("y_syn", "y_real") if ns == 0 else ("y_real", "y_syn")
                raise ValueError(f"class {c} has no rows in {side} but {max(ns, nr)} in {other}; pass "
                                 "missing='ignore' to let such classes contribute 0")
    return n_syn, n_real


def real_number(value, name: str, *, positive: bool = False) -> float:
    """One finite real number, >= 0 (or > 0 when ``positive``): learning rates, momentum, decay."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'positive' if positive else 'non-negative'} and finite, got {value}")
    return float(value)


def finite_number(value, name: str) -> float:
    """A finite real Python number (bool excluded)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def image_batch(x, name: str) -> torch.Tensor:
    """A 4-D [N, C, H, W] floating-point image batch with C, H, W >= 1."""
    float_tensor(x, name, 4, "4-D [N, C, H, W]")
    if min(x.shape[1:]) < 1:
        raise ValueError(f"{name} must have C, H, W >= 1, got shape {tuple(x.shape)}")
    return x


def dsa_group_index(index, n: int, groups: int, device: torch.device) -> torch.Tensor:
    """int64 [n] group numbers on ``device``, values in [0, groups) (checked in eager mode only)."""
    if not isinstance(index, torch.Tensor):
        raise TypeError(f"group_index must be a torch.Tensor, got {type(index).__name__}")
    if index.dtype != torch.int64:
        raise TypeError(f"group_index must have dtype torch.int64, got {index.dtype}")
    if index.dim() != 1 or index.shape[0] != n:
        raise ValueError(f"group_index must be 1-D with one group per image ({n}), got shape {tuple(index.shape)}")
    if index.device != device:
        raise ValueError(f"group_index is on {index.device} but x is on {device}")
    if not torch.compiler.is_compiling() and index.numel():
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= groups:
            raise ValueError(f"group_index has group {lo if lo < 0 else hi} outside [0, groups={groups})")
    return index


def optional_generator(value, name: str = "generator"):
    """None or a torch.Generator."""
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(value).__name__}")
    return value
