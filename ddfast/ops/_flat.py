"""The flat-vector family: param_match_loss, sgd_step and adjoint_step, the ops of the trajectory-matching
unroll over 1-D flat parameter vectors (docs/DESIGN.md, "Flat-vector ops of the trajectory-matching
unroll"). What the three share on the Python side is here: their declarations' backends and dtypes, and
their argument checks. The family goes by ``flat`` everywhere: csrc/flat/ (the C++ and CUDA helpers),
tests/flat_cases.py and tests/test_flat_ops*.py, bench/bench_flat_ops.py."""

from __future__ import annotations

from numbers import Real

import torch

from ._dtypes import TRITON_WITHOUT_FP64, accumulate_dtype
from ._validate import finite_number, float_dtype, float_tensor, same_dtype_and_device

OPS = ("param_match_loss", "sgd_step", "adjoint_step")

# The FusedOp fields the three declarations share: every backend, the CUDA kernels first on GPUs.
DECLARATION = dict(backends=("reference", "cpp", "cuda", "triton"), dtypes=TRITON_WITHOUT_FP64)


def flat_vector(t, name: str, ref: torch.Tensor | None = None, ref_name: str = "") -> torch.Tensor:
    """A non-empty 1-D floating-point vector; with ``ref``, of the same length, dtype and device."""
    float_tensor(t, name, 1, "a 1-D flat vector")
    if ref is None:
        if t.numel() == 0:
            raise ValueError(f"{name} is empty; a flat vector needs at least one element")
        return t
    same_dtype_and_device(t, name, ref, ref_name)
    if t.numel() != ref.numel():
        raise ValueError(f"{name} has {t.numel()} elements but {ref_name} has {ref.numel()}")
    return t


def flat_vectors(vectors: dict, optional: str = "") -> None:
    """Checks the named flat vectors in order: the first is the reference, the others match its length,
    dtype and device; the one named ``optional`` may be None."""
    (ref_name, ref), *others = vectors.items()
    flat_vector(ref, ref_name)
    for name, t in others:
        if t is not None or name != optional:
            flat_vector(t, name, ref, ref_name)


def scalar_tensor(value, name: str, ref: torch.Tensor, ref_name: str) -> torch.Tensor:
    """A 0-d floating-point tensor on ``ref``'s device (returned as is, so it may require grad), or a
    real number (returned as a 0-d tensor of ``ref``'s accumulate dtype: fp64 for fp64, else fp32).
    A number must be finite; a tensor's value is not read (NaN propagates)."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0:
            raise ValueError(f"{name} must be a 0-d tensor or a number, got a tensor of shape {tuple(value.shape)}")
        float_dtype(value, name)
        if value.device != ref.device:
            raise ValueError(f"{name} is on {value.device} but {ref_name} is on {ref.device}")
        return value
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a 0-d tensor or a real number, got {type(value).__name__}")
    number = finite_number(value, name)
    return torch.tensor(number, dtype=accumulate_dtype(ref.dtype), device=ref.device)


def flat_step_arguments(vectors: dict, state_name: str, lr, momentum) -> tuple[torch.Tensor, float, bool]:
    """The arguments of sgd_step and adjoint_step: ``vectors`` maps names to flat vectors (the first one
    is the reference; ``state_name``'s may be None), lr a 0-d tensor or number, momentum a finite float.
    Returns (lr as a tensor, momentum, whether the momentum form runs: a state is given or momentum != 0)."""
    flat_vectors(vectors, state_name)
    momentum = finite_number(momentum, "momentum")
    ref_name, ref = next(iter(vectors.items()))
    return scalar_tensor(lr, "lr", ref, ref_name), momentum, vectors[state_name] is not None or momentum != 0.0
