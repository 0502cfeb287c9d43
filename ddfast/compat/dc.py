"""Drop-in replacements for DC's helpers (VICO-UoE/DatasetCondensation, utils.py).

``from ddfast.compat.dc import match_loss, distance_wb`` in place of DC's own: same signatures, same
results (metrics 'ours', 'mse', 'cos'; 'l1' too), computed by the fused :func:`ddfast.grad_distance`.
``from ddfast.compat.dc import DiffAugment, ParamDiffAug``: DC's differentiable Siamese augmentation on
the fused :func:`ddfast.dsa`, with explicit generators instead of reseeding the global RNG.
"""

from __future__ import annotations

import torch

from ..ops.dsa import dsa, dsa_sample
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


# --- DSA: DiffAugment and ParamDiffAug -----------------------------------------------------------------------

class ParamDiffAug:
    """DC's ``ParamDiffAug`` (same attributes and defaults). ``latestseed`` and ``Siamese`` are set by
    :func:`DiffAugment` as DC sets them; ``ratio_noise`` and ``batchmode`` exist for code that reads them
    (MTT's copy has them) and are not used by any family."""

    def __init__(self):
        self.aug_mode = "S"  # 'M': every family in order; 'S': one family per call
        self.prob_flip = 0.5
        self.ratio_scale = 1.2
        self.ratio_rotate = 15.0
        self.ratio_crop_pad = 0.125
        self.ratio_cutout = 0.5  # the cutout square is 0.5 x 0.5 of the image
        self.ratio_noise = 0.05
        self.brightness = 1.0
        self.saturation = 2.0
        self.contrast = 0.5
        self.Siamese = False
        self.latestseed = -1
        self.batchmode = False


# Unseeded calls draw from this generator, never from torch's global RNG (reseed with manual_seed_dsa).
_UNSEEDED = torch.Generator().manual_seed(0)


def manual_seed_dsa(seed: int) -> None:
    """Reseed the generator that unseeded :func:`DiffAugment` calls draw from."""
    _UNSEEDED.manual_seed(seed)


def DiffAugment(x: torch.Tensor, strategy: str = "color_crop_cutout_flip_scale_rotate", seed: int = -1,
                param: ParamDiffAug | None = None) -> torch.Tensor:  # noqa: N802 - DC's name
    """DC's ``DiffAugment(x, strategy, seed, param)`` on :func:`ddfast.dsa`.

    ``seed != -1``: ONE parameter set, drawn from a generator seeded with ``seed`` (DC reseeds torch's
    global RNG instead): equal seeds give equal augmentations, and a real and a synthetic batch of
    different sizes called with the same seed get the same set (Siamese). ``seed == -1``: per-image sets
    from a module-level generator (DC draws per image from the global RNG). ``param.aug_mode`` 'S'
    applies one family per call, 'M' all in order. Strategy 'none', 'None' or '' returns x unchanged.
    ``param=None`` uses DC's defaults (DC itself would fail). The random streams are ddfast's own: the
    distributions are DC's, the individual draws are not bit-identical to DC's.
    """
    if strategy in ("None", "none", ""):
        return x
    param = ParamDiffAug() if param is None else param
    mode = getattr(param, "aug_mode", "S")
    if mode not in ("S", "M"):
        raise ValueError(f"unknown augmentation mode: param.aug_mode = {mode!r} (DC accepts 'S' and 'M')")
    param.Siamese = seed != -1
    param.latestseed = seed
    if seed == -1:
        params = dsa_sample(x.shape[0], strategy, _UNSEEDED, mode=mode, shared=False, param=param)
    else:
        params = dsa_sample(x.shape[0], strategy, torch.Generator().manual_seed(int(seed)), mode=mode, shared=True,
                            param=param)
    return dsa(x, params)
