"""Triton kernels for MMD (semantics: reference.py).

Rows are grouped by class segment (``x_offsets``/``y_offsets``); work items are (class, row tile)
pairs numbered class-major, found by each program from a per-class table of first tile indices, so
a launch's grid is a bound known without a device sync: cdiv(rows, BLOCK_M) + K programs, the
surplus ones idle. Per forward+backward:

* ``forward`` (launched for the x side and the y side): a program holds one tile of BLOCK_M rows of
  its side and streams the column tiles of the same class: the same side's tiles J >= I (the block is
  symmetric: off-diagonal tiles count twice) and, on the x side only, the y tiles. Each column tile's
  Gram block comes from tl.dot over D chunks (``input_precision="ieee"`` for fp32: no TF32), squared
  distances from ||a||^2 + ||b||^2 - 2<a,b> clamped at 0 (0 on the same-sample diagonal), then the
  kernel summed over bandwidths. The program writes two partial sums (same side, cross).
* ``finalize``: one program per class adds its tiles' partials in a fixed order and applies the
  estimator's weights: deterministic, no atomics.
* ``backward`` (launched per side that needs a gradient): the same walk over column tiles (full
  square for the same side, all tiles of the other side), turning each Gram block into coefficients
  c_ij = scale * f'(d^2) and accumulating grad_A = rowsum(C) A - C B into an fp32 buffer of the
  program's own rows (read-modify-write per D chunk, no other program touches them: deterministic).
  The N x M matrix is never stored; the backward costs N^2 + M^2 + 2NM pair evaluations (the cross
  block is recomputed by the y side) and two tl.dot per column tile and D chunk.

The linear kernel does not go through the tiles: its closed form around the class means
(reference.linear_forward/linear_backward: a handful of torch ops over all classes, O((N + M) D), no
host sync) is both cheaper and free of the cancellation that summing <a, b> over all pairs suffers
when the features share a large mean.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_common import SIGNATURE_TYPES, accumulate_type, div_rn, sqrt_rn
from .reference import (KERNEL_CODES, accumulate_dtype, coefficients, linear_backward, linear_forward,
                        offset_tensors)

BLOCK_M = 64  # rows of the program's own side per tile
BLOCK_N = 64  # rows per streamed column tile (equal to BLOCK_M: the symmetric walk needs it)
BLOCK_D = 32  # feature chunk per tl.dot
BLOCK_K = 128  # classes per step of the class lookup
FINALIZE_BLOCK = 128
NUM_WARPS = 4
GAUSSIAN = tl.constexpr(KERNEL_CODES["gaussian"])


@triton.jit
def _work_item(tiles_ptr, a_off_ptr, b_off_ptr, num_classes, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """This program's class, its first row, its rows (int64) and their mask, this side's row range of the class and the
    other side's, and whether the program has work: surplus programs and classes empty on either side
    get no rows (an empty range)."""
    pid = tl.program_id(0)
    count = 0
    for k0 in range(0, num_classes, BLOCK_K):
        idx = k0 + 1 + tl.arange(0, BLOCK_K)
        first = tl.load(tiles_ptr + idx, mask=idx <= num_classes, other=pid + 1)
        count += tl.sum((first <= pid).to(tl.int32))
    cls = tl.minimum(count, num_classes - 1)
    a_lo = tl.load(a_off_ptr + cls)
    a_hi = tl.load(a_off_ptr + cls + 1)
    b_lo = tl.load(b_off_ptr + cls)
    b_hi = tl.load(b_off_ptr + cls + 1)
    active = (count < num_classes) & (a_hi > a_lo) & (b_hi > b_lo)
    row0 = a_lo + (pid - tl.load(tiles_ptr + cls)) * BLOCK_M
    a_hi = tl.where(active, a_hi, row0)
    rows = row0 + tl.arange(0, BLOCK_M).to(tl.int64)
    return cls, row0, rows, rows < a_hi, a_lo, a_hi, b_lo, b_hi, active


@triton.jit
def _gram(a_ptr, b_ptr, rows, row_mask, cols, col_mask, D, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
          PRECISION: tl.constexpr):
    """<a_i, b_j>, ||a_i||^2 and ||b_j||^2 for a tile, over D in chunks (int64 row offsets)."""
    g = tl.zeros([rows.shape[0], cols.shape[0]], dtype=tl.float32).to(ACC)
    na = tl.zeros([rows.shape[0]], dtype=ACC)
    nb = tl.zeros([cols.shape[0]], dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        dk = d0 + tl.arange(0, BLOCK_D)
        dmask = dk < D
        a = tl.load(a_ptr + rows[:, None] * D + dk[None, :], mask=row_mask[:, None] & dmask[None, :], other=0.0)
        b = tl.load(b_ptr + cols[None, :] * D + dk[:, None], mask=dmask[:, None] & col_mask[None, :], other=0.0)
        g += tl.dot(a, b, input_precision=PRECISION, out_dtype=ACC)
        af = a.to(ACC)
        bf = b.to(ACC)
        na += tl.sum(af * af, axis=1)
        nb += tl.sum(bf * bf, axis=0)
    return g, na, nb


@triton.jit
def _squared_distance(g, na, nb, diag):
    d2 = na[:, None] + nb[None, :] - 2.0 * g
    d2 = tl.where(d2 < 0.0, 0.0, d2)  # clamp at 0; NaN stays NaN
    return tl.where(diag, 0.0, d2)


@triton.jit
def _kernel_sum(d2, coef_ptr, num_coefs, KERNEL: tl.constexpr, SLOPE: tl.constexpr):
    """k = f(d^2), or with SLOPE f'(d^2), summed over bandwidths (gaussian, imq)."""
    v = tl.zeros_like(d2)
    for s in range(0, num_coefs):
        c = tl.load(coef_ptr + s).to(d2.dtype)
        if KERNEL == GAUSSIAN:
            e = tl.exp(-c * d2)
            if SLOPE:
                v -= c * e
            else:
                v += e
        elif SLOPE:
            base = 1.0 + c * d2
            v -= div_rn(0.5 * c * tl.full(d2.shape, 1.0, d2.dtype), base * sqrt_rn(base))
        else:
            v += div_rn(tl.full(d2.shape, 1.0, d2.dtype), sqrt_rn(1.0 + c * d2))
    return v


