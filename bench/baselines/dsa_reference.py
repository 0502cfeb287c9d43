"""Re-creation of the structure of DC's DiffAugment (VICO-UoE/DatasetCondensation, utils.py), written by
us from its published semantics, as the baseline of bench/bench_dsa.py: every family a separate chain of
ops; the random draws from torch's global RNG, reseeded before each draw for a seeded (Siamese) call;
the scale and rotate matrices built per image in a Python loop, turned into a tensor on the CPU, the
sampling grid computed there and copied to the images' device, then grid_sample; crop and cutout as
index gathers / mask scatters with a meshgrid. 'M' applies every family, 'S' one chosen at random."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class Param:
    aug_mode = "M"
    prob_flip, ratio_scale, ratio_rotate, ratio_crop_pad, ratio_cutout = 0.5, 1.2, 15.0, 0.125, 0.5
    brightness, saturation, contrast = 1.0, 2.0, 0.5

    def __init__(self, seed: int):
        self.seed = seed
        self.siamese = seed != -1

    def reseed(self):
        if self.seed != -1:
            torch.random.manual_seed(self.seed)
            self.seed += 1


def _one(v, siamese):
    if siamese:
        v[:] = v[0].clone()
    return v


def brightness(x, p):
    p.reseed()
    r = _one(torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device), p.siamese)
    return x + (r - 0.5) * p.brightness


def saturation(x, p):
    m = x.mean(dim=1, keepdim=True)
    p.reseed()
    r = _one(torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device), p.siamese)
    return (x - m) * (r * p.saturation) + m


def contrast(x, p):
    m = x.mean(dim=[1, 2, 3], keepdim=True)
    p.reseed()
    r = _one(torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device), p.siamese)
    return (x - m) * (r + p.contrast) + m


def _affine(x, matrices, p):
    theta = torch.tensor(matrices, dtype=torch.float)  # built on the CPU from Python lists
    if p.siamese:
        theta[:] = theta[0].clone()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False).to(x.device)
    return F.grid_sample(x, grid, align_corners=False)


def scale(x, p):
    lo = 1.0 / p.ratio_scale
    p.reseed()
    sx = torch.rand(x.shape[0]) * (p.ratio_scale - lo) + lo
    p.reseed()
    sy = torch.rand(x.shape[0]) * (p.ratio_scale - lo) + lo
    return _affine(x, [[[float(sx[i]), 0.0, 0.0], [0.0, float(sy[i]), 0.0]] for i in range(x.shape[0])], p)


def rotate(x, p):
    p.reseed()
    a = (torch.rand(x.shape[0]) - 0.5) * 2 * p.ratio_rotate / 180 * math.pi
    mats = []
    for i in range(x.shape[0]):
        c, s = math.cos(float(a[i])), math.sin(float(a[i]))
        mats.append([[c, -s, 0.0], [s, c, 0.0]])
    return _affine(x, mats, p)


def flip(x, p):
    p.reseed()
    r = _one(torch.rand(x.shape[0], 1, 1, 1, device=x.device), p.siamese)
    return torch.where(r < p.prob_flip, x.flip(3), x)


def crop(x, p):
    n, _, h, w = x.shape
    sh, sw = int(h * p.ratio_crop_pad + 0.5), int(w * p.ratio_crop_pad + 0.5)
    p.reseed()
    th = _one(torch.randint(-sh, sh + 1, size=[n, 1, 1], device=x.device), p.siamese)
    p.reseed()
    tw = _one(torch.randint(-sw, sw + 1, size=[n, 1, 1], device=x.device), p.siamese)
    b, gi, gj = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                               torch.arange(w, device=x.device), indexing="ij")
    gi = torch.clamp(gi + th + 1, 0, h + 1)
    gj = torch.clamp(gj + tw + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1).contiguous()
    return padded[b, gi, gj].permute(0, 3, 1, 2)


def cutout(x, p):
    n, _, h, w = x.shape
    ch, cw = int(h * p.ratio_cutout + 0.5), int(w * p.ratio_cutout + 0.5)
    p.reseed()
    oh = _one(torch.randint(0, h + (1 - ch % 2), size=[n, 1, 1], device=x.device), p.siamese)
    p.reseed()
    ow = _one(torch.randint(0, w + (1 - cw % 2), size=[n, 1, 1], device=x.device), p.siamese)
    b, gi, gj = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
                               torch.arange(cw, device=x.device), indexing="ij")
    gi = torch.clamp(gi + oh - ch // 2, min=0, max=h - 1)
    gj = torch.clamp(gj + ow - cw // 2, min=0, max=w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[b, gi, gj] = 0
    return x * mask.unsqueeze(1)


FAMILIES = {"color": [brightness, saturation, contrast], "crop": [crop], "cutout": [cutout], "flip": [flip],
            "scale": [scale], "rotate": [rotate]}


def diff_augment(x, strategy: str = "color_crop_cutout_flip_scale_rotate", seed: int = -1, mode: str = "M"):
    p = Param(seed)
    names = strategy.split("_")
    if mode == "S":
        p.reseed()
        names = [names[int(torch.randint(0, len(names), size=(1,)).item())]]
    for name in names:
        for f in FAMILIES[name]:
            x = f(x, p)
    return x.contiguous()
