"""Random-resized-crop, flip and jitter for SRe2L/DELT recover and the KD evaluation protocol.

SRe2L's recover (VILA-Lab/SRe2L, ImageNet ``data_synthesis.py``) applies torchvision's
``RandomResizedCrop(size, scale=(min_crop, max_crop))`` and ``RandomHorizontalFlip`` to the whole batch
tensor (one crop and one flip decision for every image of the step), then a jitter: ``torch.roll`` by
``randint(0, jitter)`` pixels on both axes. The KD protocol crops and flips each image on its own
(a dataloader transform). Here the crop box is drawn as torchvision's ``RandomResizedCrop.get_params``
draws it (target area ~ U(scale) * H * W, log aspect ratio ~ U(log 3/4, log 4/3), ten tries, then a
central crop), and the box is resampled to the full size by bilinear ``grid_sample``: the same sample
positions as cropping then ``interpolate(bilinear, align_corners=False)``, and differentiable w.r.t. the
pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

RATIO = (3 / 4, 4 / 3)


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def crop_box(height: int, width: int, scale: tuple[float, float], gen: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of one random-resized crop (torchvision's ``get_params``)."""
    area = height * width
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target = area * _uniform(gen, *scale)
        aspect = math.exp(_uniform(gen, *log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=gen))
            left = int(torch.randint(0, width - w + 1, (), generator=gen))
            return top, left, h, w
    in_ratio = width / height  # fallback: the central crop with the ratio clamped
    if in_ratio < RATIO[0]:
        w, h = width, int(round(width / RATIO[0]))
    elif in_ratio > RATIO[1]:
        h, w = height, int(round(height * RATIO[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _check_scale(scale) -> tuple[float, float]:
    low, high = (float(s) for s in scale)
    if not 0 < low <= high <= 1:
        raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}")
    return low, high


def resized_crop(x: torch.Tensor, boxes: list[tuple[int, int, int, int]], flips: list[bool]) -> torch.Tensor:
    """Resample crop ``boxes[i]`` (top, left, h, w) of image i (or one box for all when ``boxes`` has one
    entry) to the full size, mirrored where ``flips`` says."""
    n, _, height, width = x.shape
    theta = torch.zeros(len(boxes), 2, 3, dtype=x.dtype)
    for k, ((top, left, h, w), flip) in enumerate(zip(boxes, flips)):
        theta[k, 0, 0] = (-w if flip else w) / width
        theta[k, 0, 2] = (2 * left + w) / width - 1
        theta[k, 1, 1] = h / height
        theta[k, 1, 2] = (2 * top + h) / height - 1
    theta = theta.to(x.device).expand(n, 2, 3) if len(boxes) == 1 else theta.to(x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def batch_crop(x: torch.Tensor, gen: torch.Generator, scale=(0.08, 1.0), flip: bool = True,
               jitter: int = 0) -> torch.Tensor:
    """SRe2L recover's augmentation: one random-resized crop and one flip decision for the whole batch,
    then a roll by ``randint(0, jitter)`` pixels on both axes (see the module docstring)."""
    scale = _check_scale(scale)
    box = crop_box(x.shape[2], x.shape[3], scale, gen)
    mirrored = flip and bool(torch.rand((), generator=gen) < 0.5)
    out = resized_crop(x, [box], [mirrored])
    if jitter:
        dy, dx = (int(v) for v in torch.randint(0, jitter + 1, (2,), generator=gen))
        out = torch.roll(out, shifts=(dy, dx), dims=(2, 3))
    return out


class RandomResizedCropFlip:
    """The KD protocol's per-image augmentation, ``augment(x, generator) -> x`` (the protocol of
    :func:`ddfast.evaluate`): a random-resized crop with ``scale`` and a horizontal flip with probability
    1/2, drawn for each image (SRe2L's relabel/FKD transforms: ``RandomResizedCrop(scale=(0.08, 1))``,
    ``RandomHorizontalFlip``)."""

    def __init__(self, scale=(0.08, 1.0), flip: bool = True):
        self.scale = _check_scale(scale)
        self.flip = bool(flip)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        boxes = [crop_box(x.shape[2], x.shape[3], self.scale, generator) for _ in range(x.shape[0])]
        flips = (torch.rand(x.shape[0], generator=generator) < 0.5).tolist() if self.flip else [False] * x.shape[0]
        return resized_crop(x, boxes, flips)

    def __repr__(self) -> str:
        return f"RandomResizedCropFlip(scale={self.scale}, flip={self.flip})"