@triton.jit
def _block_sum(a_ptr, b_ptr, rows, row_mask, col_start, b_hi, b_end, D, coef_ptr, num_coefs, SAME: tl.constexpr,
               KERNEL: tl.constexpr, UNBIASED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
               ACC: tl.constexpr, PRECISION: tl.constexpr):
    """Sum of k over this row tile and the column tiles from col_start to b_end. SAME: the columns are
    the rows' own side from the row tile on (symmetric block: off-diagonal tiles count twice)."""
    total = tl.zeros([BLOCK_M, BLOCK_M], dtype=ACC)
    for col0 in range(col_start, b_end, BLOCK_M):
        cols = col0 + tl.arange(0, BLOCK_M).to(tl.int64)
        col_mask = cols < b_hi
        g, na, nb = _gram(a_ptr, b_ptr, rows, row_mask, cols, col_mask, D, BLOCK_D, ACC, PRECISION)
        diag = (rows[:, None] == cols[None, :]) & SAME
        valid = row_mask[:, None] & col_mask[None, :]
        if UNBIASED and SAME:
            valid = valid & (diag == 0)
        v = tl.where(valid, _kernel_sum(_squared_distance(g, na, nb, diag), coef_ptr, num_coefs, KERNEL, False), 0.0)
        if SAME:
            v = v * tl.where(col0 == col_start, 1.0, 2.0)
        total += v
    return tl.sum(tl.sum(total, axis=1), axis=0)


