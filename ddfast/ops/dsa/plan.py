"""The pass planner: an ordered list of DSA families -> fused sampling passes.

A pass is ``[color?] [crop | cutout | flip]* [scale | rotate]*`` and runs as ONE gather over the output
pixels: the colour families are pointwise given the per-pixel channel mean and the per-image mean
(after brightness and saturation the per-image mean is mean_CHW(x) + brightness, so one per-image-mean
pre-pass over the input suffices), crop / cutout / flip are exact integer index maps that act on the
integer tap coordinates of the bilinear sample that ends the pass, and the bilinear sample is the
affine of the pass. A new pass starts when the colour family follows any other family, when an index
map follows a bilinear family, or when a second bilinear family follows without ``compose``.

DC's default 'M' sequence color_crop_cutout_flip_scale_rotate gives two passes, (color, crop, cutout,
flip, scale) and (rotate), exactly DC's two resamplings; ``compose=True`` folds scale and rotate into
one affine (one pass, one resampling: slightly different interpolation, a named option).

Ops are encoded for the kernels as integer codes (custom-op arguments are ints, not strings).
"""

from __future__ import annotations

COLOR, CROP, CUTOUT, FLIP, SCALE, ROTATE = 1, 2, 3, 4, 5, 6
CODES = {"color": COLOR, "crop": CROP, "cutout": CUTOUT, "flip": FLIP, "scale": SCALE, "rotate": ROTATE}
NAMES = {v: k for k, v in CODES.items()}
_STAGE = {COLOR: 0, CROP: 1, CUTOUT: 1, FLIP: 1, SCALE: 2, ROTATE: 2}


def plan_passes(families, compose: bool = False) -> list[tuple[int, ...]]:
    """The families (in application order) grouped into passes of op codes."""
    passes: list[list[int]] = []
    for name in families:
        code = CODES[name]
        stage = _STAGE[code]
        if passes:
            last = _STAGE[passes[-1][-1]]
            joins = (stage > last and stage != 0) or (stage == last == 1) or (stage == last == 2 and compose)
            if joins:
                passes[-1].append(code)
                continue
        passes.append([code])
    return [tuple(p) for p in passes]


def split_pass(ops) -> tuple[bool, tuple[int, ...], tuple[int, ...]]:
    """(colour?, index-map codes in order, affine codes in order) of one pass; checks its structure."""
    ops = tuple(int(o) for o in ops)
    colour = bool(ops) and ops[0] == COLOR
    rest = ops[1:] if colour else ops
    index = tuple(o for o in rest if _STAGE.get(o) == 1)
    affine = tuple(o for o in rest if _STAGE.get(o) == 2)
    if not ops or rest != index + affine or len(set(ops)) != len(ops):
        raise ValueError(f"dsa: malformed pass {ops}; a pass is [color] [crop|cutout|flip]* [scale|rotate]*, each "
                         "family at most once")
    return colour, index, affine


def geometry(height: int, width: int, config) -> list[int]:
    """DC's integer sizes for an image: [crop shift H, crop shift W, cutout size H, cutout size W]
    (``int(size * ratio + 0.5)`` as DC's rand_crop / rand_cutout compute them)."""
    return [int(height * config.ratio_crop_pad + 0.5), int(width * config.ratio_crop_pad + 0.5),
            int(height * config.ratio_cutout + 0.5), int(width * config.ratio_cutout + 0.5)]
