"""The readable specification of DSA: one function per family, computed as DC's DiffAugment computes it
(VICO-UoE/DatasetCondensation, utils.py: rand_brightness, rand_saturation, rand_contrast, rand_crop,
rand_cutout, rand_flip, rand_scale, rand_rotate) but from explicit per-image parameters, and the
backend contract of one fused pass (plan.py) with its closed-form backward.

Backend contract (reference, cpp, triton):
    forward(x, table, row_index, ops, geometry) -> out
    backward(grad, table, row_index, ops, geometry) -> grad_x
x / grad: [N, C, H, W]; table: float32 [rows, 12] (params.py); row_index: int64 [N] or None (then row n
when the table has N > 1 rows, else row 0); ops: one pass's op codes (plan.py); geometry: DC's integer
sizes [crop shift H, crop shift W, cutout H, cutout W]. DSA is affine in the images (linear plus the
brightness shift), so the backward needs no saved activations. Arithmetic in the accumulate dtype
(float32 for fp16/bf16/fp32 inputs, float64 for fp64); the output in the input dtype.

Geometric families use ``F.affine_grid`` + ``F.grid_sample`` with DC's settings: bilinear, zero padding,
align_corners=False (DC calls both with torch's defaults, which are align_corners=False since torch 1.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._dtypes import accumulate_dtype
from . import params as P
from .plan import COLOR, CROP, CUTOUT, FLIP, ROTATE, SCALE, split_pass


def image_rows(table: torch.Tensor, row_index: torch.Tensor | None, n: int) -> torch.Tensor:
    """The parameter row of every image: [N, 12]."""
    if row_index is not None:
        return table[row_index]
    return table if table.shape[0] == n and n > 1 else table[:1].expand(n, -1)


def _view(v: torch.Tensor, dtype) -> torch.Tensor:
    return v.to(dtype).view(-1, 1, 1, 1)


def uniform_to_int(u: torch.Tensor, count: int) -> torch.Tensor:
    """DC's torch.randint over ``count`` values, from the stored uniform u in [0, 1): min(floor(u * count),
    count - 1), in float32 arithmetic (every backend computes it the same way)."""
    return torch.clamp(torch.floor(u * float(count)), max=count - 1).long()


def crop_shifts(rows: torch.Tensor, geometry) -> tuple[torch.Tensor, torch.Tensor]:
    sh, sw = geometry[0], geometry[1]
    return uniform_to_int(rows[:, P.CROP_H], 2 * sh + 1) - sh, uniform_to_int(rows[:, P.CROP_W], 2 * sw + 1) - sw


def cutout_starts(rows: torch.Tensor, height: int, width: int, geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """First zeroed row and column: DC's offset (uniform over [0, size - size_cut % 2]) - size_cut // 2."""
    ch, cw = geometry[2], geometry[3]
    oh = uniform_to_int(rows[:, P.CUT_H], height + 1 - ch % 2)
    ow = uniform_to_int(rows[:, P.CUT_W], width + 1 - cw % 2)
    return oh - ch // 2, ow - cw // 2


# --- the families, as DC computes them, given per-image parameters ------------------------------------------

def brightness(x, shift):
    return x + _view(shift, x.dtype)


def saturation(x, factor):
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _view(factor, x.dtype) + mean


def contrast(x, factor):
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * _view(factor, x.dtype) + mean