@triton.jit
def mmd_forward_kernel(a_ptr, b_ptr, a_off_ptr, b_off_ptr, tiles_ptr, coef_ptr, partials_ptr, num_classes,
                       num_coefs, D, CROSS: tl.constexpr, KERNEL: tl.constexpr, UNBIASED: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr,
                       PRECISION: tl.constexpr):
    _, row0, rows, row_mask, a_lo, a_hi, b_lo, b_hi, active = _work_item(tiles_ptr, a_off_ptr, b_off_ptr,
                                                                         num_classes, BLOCK_M, BLOCK_K)
    same = _block_sum(a_ptr, a_ptr, rows, row_mask, row0, a_hi, a_hi, D, coef_ptr, num_coefs, True, KERNEL, UNBIASED,
                      BLOCK_M, BLOCK_D, ACC, PRECISION)
    tl.store(partials_ptr + tl.program_id(0) * 2, same)
    if CROSS:
        cross = _block_sum(a_ptr, b_ptr, rows, row_mask, b_lo, b_hi, tl.where(active, b_hi, b_lo), D, coef_ptr,
                           num_coefs, False, KERNEL, UNBIASED, BLOCK_M, BLOCK_D, ACC, PRECISION)
        tl.store(partials_ptr + tl.program_id(0) * 2 + 1, cross)


