"""Triton kernels of one fused DSA pass (semantics and backend contract: reference.py; passes: plan.py).

One program per image (its parameters are scalars there), looping over blocks of BLOCK_P pixels with all
channels of a pixel in one [BLOCK_C, BLOCK_P] tile, fp32 arithmetic (fp16/bf16/fp32 images; fp64 runs
on reference and cpp). The pass's structure is constexpr: COLOR, the index maps IDX0..IDX2 (crop 2,
cutout 3, flip 4, in application order, 0 = none) and the affines AFF0, AFF1 (scale 5, rotate 6).

* forward: for the colour families a per-image-mean pre-loop over the input (the mean after brightness
  and saturation is mean_CHW(x) + brightness), then per output pixel the 4 bilinear taps of the pass's
  affine (align_corners=False, zero padding), each mapped back through the index maps (last first) to
  the input pixel whose colour transform is computed on the fly.
* backward, a deterministic gather (no atomics): for each input pixel, the inverse index maps give its
  tap t; the output pixels whose taps touch t lie within a window around A^-1(t) whose radius follows
  from |A^-1| per image (2 for DC's ranges: 5 x 5 candidates); each candidate recomputes its forward
  sample point and the weight it gives t with the forward's expressions. The colour adjoint needs the
  per-image sum of that gradient, which a first loop computes from the output side (sum over output
  pixels of grad times the total weight of its valid taps), so the main loop writes the final result.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_common import SIGNATURE_TYPES, div_rn
from .plan import split_pass

BLOCK_PIXELS = 256
NUM_WARPS = 4


@triton.jit
def _randint(u, count):
    """DC's randint over ``count`` values from the stored uniform (reference.uniform_to_int)."""
    return tl.minimum(tl.floor(u * count.to(tl.float32)).to(tl.int32), count - 1)


@triton.jit
def _matrix(CODE: tl.constexpr, sx, sy, angle):
    if CODE == 5:
        return sx, sx * 0.0, sx * 0.0, sy
    else:
        c = tl.cos(angle)
        s = tl.sin(angle)
        return c, -s, s, c


@triton.jit
def _image_params(table_ptr, index_ptr, n, row_stride, H, W, crop_h, crop_w, cut_h, cut_w,
                  HAS_INDEX: tl.constexpr, AFF0: tl.constexpr, AFF1: tl.constexpr):
    if HAS_INDEX:
        row = tl.load(index_ptr + n)
    else:
        row = n * row_stride
    base = table_ptr + row * 12
    bright = tl.load(base + 0)
    sat = tl.load(base + 1)
    con = tl.load(base + 2)
    shift_h = _randint(tl.load(base + 3), 2 * crop_h + 1) - crop_h
    shift_w = _randint(tl.load(base + 4), 2 * crop_w + 1) - crop_w
    cut_h0 = _randint(tl.load(base + 5), H + 1 - cut_h % 2) - cut_h // 2
    cut_w0 = _randint(tl.load(base + 6), W + 1 - cut_w % 2) - cut_w // 2
    cut_on = (tl.load(base + 7) > 0.5).to(tl.int32)  # 0/1 (an int: the interpreter cannot AND 0-d bools)
    flip = tl.load(base + 8) > 0.5
    sx = tl.load(base + 9)
    sy = tl.load(base + 10)
    angle = tl.load(base + 11)
    a00, a01, a10, a11 = _matrix(AFF0, sx, sy, angle)
    if AFF1 != 0:
        b00, b01, b10, b11 = _matrix(AFF1, sx, sy, angle)
        a00, a01, a10, a11 = a00 * b00 + a01 * b10, a00 * b01 + a01 * b11, a10 * b00 + a11 * b10, a10 * b01 + a11 * b11
    return bright, sat, con, shift_h, shift_w, cut_h0, cut_w0, cut_on, flip, a00, a01, a10, a11


@triton.jit
def _index_map(OP: tl.constexpr, INVERSE: tl.constexpr, i, j, ok, H, W, shift_h, shift_w, cut_h0, cut_w0, cut_h,
               cut_w, cut_on, flip):
    """One index map on tap coordinates (forward: tap -> its source; INVERSE: source -> tap)."""
    if OP == 2:
        if INVERSE:
            i = i - shift_h
            j = j - shift_w
        else:
            i = i + shift_h
            j = j + shift_w
        ok = ok & (i >= 0) & (i < H) & (j >= 0) & (j < W)
    elif OP == 3:
        inside = (i >= cut_h0) & (i < cut_h0 + cut_h) & (j >= cut_w0) & (j < cut_w0 + cut_w)
        ok = ok & (inside.to(tl.int32) * cut_on == 0)
    elif OP == 4:
        j = tl.where(flip, W - 1 - j, j)
    return i, j, ok


