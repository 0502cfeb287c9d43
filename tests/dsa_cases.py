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


def dc_diffaugment(x: torch.Tensor, strategy: str, seed: int, param) -> torch.Tensor:
    """DC's DiffAugment as its documentation and calls define it, for the compat tests: the draws come from
    torch's global RNG in DC's order (in 'S' mode first the family index, randint(0, families, (1,)) on the
    CPU; colour: three rand(N, 1, 1, 1) in x's dtype on x's device; crop and cutout: randint(low, high,
    [N, 1, 1]) on x's device, H then W; flip: rand(N, 1, 1, 1) on x's device; scale: two rand(N) on the CPU;
    rotate: rand(N) on the CPU); a seeded call reseeds with seed, seed + 1, ... before every draw and uses the
    first image's values for all; the families are applied per image by :func:`brute` (float64)."""
    param.batchmode, param.latestseed = seed != -1, seed
    if strategy in ("", "none", "None"):
        return x
    n, h, w = x.shape[0], x.shape[2], x.shape[3]

    def draw(make):
        if param.latestseed != -1:
            torch.manual_seed(param.latestseed)
            param.latestseed += 1
        return make().reshape(-1).double().tolist()

    families = strategy.split("_")
    if param.aug_mode == "S":
        families = [families[int(draw(lambda: torch.randint(0, len(families), (1,)))[0])]]
    rows = [[0.0, 1.0, 1.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0] for _ in range(n)]
    sh, sw, ch, cw = sizes(h, w, param.ratio_crop_pad, param.ratio_cutout)
    on_x = {"device": x.device}

    def put(column, values):
        for i in range(n):
            rows[i][column] = values[0 if param.batchmode else i]

    for f in families:
        if f == "color":
            for column, ratio, offset in ((BRIGHTNESS, param.brightness, -0.5), (SATURATION, param.saturation, None),
                                          (CONTRAST, None, param.contrast)):
                r = draw(lambda: torch.rand(n, 1, 1, 1, dtype=x.dtype, **on_x))
                put(column, [(v + offset) * ratio if column == BRIGHTNESS else v * ratio if ratio else v + offset
                             for v in r])
        elif f in ("crop", "cutout"):
            counts = (2 * sh + 1, 2 * sw + 1) if f == "crop" else (h + 1 - ch % 2, w + 1 - cw % 2)
            lows = (-sh, -sw) if f == "crop" else (0, 0)
            for column, count, low in zip((CROP_H, CROP_W) if f == "crop" else (CUT_H, CUT_W), counts, lows):
                k = draw(lambda: torch.randint(low, low + count, size=[n, 1, 1], **on_x))
                put(column, [(v - low + 0.5) / count for v in k])
            if f == "cutout":
                put(CUT_ON, [1.0] * n)
        elif f == "flip":
            put(FLIP, [1.0 if v < param.prob_flip else 0.0 for v in draw(lambda: torch.rand(n, 1, 1, 1, **on_x))])
        elif f == "scale":
            lo = 1.0 / param.ratio_scale
            for column in (SX, SY):
                put(column, [v * (param.ratio_scale - lo) + lo for v in draw(lambda: torch.rand(n))])
        elif f == "rotate":
            put(ANGLE, [(v - 0.5) * 2 * param.ratio_rotate / 180 * math.pi for v in draw(lambda: torch.rand(n))])
        else:
            raise KeyError(f)
    return brute(x, torch.tensor(rows, dtype=torch.float64), families)