def crop(x, shift_h, shift_w):
    """DC's rand_crop: out[i, j] = x[i + shift_h, j + shift_w], zero outside (pad by one, clamp, gather)."""
    n, _, h, w = x.shape
    rows = torch.clamp(torch.arange(h, device=x.device).view(1, h, 1) + shift_h.view(n, 1, 1) + 1, 0, h + 1)
    cols = torch.clamp(torch.arange(w, device=x.device).view(1, 1, w) + shift_w.view(n, 1, 1) + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def cutout_mask(n, h, w, start_h, start_w, size_h, size_w, on, dtype, device):
    """1 outside the cutout square [start, start + size) (clipped to the image), 0 inside; rows with on=0
    keep everything."""
    i = torch.arange(h, device=device).view(1, h, 1)
    j = torch.arange(w, device=device).view(1, 1, w)
    sh, sw = start_h.view(n, 1, 1), start_w.view(n, 1, 1)
    inside = (i >= sh) & (i < sh + size_h) & (j >= sw) & (j < sw + size_w) & (on.view(n, 1, 1) > 0.5)
    return (~inside).to(dtype).unsqueeze(1)


def flip(x, flag):
    return torch.where(flag.view(-1, 1, 1, 1) > 0.5, x.flip(3), x)


def scale_theta(sx, sy, dtype):
    zero = torch.zeros_like(sx, dtype=dtype)
    return torch.stack([torch.stack([sx.to(dtype), zero, zero], 1), torch.stack([zero, sy.to(dtype), zero], 1)], 1)


def rotate_theta(angle, dtype):
    a = angle.to(dtype)
    c, s, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    return torch.stack([torch.stack([c, -s, zero], 1), torch.stack([s, c, zero], 1)], 1)


def compose_thetas(thetas):
    """One [N, 2, 3] affine for several applied in order: sampling points are A1 A2 ... p."""
    lin = thetas[0][:, :, :2]
    for t in thetas[1:]:
        lin = lin @ t[:, :, :2]
    return torch.cat([lin, torch.zeros_like(lin[:, :, :1])], dim=2)


def affine_sample(x, theta):
    """DC's rand_scale / rand_rotate sampling: affine_grid + bilinear grid_sample, zero padding,
    align_corners=False."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _affine_grad(grad, theta):
    """Closed-form adjoint of affine_sample w.r.t. its image (bilinear weights are fixed by theta)."""
    grid = F.affine_grid(theta, list(grad.shape), align_corners=False)
    # interpolation 0 = bilinear, padding 0 = zeros; the image argument only sets the shape.
    return torch.ops.aten.grid_sampler_2d_backward(grad, grad, grid, 0, 0, False, [True, False])[0]


# --- one pass ------------------------------------------------------------------------------------------------

def _prepare(t, table, row_index, ops, geometry):
    colour, index, affine = split_pass(ops)
    n, _, h, w = t.shape
    rows = image_rows(table, row_index, n)
    acc = accumulate_dtype(t.dtype)
    thetas = [scale_theta(rows[:, P.SCALE_X], rows[:, P.SCALE_Y], acc) if a == SCALE else rotate_theta(rows[:, P.ANGLE], acc)
              for a in affine]
    theta = compose_thetas(thetas) if thetas else None
    return colour, index, theta, rows, acc


def _index_map(x, code, rows, geometry):
    n, _, h, w = x.shape
    if code == CROP:
        return crop(x, *crop_shifts(rows, geometry))
    if code == CUTOUT:
        sh, sw = cutout_starts(rows, h, w, geometry)
        return x * cutout_mask(n, h, w, sh, sw, geometry[2], geometry[3], rows[:, P.CUT_ON], x.dtype, x.device)
    return flip(x, rows[:, P.FLIP])


def _index_map_grad(g, code, rows, geometry):
    """Adjoint of one index map: crop by the opposite shift (zero fill), the same mask, the same flip."""
    n, _, h, w = g.shape
    if code == CROP:
        dh, dw = crop_shifts(rows, geometry)
        return crop(g, -dh, -dw)
    return _index_map(g, code, rows, geometry)


def forward(x, table, row_index, ops, geometry):
    colour, index, theta, rows, acc = _prepare(x, table, row_index, ops, geometry)
    y = x.to(acc)
    if colour:
        y = contrast(saturation(brightness(y, rows[:, P.BRIGHTNESS]), rows[:, P.SATURATION]), rows[:, P.CONTRAST])
    for code in index:
        y = _index_map(y, code, rows, geometry)
    if theta is not None:
        y = affine_sample(y, theta)
    return y.to(x.dtype)


def backward(grad, table, row_index, ops, geometry):
    colour, index, theta, rows, acc = _prepare(grad, table, row_index, ops, geometry)
    g = grad.to(acc)
    if theta is not None:
        g = _affine_grad(g, theta)
    for code in reversed(index):
        g = _index_map_grad(g, code, rows, geometry)
    if colour:
        # contrast: x3 = c x2 + (1 - c) mean_CHW(x2); saturation: x2 = s x1 + (1 - s) mean_C(x1); x1 = x + b.
        c, s = _view(rows[:, P.CONTRAST], acc), _view(rows[:, P.SATURATION], acc)
        g = c * g + (1 - c) * g.mean(dim=[1, 2, 3], keepdim=True)
        g = s * g + (1 - s) * g.mean(dim=1, keepdim=True)
    return g.to(grad.dtype)
