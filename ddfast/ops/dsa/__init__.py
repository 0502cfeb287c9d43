"""Differentiable Siamese augmentation with explicit parameters (docs/semantics.md#dsa)."""

from __future__ import annotations

from typing import Callable

import torch

from .._validate import dsa_group_index, image_batch
from ._op import DISPATCH, OP
from .params import DEFAULT_STRATEGY, DSAConfig, DSAParams, dsa_sample
from .plan import geometry, plan_passes

__all__ = ["DISPATCH", "DSAConfig", "DSAParams", "dsa", "dsa_augment", "dsa_sample"]


def dsa(x: torch.Tensor, params: DSAParams, group_index: torch.Tensor | None = None,
        compose: bool = False) -> torch.Tensor:
    """Apply DSA parameters (from :func:`dsa_sample`) to a batch of images, differentiably in ``x``.

    Reproduces DC's ``DiffAugment`` (VICO-UoE/DatasetCondensation, utils.py) for the given parameters:
    the families of ``params.families`` in order, colour (brightness, saturation, contrast), crop (integer
    shift, zero fill), cutout, horizontal flip, scale and rotate (bilinear ``grid_sample``, zero padding,
    align_corners=False, as DC calls it). Fused: the families run as a few sampling passes (plan.py);
    DC's default 'M' sequence is two passes (colour + crop + cutout + flip + scale, then rotate), one with
    ``compose=True`` (scale and rotate folded into one affine: one bilinear resampling instead of DC's
    two, slightly different interpolation); 'S' mode is one pass.

    Args:
        x: [N, C, H, W] images (fp16, bf16, fp32; fp64 on the reference and cpp backends).
        params: shared sets apply to a batch of any size (the same object on the real and the synthetic
            batch gives Siamese augmentation); per-sample sets need N rows; group sets need
            ``group_index``, an int64 [N] tensor of row numbers in [0, K).
        compose: fold consecutive bilinear families into one pass.

    Returns the augmented images in x's dtype; gradients flow to ``x`` (not to the parameters). Backends:
    ``auto`` runs the C++ kernels on CPU and the Triton kernels on CUDA once validated on a GPU.
    """
    image_batch(x, "x")
    if not isinstance(params, DSAParams):
        raise TypeError(f"params must be a DSAParams (from ddfast.dsa_sample), got {type(params).__name__}")
    if not isinstance(compose, bool):
        raise TypeError(f"compose must be a bool, got {type(compose).__name__}")
    n = x.shape[0]
    if params.rows == "sample" and params.num_rows != n:
        raise ValueError(f"params holds per-sample sets for {params.num_rows} images but x has {n}; draw them with "
                         f"dsa_sample({n}, ..., shared=False) or use shared=True")
    if params.rows == "group":
        if group_index is None:
            raise ValueError(f"params holds {params.num_rows} group sets: pass group_index (int64 [N])")
        group_index = dsa_group_index(group_index, n, params.num_rows, x.device).contiguous()
    elif group_index is not None:
        raise ValueError(f"group_index is given but params holds {params.rows!r} sets; draw them with groups=K")
    table = params.table if params.table.device == x.device else params.table.to(x.device, non_blocking=True)
    if n == 0:
        return x.clone()
    sizes = geometry(x.shape[2], x.shape[3], params.config)
    x = x.contiguous()
    for ops in plan_passes(params.families, compose):
        x = OP(x, table, group_index, list(ops), sizes)
    return x


def dsa_augment(strategy=DEFAULT_STRATEGY, mode: str = "S", param=None,
                compose: bool = False) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """An ``augment(x, generator)`` callable for :func:`ddfast.unroll`: per-sample sets drawn from the
    generator it is handed (MTT's inner loop calls DiffAugment unseeded, i.e. per-sample parameters),
    then :func:`dsa`. The unroll hands the same seeded generator on every replay, so the forward and the
    backward see the same augmentation."""
    from .params import DSAConfig as _Config, parse_strategy
    from .._validate import choice

    families = parse_strategy(strategy)
    choice(mode, ("S", "M"), "mode")
    config = _Config.of(param)

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        params = dsa_sample(x.shape[0], families, generator, mode=mode, shared=False, param=config)
        return dsa(x, params, compose=compose)

    return augment