@triton.jit
def _sample_point(i, j, H, W, a00, a01, a10, a11):
    """Input pixel coordinates (ix, iy) that output pixel (i, j) samples (affine_grid + grid_sample,
    align_corners=False)."""
    Wf = W.to(tl.float32)
    Hf = H.to(tl.float32)
    xn = div_rn((2 * j + 1).to(tl.float32), Wf) - 1.0
    yn = div_rn((2 * i + 1).to(tl.float32), Hf) - 1.0
    gx = a00 * xn + a01 * yn
    gy = a10 * xn + a11 * yn
    return ((gx + 1.0) * Wf - 1.0) * 0.5, ((gy + 1.0) * Hf - 1.0) * 0.5


@triton.jit
def _bilinear(i, j, H, W, a00, a01, a10, a11):
    """Top-left tap (y0, x0) of output pixel (i, j) and its bilinear weights wx0, wx1, wy0, wy1."""
    ix, iy = _sample_point(i, j, H, W, a00, a01, a10, a11)
    fx = tl.floor(ix)
    fy = tl.floor(iy)
    wx1 = ix - fx
    wy1 = iy - fy
    return fx.to(tl.int32), fy.to(tl.int32), 1.0 - wx1, wx1, 1.0 - wy1, wy1


@triton.jit
def _tap(img, ti, tj, w, ok, cs, cmask, C, H, W, shift_h, shift_w, cut_h0, cut_w0, cut_h, cut_w, cut_on, flip,
         bright, sat, con, mean_all, COLOR: tl.constexpr, IDX0: tl.constexpr, IDX1: tl.constexpr,
         IDX2: tl.constexpr):
    """w times the colour-transformed input pixel behind tap (ti, tj), all channels: [BLOCK_C, BLOCK_P]."""
    ok = ok & (ti >= 0) & (ti < H) & (tj >= 0) & (tj < W)
    ti, tj, ok = _index_map(IDX2, False, ti, tj, ok, H, W, shift_h, shift_w, cut_h0, cut_w0, cut_h, cut_w, cut_on, flip)
    ti, tj, ok = _index_map(IDX1, False, ti, tj, ok, H, W, shift_h, shift_w, cut_h0, cut_w0, cut_h, cut_w, cut_on, flip)
    ti, tj, ok = _index_map(IDX0, False, ti, tj, ok, H, W, shift_h, shift_w, cut_h0, cut_w0, cut_h, cut_w, cut_on, flip)
    m = cmask & ok[None, :]
    v = tl.load(img + cs * (H * W) + (ti * W + tj)[None, :], mask=m, other=0.0).to(tl.float32)
    if COLOR:
        v = v + bright
        mean_c = div_rn(tl.sum(tl.where(cmask, v, 0.0), axis=0), C.to(tl.float32))[None, :]
        v = ((v - mean_c) * sat + mean_c - mean_all) * con + mean_all
        v = tl.where(m, v, 0.0)
    return v * w[None, :]


@triton.jit
def _tap_weight(ti, tj, w, ok, H, W, shift_h, shift_w, cut_h0, cut_w0, cut_h, cut_w, cut_on, flip,
                IDX0: tl.constexpr, IDX1: tl.constexpr, IDX2: tl.constexpr):
    """w where tap (ti, tj) reads an input pixel, else 0."""
    ok = ok & (ti >= 0) & (ti < H) & (tj >= 0) & (tj < W)
    ti, tj, ok = _index_map(IDX2, False, ti, tj, ok, H, W, shift_h, shift_w, cut_h0, cut_w0, cut_h, cut_w, cut_on, flip)
    ti, tj, ok = _index_map(IDX1, False, ti, tj, ok, H, W, shift_h, shift_w, cut_h0, cut_w0, cut_h, cut_w, cut_on, flip)
    ti, tj, ok = _index_map(IDX0, False, ti, tj, ok, H, W, shift_h, shift_w, cut_h0, cut_w0, cut_h, cut_w, cut_on, flip)
    return tl.where(ok, w, 0.0)