@triton.jit
def _tile_sum(partials_ptr, lo, hi, OFFSET: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    acc = tl.zeros([BLOCK], dtype=ACC)
    for t0 in range(lo, hi, BLOCK):
        t = t0 + tl.arange(0, BLOCK)
        acc += tl.load(partials_ptr + t * 2 + OFFSET, mask=t < hi, other=0.0)
    return tl.sum(acc, axis=0)


@triton.jit
def _weights(n, m, UNBIASED: tl.constexpr, ACC: tl.constexpr):
    nf = n.to(ACC)
    mf = m.to(ACC)
    one = tl.full([], 1.0, ACC)
    if UNBIASED:
        wxx = div_rn(one, nf * (nf - 1.0))
        wyy = div_rn(one, mf * (mf - 1.0))
    else:
        wxx = div_rn(one, nf * nf)
        wyy = div_rn(one, mf * mf)
    return wxx, wyy, div_rn(-2.0 * one, nf * mf)


@triton.jit
def mmd_finalize_kernel(px_ptr, py_ptr, x_tiles_ptr, y_tiles_ptr, x_off_ptr, y_off_ptr, out_ptr,
                        UNBIASED: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    cls = tl.program_id(0)
    x_lo = tl.load(x_tiles_ptr + cls)
    x_hi = tl.load(x_tiles_ptr + cls + 1)
    y_lo = tl.load(y_tiles_ptr + cls)
    y_hi = tl.load(y_tiles_ptr + cls + 1)
    sxx = _tile_sum(px_ptr, x_lo, x_hi, 0, BLOCK, ACC)
    sxy = _tile_sum(px_ptr, x_lo, x_hi, 1, BLOCK, ACC)
    syy = _tile_sum(py_ptr, y_lo, y_hi, 0, BLOCK, ACC)
    n = tl.load(x_off_ptr + cls + 1) - tl.load(x_off_ptr + cls)
    m = tl.load(y_off_ptr + cls + 1) - tl.load(y_off_ptr + cls)
    wxx, wyy, wxy = _weights(n, m, UNBIASED, ACC)
    value = tl.where((n > 0) & (m > 0), wxx * sxx + wyy * syy + wxy * sxy, 0.0)
    tl.store(out_ptr + cls, value.to(out_ptr.dtype.element_ty))


@triton.jit
def _accumulate_block(a_ptr, b_ptr, ga_ptr, rows, row_mask, rowsum, b_lo, b_hi, b_end, scale, D, coef_ptr, num_coefs,
                      SAME: tl.constexpr, KERNEL: tl.constexpr, UNBIASED: tl.constexpr, BLOCK_M: tl.constexpr,
                      BLOCK_D: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr):
    """ga[rows] -= C @ B over the column tiles [b_lo, b_end); returns rowsum + rowsum(C)."""
    for col0 in range(b_lo, b_end, BLOCK_M):
        cols = col0 + tl.arange(0, BLOCK_M).to(tl.int64)
        col_mask = cols < b_hi
        valid = row_mask[:, None] & col_mask[None, :]
        diag = (rows[:, None] == cols[None, :]) & SAME
        g, na, nb = _gram(a_ptr, b_ptr, rows, row_mask, cols, col_mask, D, BLOCK_D, ACC, PRECISION)
        slope = _kernel_sum(_squared_distance(g, na, nb, diag), coef_ptr, num_coefs, KERNEL, True)
        # The same-sample diagonal multiplies a_i - a_i = 0: coefficient 0 under both estimators.
        c = tl.where(valid & (diag == 0), scale * slope, 0.0)
        rowsum += tl.sum(c, axis=1)
        for d0 in range(0, D, BLOCK_D):
            dk = d0 + tl.arange(0, BLOCK_D)
            dmask = dk < D
            b = tl.load(b_ptr + cols[:, None] * D + dk[None, :], mask=col_mask[:, None] & dmask[None, :],
                        other=0.0).to(ACC)
            out = ga_ptr + rows[:, None] * D + dk[None, :]
            omask = row_mask[:, None] & dmask[None, :]
            update = tl.dot(c, b, input_precision="ieee", out_dtype=ACC)
            tl.store(out, tl.load(out, mask=omask, other=0.0) - update, mask=omask)
    return rowsum


@triton.jit
def mmd_backward_kernel(a_ptr, b_ptr, a_off_ptr, b_off_ptr, tiles_ptr, coef_ptr, grad_out_ptr, ga_ptr, num_classes,
                        num_coefs, D, SIDE: tl.constexpr, KERNEL: tl.constexpr, UNBIASED: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr,
                        PRECISION: tl.constexpr):
    """Gradient of this side's rows (SIDE 0: a = x, 1: a = y) into the fp32/fp64 buffer ga."""
    cls, _, rows, row_mask, a_lo, a_hi, b_lo, b_hi, active = _work_item(tiles_ptr, a_off_ptr, b_off_ptr,
                                                                        num_classes, BLOCK_M, BLOCK_K)
    go = tl.load(grad_out_ptr + cls).to(ACC)
    if SIDE == 0:
        w_same, w_other, w_cross = _weights(a_hi - a_lo, b_hi - b_lo, UNBIASED, ACC)
    else:
        w_other, w_same, w_cross = _weights(b_hi - b_lo, a_hi - a_lo, UNBIASED, ACC)
    s_same = 4.0 * w_same * go  # c_ij = 4 w f' for the symmetric block, 2 w_xy f' for the cross block
    s_cross = 2.0 * w_cross * go
    rowsum = tl.zeros([BLOCK_M], dtype=ACC)
    a_end = tl.where(active, a_hi, a_lo)
    rowsum = _accumulate_block(a_ptr, a_ptr, ga_ptr, rows, row_mask, rowsum, a_lo, a_hi, a_end, s_same, D, coef_ptr,
                               num_coefs, True, KERNEL, UNBIASED, BLOCK_M, BLOCK_D, ACC, PRECISION)
    b_end = tl.where(active, b_hi, b_lo)
    rowsum = _accumulate_block(a_ptr, b_ptr, ga_ptr, rows, row_mask, rowsum, b_lo, b_hi, b_end, s_cross, D, coef_ptr,
                               num_coefs, False, KERNEL, UNBIASED, BLOCK_M, BLOCK_D, ACC, PRECISION)
    for d0 in range(0, D, BLOCK_D):  # + rowsum(C) * a_i
        dk = d0 + tl.arange(0, BLOCK_D)
        omask = row_mask[:, None] & (dk < D)[None, :]
        a = tl.load(a_ptr + rows[:, None] * D + dk[None, :], mask=omask, other=0.0).to(ACC)
        out = ga_ptr + rows[:, None] * D + dk[None, :]
        tl.store(out, tl.load(out, mask=omask, other=0.0) + rowsum[:, None] * a, mask=omask)


def _precision(dtype: torch.dtype) -> str:
    return "ieee"  # fp32: no TF32; fp16/bf16 products are exact in the fp32 accumulator anyway


def _launch_common(x, y, x_offsets, y_offsets, kernel, sigmas):
    xo, yo = offset_tensors(x, y, x_offsets, y_offsets)
    num_classes = xo.numel() - 1
    coefs = torch.tensor(coefficients(kernel, sigmas) or [0.0], dtype=accumulate_dtype(x.dtype), device=x.device)
    x_first, y_first = _first_tiles(xo), _first_tiles(yo)
    grids = (triton.cdiv(x.shape[0], BLOCK_M) + num_classes, triton.cdiv(y.shape[0], BLOCK_M) + num_classes)
    return xo, yo, num_classes, coefs, x_first, y_first, grids


def _first_tiles(offsets: torch.Tensor) -> torch.Tensor:
    """First tile index of every class on one side, then the total ([K + 1], on the device)."""
    counts = offsets[1:] - offsets[:-1]
    first = torch.zeros_like(offsets)
    first[1:] = torch.cumsum(torch.div(counts + BLOCK_M - 1, BLOCK_M, rounding_mode="floor"), 0)
    return first


def forward(x, y, x_offsets, y_offsets, kernel: str, sigmas, estimator: str):
    """MMD^2 per class ([K]; 0-d when the offsets are None); same contract as reference.forward."""
    if kernel == "linear":
        out = linear_forward(x.to(accumulate_dtype(x.dtype)), y.to(accumulate_dtype(y.dtype)),
                             *offset_tensors(x, y, x_offsets, y_offsets), estimator == "unbiased")
        return out.reshape(()) if x_offsets is None else out
    assert BLOCK_N == BLOCK_M, "the symmetric walk needs square tiles"
    xo, yo, num_classes, coefs, x_first, y_first, (grid_x, grid_y) = _launch_common(x, y, x_offsets, y_offsets,
                                                                                     kernel, sigmas)
    acc = accumulate_type(x.dtype)
    acc_torch = accumulate_dtype(x.dtype)
    px = torch.empty(grid_x * 2, dtype=acc_torch, device=x.device)
    py = torch.empty(grid_y * 2, dtype=acc_torch, device=x.device)
    common = dict(KERNEL=KERNEL_CODES[kernel], UNBIASED=estimator == "unbiased", BLOCK_M=BLOCK_M, BLOCK_D=BLOCK_D,
                  BLOCK_K=BLOCK_K, ACC=acc, PRECISION=_precision(x.dtype), num_warps=NUM_WARPS)
    mmd_forward_kernel[(grid_x,)](x, y, xo, yo, x_first, coefs, px, num_classes, len(sigmas), x.shape[1], CROSS=True,
                                  **common)
    mmd_forward_kernel[(grid_y,)](y, x, yo, xo, y_first, coefs, py, num_classes, len(sigmas), x.shape[1], CROSS=False,
                                  **common)
    out = torch.empty(num_classes, dtype=acc_torch, device=x.device)
    mmd_finalize_kernel[(num_classes,)](px, py, x_first, y_first, xo, yo, out, UNBIASED=estimator == "unbiased",
                                        BLOCK=FINALIZE_BLOCK, ACC=acc, num_warps=NUM_WARPS)
    return out.reshape(()) if x_offsets is None else out


def backward(grad_out, x, y, x_offsets, y_offsets, kernel: str, sigmas, estimator: str, need_x: bool,
             need_y: bool):
    """(dL/dx, dL/dy) in the inputs' dtype; an empty tensor where not needed."""
    if kernel == "linear":
        acc = accumulate_dtype(x.dtype)
        gx, gy = linear_backward(grad_out.reshape(-1).to(acc), x.to(acc), y.to(acc),
                                 *offset_tensors(x, y, x_offsets, y_offsets), estimator == "unbiased")
        return (gx.to(x.dtype) if need_x else x.new_empty(0)), (gy.to(y.dtype) if need_y else y.new_empty(0))
    xo, yo, num_classes, coefs, x_first, y_first, (grid_x, grid_y) = _launch_common(x, y, x_offsets, y_offsets,
                                                                                     kernel, sigmas)
    acc_torch = accumulate_dtype(x.dtype)
    go = grad_out.reshape(-1).to(acc_torch).contiguous()
    common = dict(KERNEL=KERNEL_CODES[kernel], UNBIASED=estimator == "unbiased", BLOCK_M=BLOCK_M, BLOCK_D=BLOCK_D,
                  BLOCK_K=BLOCK_K, ACC=accumulate_type(x.dtype), PRECISION=_precision(x.dtype), num_warps=NUM_WARPS)
    grads = []
    for side, (a, b, ao, bo, first, grid, need) in enumerate(((x, y, xo, yo, x_first, grid_x, need_x),
                                                              (y, x, yo, xo, y_first, grid_y, need_y))):
        if not need:
            grads.append(a.new_empty(0))
            continue
        ga = torch.zeros(a.shape, dtype=acc_torch, device=a.device)
        mmd_backward_kernel[(grid,)](a, b, ao, bo, first, coefs, go, ga, num_classes, len(sigmas), a.shape[1],
                                     SIDE=side, **common)
        grads.append(ga.to(a.dtype))
    return grads[0], grads[1]


def aot_specs():
    """(name, kernel, signature, constexprs) for ahead-of-time compile checks (test tier 6).

    Every kernel in every dtype the backend serves (fp16, bf16, fp32: the tl.dot type combinations),
    with the gaussian kernel; in fp32 also the imq branch, the other side and the unbiased masks (11
    compiles per architecture: the tier has a time budget, and the estimator and side only change masks
    and constants). The linear kernel has no Triton code (closed form in torch ops)."""
    rows = {"a_ptr": None, "b_ptr": None, "a_off_ptr": "*i64", "b_off_ptr": "*i64", "tiles_ptr": "*i64",
            "coef_ptr": "*fp32"}
    variants = [(dtype, "gaussian", False, 0) for dtype in (torch.float16, torch.bfloat16, torch.float32)]
    variants += [(torch.float32, "imq", True, 1), (torch.float32, "imq", False, 0)]
    specs = []
    for dtype, kernel, unbiased, side in variants:
        sig = SIGNATURE_TYPES[dtype]
        tag = f"{sig},{kernel},{'unbiased' if unbiased else 'biased'}"
        base = {"KERNEL": KERNEL_CODES[kernel], "UNBIASED": unbiased, "BLOCK_M": BLOCK_M, "BLOCK_D": BLOCK_D,
                "BLOCK_K": BLOCK_K, "ACC": tl.float32, "PRECISION": _precision(dtype)}
        args = {**rows, "a_ptr": f"*{sig}", "b_ptr": f"*{sig}"}
        scalars = {"num_classes": "i32", "num_coefs": "i32", "D": "i32"}
        specs.append((f"forward[{tag},cross={side == 0}]", mmd_forward_kernel,
                      {**args, "partials_ptr": "*fp32", **scalars}, {**base, "CROSS": side == 0}))
        specs.append((f"backward[{tag},side={side}]", mmd_backward_kernel,
                      {**args, "grad_out_ptr": "*fp32", "ga_ptr": "*fp32", **scalars}, {**base, "SIDE": side}))
    specs.append(("finalize[fp32,unbiased]", mmd_finalize_kernel,
                  {"px_ptr": "*fp32", "py_ptr": "*fp32", "x_tiles_ptr": "*i64", "y_tiles_ptr": "*i64",
                   "x_off_ptr": "*i64", "y_off_ptr": "*i64", "out_ptr": "*fp32"},
                  {"UNBIASED": True, "BLOCK": FINALIZE_BLOCK, "ACC": tl.float32}))
    return specs
