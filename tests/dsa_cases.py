"""Independent brute-force DSA for the tests: DC's families written per image from the DSAParams table,
with Python-built affine matrices (as DC builds them) and slicing instead of the reference's gathers."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

BRIGHTNESS, SATURATION, CONTRAST, CROP_H, CROP_W, CUT_H, CUT_W, CUT_ON, FLIP, SX, SY, ANGLE = range(12)


def randint_from(u: float, count: int) -> int:
    """The integer DC's randint(count) gives for the stored uniform u (float32 product, as ddfast defines it)."""
    return min(int(math.floor(float(np.float32(u) * np.float32(count)))), count - 1)


def sizes(h, w, ratio_crop=0.125, ratio_cut=0.5):
    return int(h * ratio_crop + 0.5), int(w * ratio_crop + 0.5), int(h * ratio_cut + 0.5), int(w * ratio_cut + 0.5)


def theta_of(family: str, row) -> list[list[float]]:
    if family == "scale":
        return [[row[SX], 0.0, 0.0], [0.0, row[SY], 0.0]]
    a = row[ANGLE]
    return [[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]


def matmul2(a, b):
    lin = [[sum(a[i][k] * b[k][j] for k in range(2)) for j in range(2)] for i in range(2)]
    return [lin[0] + [0.0], lin[1] + [0.0]]


def apply_family(img: torch.Tensor, family: str, row, theta=None) -> torch.Tensor:
    """One family on one image [C, H, W] (float64), with the parameter row (a list of 12 floats)."""
    c, h, w = img.shape
    sh, sw, ch, cw = sizes(h, w)
    if family == "color":
        y = img + row[BRIGHTNESS]
        m = y.mean(0, keepdim=True)
        y = (y - m) * row[SATURATION] + m
        m = y.mean()
        return (y - m) * row[CONTRAST] + m
    if family == "crop":
        dh = randint_from(row[CROP_H], 2 * sh + 1) - sh
        dw = randint_from(row[CROP_W], 2 * sw + 1) - sw
        out = torch.zeros_like(img)
        for i in range(h):
            for j in range(w):
                if 0 <= i + dh < h and 0 <= j + dw < w:
                    out[:, i, j] = img[:, i + dh, j + dw]
        return out
    if family == "cutout":
        if row[CUT_ON] < 0.5:
            return img.clone()
        oh = randint_from(row[CUT_H], h + 1 - ch % 2) - ch // 2
        ow = randint_from(row[CUT_W], w + 1 - cw % 2) - cw // 2
        out = img.clone()
        out[:, max(oh, 0):max(oh + ch, 0), max(ow, 0):max(ow + cw, 0)] = 0
        return out
    if family == "flip":
        return img.flip(2) if row[FLIP] > 0.5 else img.clone()
    theta = theta or theta_of(family, row)
    t = torch.tensor([theta], dtype=img.dtype)
    grid = F.affine_grid(t, [1, c, h, w], align_corners=False)
    return F.grid_sample(img[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def brute(x: torch.Tensor, table: torch.Tensor, families, row_of=None, compose=False) -> torch.Tensor:
    """DC's sequence on every image: row_of(n) picks the table row (default: n if per-image else 0)."""
    x = x.double()
    rows = table.double().tolist()
    out = []
    for n in range(x.shape[0]):
        row = rows[row_of(n)] if row_of else rows[n if len(rows) > 1 else 0]
        img = x[n]
        k = 0
        fams = list(families)
        while k < len(fams):
            f = fams[k]
            if compose and f in ("scale", "rotate") and k + 1 < len(fams) and fams[k + 1] in ("scale", "rotate"):
                img = apply_family(img, f, row, matmul2(theta_of(f, row), theta_of(fams[k + 1], row)))
                k += 2
                continue
            img = apply_family(img, f, row)
            k += 1
        out.append(img)
    return torch.stack(out)


def bilinear_brute(img: torch.Tensor, theta) -> torch.Tensor:
    """Bilinear sampling written out from align_corners=False's definition (pixel centres at
    (2k + 1) / size - 1), zero outside: pins the convention DC relies on."""
    c, h, w = img.shape
    out = torch.zeros_like(img)
    for i in range(h):
        for j in range(w):
            xn, yn = (2 * j + 1) / w - 1, (2 * i + 1) / h - 1
            gx = theta[0][0] * xn + theta[0][1] * yn + theta[0][2]
            gy = theta[1][0] * xn + theta[1][1] * yn + theta[1][2]
            ix, iy = ((gx + 1) * w - 1) / 2, ((gy + 1) * h - 1) / 2
            x0, y0 = math.floor(ix), math.floor(iy)
            for yy, wy in ((y0, 1 - (iy - y0)), (y0 + 1, iy - y0)):
                for xx, wx in ((x0, 1 - (ix - x0)), (x0 + 1, ix - x0)):
                    if 0 <= yy < h and 0 <= xx < w:
                        out[:, i, j] += wy * wx * img[:, yy, xx]
    return out
