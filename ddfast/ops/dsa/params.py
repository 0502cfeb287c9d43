"""DSA parameters: what DC's DiffAugment draws, as one explicit table sampled from a torch.Generator.

DC's ``ParamDiffAug`` defaults and distributions (VICO-UoE/DatasetCondensation, utils.py), per set:

* color: brightness shift (r - 0.5) * brightness, saturation factor r * saturation, contrast factor
  r + contrast (three draws; applied in that order);
* crop: integer shifts uniform in [-s, s] along H and W, s = int(ratio_crop_pad * size + 0.5);
* cutout: a zeroed int(ratio_cutout * size + 0.5) square whose centre offset is uniform over DC's range;
* flip: horizontal with probability prob_flip;
* scale: sx, sy uniform in [1 / ratio_scale, ratio_scale]; rotate: angle uniform in
  [-ratio_rotate, ratio_rotate] degrees.

The integer families depend on the image size, which sampling does not know, so their columns hold the
uniform draw u in [0, 1) and the apply step turns it into DC's integer: k = min(floor(u * n), n - 1) over
the n values DC's ``torch.randint`` chooses from (same distribution; the bit stream is ddfast's own).

A set is one row of ``DSAParams.table`` [rows, 12] (float32). Rows that do not apply a family hold its
identity values (brightness 0, factors 1, crop shift 0, cutout off, no flip, scale 1, angle 0): that is
how 'S' mode with groups applies a different family per group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"

# Columns of the parameter table.
BRIGHTNESS, SATURATION, CONTRAST, CROP_H, CROP_W, CUT_H, CUT_W, CUT_ON, FLIP, SCALE_X, SCALE_Y, ANGLE = range(12)
NUM_COLUMNS = 12
IDENTITY = (0.0, 1.0, 1.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0)
COLUMNS = {"color": (BRIGHTNESS, SATURATION, CONTRAST), "crop": (CROP_H, CROP_W), "cutout": (CUT_H, CUT_W, CUT_ON),
           "flip": (FLIP,), "scale": (SCALE_X, SCALE_Y), "rotate": (ANGLE,)}
ROW_KINDS = ("shared", "sample", "group")


@dataclass(frozen=True)
class DSAConfig:
    """DC's ``ParamDiffAug`` defaults (the parameter ranges; ``aug_mode`` is dsa_sample's ``mode``)."""

    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5

    @classmethod
    def of(cls, param) -> "DSAConfig":
        """A DSAConfig from None (defaults), a DSAConfig, or any object with ParamDiffAug's attributes."""
        if param is None:
            return cls()
        if isinstance(param, cls):
            return param
        values = {}
        for f in fields(cls):
            if not hasattr(param, f.name):
                raise TypeError(f"param has no attribute {f.name!r}; pass a DSAConfig or DC's ParamDiffAug")
            v = getattr(param, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"param.{f.name} must be a finite number, got {v!r}")
            values[f.name] = float(v)
        if values["ratio_scale"] <= 0:
            raise ValueError(f"param.ratio_scale must be positive, got {values['ratio_scale']}")
        return cls(**values)


@dataclass(frozen=True)
class DSAParams:
    """One or more DSA parameter sets (``table`` rows, see the module docstring), the families they apply
    in order, and how rows map to images: ``"shared"`` (one row for a batch of any size: the same object on
    the real and the synthetic batch is Siamese augmentation), ``"sample"`` (one row per image) or
    ``"group"`` (one row per group, chosen per image by ``dsa``'s ``group_index``)."""

    table: torch.Tensor
    families: tuple[str, ...]
    rows: str
    config: DSAConfig = DSAConfig()

    def __post_init__(self):
        if not isinstance(self.table, torch.Tensor) or self.table.dtype != torch.float32 or self.table.dim() != 2 \
                or self.table.shape[1] != NUM_COLUMNS or self.table.shape[0] < 1:
            raise ValueError(f"DSAParams.table must be a float32 tensor [rows >= 1, {NUM_COLUMNS}]")
        if self.rows not in ROW_KINDS:
            raise ValueError(f"DSAParams.rows must be one of {ROW_KINDS}, got {self.rows!r}")
        if self.rows == "shared" and self.table.shape[0] != 1:
            raise ValueError(f"shared DSAParams have one row, got {self.table.shape[0]}")
        parse_strategy(self.families, "DSAParams.families")

    @property
    def num_rows(self) -> int:
        return self.table.shape[0]

    def column(self, index: int) -> torch.Tensor:
        return self.table[:, index]

    def to(self, device) -> "DSAParams":
        return DSAParams(self.table.to(device), self.families, self.rows, self.config)