@triton.jit
def pass_forward_kernel(x_ptr, out_ptr, table_ptr, index_ptr, row_stride, C, H, W, crop_h, crop_w, cut_h, cut_w,
                        COLOR: tl.constexpr, IDX0: tl.constexpr, IDX1: tl.constexpr, IDX2: tl.constexpr,
                        AFF0: tl.constexpr, AFF1: tl.constexpr, HAS_INDEX: tl.constexpr, BLOCK_C: tl.constexpr,
                        BLOCK_P: tl.constexpr):
    n = tl.program_id(0)
    (bright, sat, con, shift_h, shift_w, cut_h0, cut_w0, cut_on, flip,
     a00, a01, a10, a11) = _image_params(table_ptr, index_ptr, n, row_stride, H, W, crop_h, crop_w, cut_h, cut_w,
                                         HAS_INDEX, AFF0, AFF1)
    HW = H * W
    img = x_ptr + n.to(tl.int64) * C * HW
    dst = out_ptr + n.to(tl.int64) * C * HW
    cs = tl.arange(0, BLOCK_C)[:, None]
    cmask = cs < C
    mean_all = 0.0
    if COLOR:  # per-image mean after brightness + saturation = mean_CHW(x) + brightness
        total = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
        for start in range(0, HW, BLOCK_P):
            p = start + tl.arange(0, BLOCK_P)[None, :]
            total += tl.load(img + cs * HW + p, mask=cmask & (p < HW), other=0.0).to(tl.float32)
        mean_all = div_rn(tl.sum(tl.sum(total, axis=1), axis=0), (C * HW).to(tl.float32)) + bright
    for start in range(0, HW, BLOCK_P):
        p = start + tl.arange(0, BLOCK_P)
        pmask = p < HW
        i = p // W
        j = p % W
        if AFF0 != 0:
            x0, y0, wx0, wx1, wy0, wy1 = _bilinear(i, j, H, W, a00, a01, a10, a11)
            acc = _tap(img, y0, x0, wy0 * wx0, pmask, cs, cmask, C, H, W, shift_h, shift_w, cut_h0, cut_w0, cut_h,
                       cut_w, cut_on, flip, bright, sat, con, mean_all, COLOR, IDX0, IDX1, IDX2)
            acc += _tap(img, y0, x0 + 1, wy0 * wx1, pmask, cs, cmask, C, H, W, shift_h, shift_w, cut_h0, cut_w0,
                        cut_h, cut_w, cut_on, flip, bright, sat, con, mean_all, COLOR, IDX0, IDX1, IDX2)
            acc += _tap(img, y0 + 1, x0, wy1 * wx0, pmask, cs, cmask, C, H, W, shift_h, shift_w, cut_h0, cut_w0,
                        cut_h, cut_w, cut_on, flip, bright, sat, con, mean_all, COLOR, IDX0, IDX1, IDX2)
            acc += _tap(img, y0 + 1, x0 + 1, wy1 * wx1, pmask, cs, cmask, C, H, W, shift_h, shift_w, cut_h0, cut_w0,
                        cut_h, cut_w, cut_on, flip, bright, sat, con, mean_all, COLOR, IDX0, IDX1, IDX2)
        else:
            acc = _tap(img, i, j, tl.full([BLOCK_P], 1.0, tl.float32), pmask, cs, cmask, C, H, W, shift_h, shift_w,
                       cut_h0, cut_w0, cut_h, cut_w, cut_on, flip, bright, sat, con, mean_all, COLOR, IDX0, IDX1,
                       IDX2)
        tl.store(dst + cs * HW + p[None, :], acc.to(out_ptr.dtype.element_ty), mask=cmask & pmask[None, :])


@triton.jit
def pass_backward_kernel(g_ptr, dx_ptr, table_ptr, index_ptr, row_stride, C, H, W, crop_h, crop_w, cut_h, cut_w,
                         COLOR: tl.constexpr, IDX0: tl.constexpr, IDX1: tl.constexpr, IDX2: tl.constexpr,
                         AFF0: tl.constexpr, AFF1: tl.constexpr, HAS_INDEX: tl.constexpr, BLOCK_C: tl.constexpr,
                         BLOCK_P: tl.constexpr):
    n = tl.program_id(0)
    (bright, sat, con, shift_h, shift_w, cut_h0, cut_w0, cut_on, flip,
     a00, a01, a10, a11) = _image_params(table_ptr, index_ptr, n, row_stride, H, W, crop_h, crop_w, cut_h, cut_w,
                                         HAS_INDEX, AFF0, AFF1)
    HW = H * W
    g = g_ptr + n.to(tl.int64) * C * HW
    dst = dx_ptr + n.to(tl.int64) * C * HW
    cs = tl.arange(0, BLOCK_C)[:, None]
    cmask = cs < C
    Wf = W.to(tl.float32)
    Hf = H.to(tl.float32)
    total = 0.0
    if COLOR:  # sum of the pre-colour gradient = sum_p sum_c g[c, p] * (weight of p's valid taps)
        partial = tl.zeros([BLOCK_P], tl.float32)
        for start in range(0, HW, BLOCK_P):
            p = start + tl.arange(0, BLOCK_P)
            pmask = p < HW
            i = p // W
            j = p % W
            gsum = tl.sum(tl.load(g + cs * HW + p[None, :], mask=cmask & pmask[None, :], other=0.0).to(tl.float32),
                          axis=0)
            if AFF0 != 0:
                x0, y0, wx0, wx1, wy0, wy1 = _bilinear(i, j, H, W, a00, a01, a10, a11)
                wsum = _tap_weight(y0, x0, wy0 * wx0, pmask, H, W, shift_h, shift_w, cut_h0, cut_w0, cut_h, cut_w,
                                   cut_on, flip, IDX0, IDX1, IDX2)
                wsum += _tap_weight(y0, x0 + 1, wy0 * wx1, pmask, H, W, shift_h, shift_w, cut_h0, cut_w0, cut_h,
                                    cut_w, cut_on, flip, IDX0, IDX1, IDX2)
                wsum += _tap_weight(y0 + 1, x0, wy1 * wx0, pmask, H, W, shift_h, shift_w, cut_h0, cut_w0, cut_h,
                                    cut_w, cut_on, flip, IDX0, IDX1, IDX2)
                wsum += _tap_weight(y0 + 1, x0 + 1, wy1 * wx1, pmask, H, W, shift_h, shift_w, cut_h0, cut_w0, cut_h,
                                    cut_w, cut_on, flip, IDX0, IDX1, IDX2)
            else:
                wsum = _tap_weight(i, j, tl.full([BLOCK_P], 1.0, tl.float32), pmask, H, W, shift_h, shift_w, cut_h0,
                                   cut_w0, cut_h, cut_w, cut_on, flip, IDX0, IDX1, IDX2)
            partial += gsum * wsum
        total = tl.sum(partial, axis=0)
    if AFF0 != 0:  # inverse affine (normalized coordinates) and the candidate window radius per axis
        det = a00 * a11 - a01 * a10
        b00 = div_rn(a11, det)
        b01 = div_rn(-a01, det)
        b10 = div_rn(-a10, det)
        b11 = div_rn(a00, det)
        rad_j = tl.floor(tl.abs(b00) + div_rn(tl.abs(b01) * Wf, Hf) + 0.5).to(tl.int32) + 1
        rad_i = tl.floor(div_rn(tl.abs(b10) * Hf, Wf) + tl.abs(b11) + 0.5).to(tl.int32) + 1
    for start in range(0, HW, BLOCK_P):
        s = start + tl.arange(0, BLOCK_P)
        smask = s < HW
        ti = s // W
        tj = s % W
        ok = smask
        ti, tj, ok = _index_map(IDX0, True, ti, tj, ok, H, W, shift_h, shift_w, cut_h0, cut_w0, cut_h, cut_w, cut_on,
                                flip)
        ti, tj, ok = _index_map(IDX1, True, ti, tj, ok, H, W, shift_h, shift_w, cut_h0, cut_w0, cut_h, cut_w, cut_on,
                                flip)
        ti, tj, ok = _index_map(IDX2, True, ti, tj, ok, H, W, shift_h, shift_w, cut_h0, cut_w0, cut_h, cut_w, cut_on,
                                flip)
        if AFF0 != 0:
            tx = div_rn((2 * tj + 1).to(tl.float32), Wf) - 1.0
            ty = div_rn((2 * ti + 1).to(tl.float32), Hf) - 1.0
            cj = ((b00 * tx + b01 * ty + 1.0) * Wf - 1.0) * 0.5
            ci = ((b10 * tx + b11 * ty + 1.0) * Hf - 1.0) * 0.5
            j0 = tl.floor(cj + 0.5).to(tl.int32)
            i0 = tl.floor(ci + 0.5).to(tl.int32)
            acc = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
            for di in range(-rad_i, rad_i + 1):
                for dj in range(-rad_j, rad_j + 1):
                    pi = i0 + di
                    pj = j0 + dj
                    inside = ok & (pi >= 0) & (pi < H) & (pj >= 0) & (pj < W)
                    x0, y0, wx0, wx1, wy0, wy1 = _bilinear(pi, pj, H, W, a00, a01, a10, a11)  # forward's weights
                    wx = tl.where(tj == x0, wx0, tl.where(tj == x0 + 1, wx1, 0.0))
                    wy = tl.where(ti == y0, wy0, tl.where(ti == y0 + 1, wy1, 0.0))
                    w = tl.where(inside, wy * wx, 0.0)
                    m = cmask & (inside & (w != 0.0))[None, :]
                    gv = tl.load(g + cs * HW + (pi * W + pj)[None, :], mask=m, other=0.0).to(tl.float32)
                    acc += gv * w[None, :]
        else:
            acc = tl.load(g + cs * HW + (ti * W + tj)[None, :], mask=cmask & ok[None, :], other=0.0).to(tl.float32)
        if COLOR:
            sum_c = tl.sum(acc, axis=0)[None, :]
            acc = con * sat * acc + div_rn(con * (1.0 - sat) * sum_c, C.to(tl.float32)) + \
                div_rn((1.0 - con) * total, (C * HW).to(tl.float32))
        tl.store(dst + cs * HW + s[None, :], acc.to(dx_ptr.dtype.element_ty), mask=cmask & smask[None, :])