def parse_strategy(strategy, name: str = "strategy") -> tuple[str, ...]:
    """DC's strategy string ('color_crop_...') or a sequence of family names -> a tuple of families."""
    if isinstance(strategy, str):
        names = tuple(strategy.split("_")) if strategy else ()
    elif isinstance(strategy, (list, tuple)) and all(isinstance(s, str) for s in strategy):
        names = tuple(strategy)
    else:
        raise TypeError(f"{name} must be a string like {DEFAULT_STRATEGY!r} or a sequence of family names, got "
                        f"{type(strategy).__name__}")
    if not names:
        raise ValueError(f"{name} is empty; name at least one of {FAMILIES}")
    for i, f in enumerate(names):
        if f not in FAMILIES:
            raise ValueError(f"{name} has unknown family {f!r} at position {i}; families are {FAMILIES}")
        if f in names[:i]:
            raise ValueError(f"{name} repeats family {f!r} (position {i}); each family may appear once")
    return names


def _draw(rows: int, config: DSAConfig, generator: torch.Generator, identity_mask: torch.Tensor) -> torch.Tensor:
    """All twelve columns for ``rows`` sets with DC's distributions, from one uniform draw: each column is
    u * a + b (flip: u < prob_flip; cutout-on: 1), then IDENTITY where ``identity_mask`` says the row
    does not apply the family. A handful of ops whatever the family count (each is a launch on a GPU)."""
    device = generator.device
    lo = 1.0 / config.ratio_scale
    angle = 2 * config.ratio_rotate / 180 * math.pi
    scale = [config.brightness, config.saturation, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, config.ratio_scale - lo,
             config.ratio_scale - lo, angle]
    shift = [-0.5 * config.brightness, 0.0, config.contrast, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, lo, lo, -0.5 * angle]
    flip = [0.0] * NUM_COLUMNS
    flip[FLIP] = 1.0
    consts = torch.tensor([scale, shift, list(IDENTITY), flip], dtype=torch.float32).to(device, non_blocking=True)
    u = torch.rand((rows, NUM_COLUMNS), generator=generator, device=device, dtype=torch.float32)
    drawn = torch.addcmul(consts[1], u, consts[0])
    drawn = torch.where(consts[3] > 0, (u < config.prob_flip).to(torch.float32), drawn)
    return torch.where(identity_mask, drawn, consts[2])


def family_mask(active: list[tuple[str, ...]], device) -> torch.Tensor:
    """[rows, 12] bool: which columns each row applies (the others take IDENTITY)."""
    mask = [[False] * NUM_COLUMNS for _ in active]
    for i, fams in enumerate(active):
        for f in fams:
            for c in COLUMNS[f]:
                mask[i][c] = True
    return torch.tensor(mask).to(device, non_blocking=True)


def dsa_sample(batch_size: int, strategy=DEFAULT_STRATEGY, generator: torch.Generator | None = None,
               mode: str = "S", shared: bool = True, groups: int | None = None, param=None) -> DSAParams:
    """Draw DSA parameters from ``generator`` (never the global RNG), with DC's DiffAugment semantics.

    Args:
        batch_size: images per call; used only for per-sample sets (``shared=False``).
        strategy: DC's family string, e.g. 'color_crop_cutout_flip_scale_rotate', or a list of names.
        generator: the torch.Generator to draw from (required); the sets live on its device.
        mode: 'S' applies ONE family per call, chosen uniformly (DC's default ``aug_mode``; one choice for
            the whole batch, as DC's call draws once; with ``groups`` one choice per group, as DC's
            class loop calls DiffAugment once per class); 'M' applies every family in order.
        shared: one set for a batch of any size (DC's seeded, Siamese call); False draws one set per
            image (DC's unseeded call: MTT's inner loop, expert training, evaluation).
        groups: K sets, one per group (class), applied by ``dsa(x, params, group_index)``.
        param: a DSAConfig or DC's ParamDiffAug (its ranges); None = DC's defaults.

    'S' mode reads the chosen family back to the host (a synchronisation when the generator is on CUDA).
    """
    from .._validate import choice, positive_int

    families = parse_strategy(strategy)
    choice(mode, ("S", "M"), "mode")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    config = DSAConfig.of(param)
    if groups is not None:
        positive_int(groups, "groups")
        rows, kind = groups, "group"
    elif shared:
        rows, kind = 1, "shared"
    else:
        rows, kind = positive_int(batch_size, "batch_size"), "sample"
    device = generator.device
    if mode == "S":
        picks = torch.randint(len(families), (groups if kind == "group" else 1,), generator=generator,
                              device=device).tolist()
        chosen = {families[k] for k in picks}
        used = tuple(f for f in families if f in chosen)  # strategy order
        active = [(families[k],) for k in picks] if kind == "group" else [used] * rows
    else:
        used, active = families, [families] * rows
    mask = family_mask(active if kind == "group" else active[:1], device)
    table = _draw(rows, config, generator, mask).contiguous()
    return DSAParams(table, used, kind, config)