def _constexprs(ops, channels: int, pixels: int, has_index: bool) -> dict:
    colour, index, affine = split_pass(ops)
    index = (*index, 0, 0, 0)
    affine = (*affine, 0, 0)
    return {"COLOR": colour, "IDX0": index[0], "IDX1": index[1], "IDX2": index[2], "AFF0": affine[0],
            "AFF1": affine[1], "HAS_INDEX": has_index, "BLOCK_C": triton.next_power_of_2(channels),
            "BLOCK_P": min(BLOCK_PIXELS, triton.next_power_of_2(pixels))}


def _launch(kernel, src, table, row_index, ops, geometry):
    n, c, h, w = src.shape
    out = torch.empty_like(src)
    if n == 0:
        return out
    stride = 1 if table.shape[0] > 1 else 0
    kernel[(n,)](src, out, table, row_index if row_index is not None else table, stride, c, h, w, *geometry,
                 **_constexprs(ops, c, h * w, row_index is not None), num_warps=NUM_WARPS)
    return out


def forward(x, table, row_index, ops, geometry):
    return _launch(pass_forward_kernel, x, table, row_index, ops, geometry)


def backward(grad, table, row_index, ops, geometry):
    return _launch(pass_backward_kernel, grad, table, row_index, ops, geometry)


# The passes DC's strategies produce most: 'M' mode (two passes), compose=True (one), 'S' mode single families.
AOT_PASSES = {"m_pass1": (1, 2, 3, 4, 5), "m_pass2": (6,), "composed": (1, 2, 3, 4, 5, 6), "color": (1,),
              "crop": (2,)}


def aot_specs():
    """(name, kernel, signature, constexprs) for ahead-of-time compile checks (test tier 6): forward and
    backward of the common passes, for every dtype the kernels serve."""
    specs = []
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        sig = SIGNATURE_TYPES[dtype]
        for label, ops in AOT_PASSES.items():
            for name, kernel, a, b in (("forward", pass_forward_kernel, "x_ptr", "out_ptr"),
                                       ("backward", pass_backward_kernel, "g_ptr", "dx_ptr")):
                signature = {a: f"*{sig}", b: f"*{sig}", "table_ptr": "*fp32", "index_ptr": "*i64",
                             "row_stride": "i32", "C": "i32", "H": "i32", "W": "i32", "crop_h": "i32",
                             "crop_w": "i32", "cut_h": "i32", "cut_w": "i32"}
                specs.append((f"{name}[{sig},{label}]", kernel, signature,
                              _constexprs(ops, 3, 1024, label == "m_pass1")))
    return specs
