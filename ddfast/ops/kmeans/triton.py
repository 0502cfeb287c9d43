"""Triton kernels of the k-means steps (semantics and backend contract: reference.py).

Rows arrive grouped by class (``offsets`` [K + 1]); every kernel handles all classes in one launch.

* ``assign``: work items are (class, tile of BLOCK_R rows) numbered class-major; each program finds
  its class from a per-class table of first tile indices (computed with torch ops, no host sync), so
  the grid is the bound cdiv(N, BLOCK_R) + K and surplus programs idle. A program streams its class's
  centroids in tiles of BLOCK_C: the [BLOCK_R, BLOCK_C] block of <x, c> is tl.dot over feature chunks
  (rows converted to fp32, ``input_precision="ieee"``: no TF32), scores ||c||^2 - 2<x, c> feed a
  running (minimum, first index) per row. No N x k matrix is stored. The chosen centroid's distance
  is then computed directly, ||x - c||^2 (one more pass over the program's rows).
* ``update``: rows are sorted once per call by (class, cluster) with a stable torch.sort and the
  cluster offsets found by searchsorted; one program per (cluster, block of feature columns) sums
  its cluster's rows in a fixed order (gathered through the sorted order) and writes the mean, or the
  previous centroid for an empty cluster. Deterministic, no atomics.
* ``nearest``: one program per (class, tile of BLOCK_C centroids) streams its class's rows in tiles,
  keeping a running (minimum, lowest row) per centroid; ``excluded`` rows are skipped; the chosen
  row's distance is computed directly.

Rows are fp16, bf16 or fp32; products, sums and centroids are fp32 (fp64 runs on reference and cpp).
NaN counts as the minimum (torch.argmin's rule): the selection key maps NaN to -inf; the distance
computed directly from the chosen pair carries the NaN.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_common import SIGNATURE_TYPES, div_rn

BLOCK_R = 64  # rows per tile
BLOCK_C = 32  # centroids per tile
BLOCK_D = 32  # feature chunk per tl.dot
BLOCK_K = 128  # classes per step of the class lookup
UPDATE_ROWS = 32
UPDATE_COLS = 128
NUM_WARPS = 4
BIG = tl.constexpr(2**62)


@triton.jit
def _class_of_tile(tiles_ptr, num_classes, BLOCK_K: tl.constexpr):
    """The class of this program's row tile (num_classes for a surplus program)."""
    pid = tl.program_id(0)
    count = 0
    for k0 in range(0, num_classes, BLOCK_K):
        idx = k0 + 1 + tl.arange(0, BLOCK_K)
        first = tl.load(tiles_ptr + idx, mask=idx <= num_classes, other=pid + 1)
        count += tl.sum((first <= pid).to(tl.int32))
    return count


@triton.jit
def _dot_tile(x_ptr, c_ptr, rows, row_mask, cents, cent_mask, D, BLOCK_D: tl.constexpr, NORMS: tl.constexpr):
    """<x_i, c_j> for a [rows, cents] tile and (NORMS) ||x_i||^2, in fp32 (int64 row offsets)."""
    g = tl.zeros([rows.shape[0], cents.shape[0]], dtype=tl.float32)
    xn = tl.zeros([rows.shape[0]], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dk = d0 + tl.arange(0, BLOCK_D)
        dmask = dk < D
        a = tl.load(x_ptr + rows[:, None] * D + dk[None, :], mask=row_mask[:, None] & dmask[None, :],
                    other=0.0).to(tl.float32)
        b = tl.load(c_ptr + cents[None, :] * D + dk[:, None], mask=dmask[:, None] & cent_mask[None, :], other=0.0)
        g += tl.dot(a, b, input_precision="ieee")
        if NORMS:
            xn += tl.sum(a * a, axis=1)
    return g, xn


@triton.jit
def _direct_distance(x_ptr, c_ptr, rows, cents, mask, D, BLOCK_D: tl.constexpr):
    """||x_rows[i] - c_cents[i]||^2 in fp32 for pairs (rows[i], cents[i]) (int64 offsets)."""
    acc = tl.zeros([rows.shape[0]], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dk = d0 + tl.arange(0, BLOCK_D)
        m = mask[:, None] & (dk < D)[None, :]
        a = tl.load(x_ptr + rows[:, None] * D + dk[None, :], mask=m, other=0.0).to(tl.float32)
        b = tl.load(c_ptr + cents[:, None] * D + dk[None, :], mask=m, other=0.0)
        diff = a - b
        acc += tl.sum(diff * diff, axis=1)
    return acc


@triton.jit
def _select_key(s):
    """Selection key of a score: NaN counts as the minimum."""
    return tl.where(s != s, float("-inf"), s)


@triton.jit
def assign_kernel(x_ptr, c_ptr, cn_ptr, off_ptr, tiles_ptr, assign_ptr, dist_ptr, num_classes, k, D,
                  BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr,
                  WITH_DISTANCE: tl.constexpr):
    cls = _class_of_tile(tiles_ptr, num_classes, BLOCK_K)
    active = cls < num_classes
    cls = tl.minimum(cls, num_classes - 1)
    lo = tl.load(off_ptr + cls)
    hi = tl.where(active, tl.load(off_ptr + cls + 1), lo)
    rows = lo + (tl.program_id(0) - tl.load(tiles_ptr + cls)) * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    row_mask = rows < hi
    best_key = tl.full([BLOCK_R], float("inf"), tl.float32)
    best_idx = tl.zeros([BLOCK_R], dtype=tl.int64)
    for t0 in range(0, k, BLOCK_C):
        cols = t0 + tl.arange(0, BLOCK_C)
        col_mask = cols < k
        cents = cls.to(tl.int64) * k + cols
        g, _ = _dot_tile(x_ptr, c_ptr, rows, row_mask, cents, col_mask, D, BLOCK_D, False)
        cn = tl.load(cn_ptr + cents, mask=col_mask, other=0.0)
        s = cn[None, :] - 2.0 * g
        key = tl.where(col_mask[None, :], _select_key(s), float("inf"))
        m = tl.min(key, axis=1)
        j = tl.min(tl.where(col_mask[None, :] & (key == m[:, None]), cols[None, :], BLOCK_C + k), axis=1)
        take = (m < best_key) | (t0 == 0)  # strict: earlier tiles (lower indices) win ties
        best_key = tl.where(take, m, best_key)
        best_idx = tl.where(take, j.to(tl.int64), best_idx)
    tl.store(assign_ptr + rows, best_idx, mask=row_mask)
    if WITH_DISTANCE:
        d = _direct_distance(x_ptr, c_ptr, rows, cls.to(tl.int64) * k + best_idx, row_mask, D, BLOCK_D)
        tl.store(dist_ptr + rows, d, mask=row_mask)


@triton.jit
def update_kernel(x_ptr, order_ptr, seg_ptr, prev_ptr, out_ptr, counts_ptr, D, BLOCK_ROWS: tl.constexpr,
                  BLOCK_COLS: tl.constexpr):
    cluster = tl.program_id(0)
    col_block = tl.program_id(1)
    lo = tl.load(seg_ptr + cluster)
    count = tl.load(seg_ptr + cluster + 1) - lo
    cols = col_block * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    col_mask = cols < D
    acc = tl.zeros([BLOCK_ROWS, BLOCK_COLS], dtype=tl.float32)
    lanes = tl.arange(0, BLOCK_ROWS)
    for first in range(0, count, BLOCK_ROWS):
        row_mask = first + lanes < count
        rows = tl.load(order_ptr + lo + first + lanes, mask=row_mask, other=0)
        acc += tl.load(x_ptr + rows[:, None] * D + cols[None, :], mask=row_mask[:, None] & col_mask[None, :],
                       other=0.0).to(tl.float32)
    total = tl.sum(acc, axis=0)
    prev = tl.load(prev_ptr + cluster.to(tl.int64) * D + cols, mask=col_mask, other=0.0)
    n = tl.maximum(count, 1).to(tl.float32)
    mean = tl.where(count > 0, div_rn(total, tl.full([BLOCK_COLS], 1.0, tl.float32) * n), prev)
    tl.store(out_ptr + cluster.to(tl.int64) * D + cols, mean, mask=col_mask)
    if col_block == 0:
        tl.store(counts_ptr + cluster, count.to(tl.int64))


@triton.jit
def nearest_kernel(x_ptr, c_ptr, off_ptr, excl_ptr, index_ptr, dist_ptr, k, D, HAS_EXCL: tl.constexpr,
                   BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr):
    cls = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_mask = cols < k
    cents = cls.to(tl.int64) * k + cols
    lo = tl.load(off_ptr + cls)
    hi = tl.load(off_ptr + cls + 1)
    best_key = tl.full([BLOCK_C], float("inf"), tl.float32)
    best_idx = tl.full([BLOCK_C], -1, tl.int64)
    for r0 in range(lo, hi, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R).to(tl.int64)
        row_mask = rows < hi
        g, xn = _dot_tile(x_ptr, c_ptr, rows, row_mask, cents, col_mask, D, BLOCK_D, True)
        eligible = row_mask
        if HAS_EXCL:
            eligible = eligible & (tl.load(excl_ptr + rows, mask=row_mask, other=1) == 0)
        t = xn[:, None] - 2.0 * g
        key = _select_key(t)
        ok = eligible[:, None] & col_mask[None, :]
        m = tl.min(tl.where(ok, key, float("inf")), axis=0)
        i = tl.min(tl.where(ok & (key == m[None, :]), rows[:, None], BIG), axis=0)
        take = (i < BIG) & ((best_idx < 0) | (m < best_key))  # strict: earlier rows win ties
        best_key = tl.where(take, m, best_key)
        best_idx = tl.where(take, i, best_idx)
    found = best_idx >= 0
    d = _direct_distance(x_ptr, c_ptr, tl.where(found, best_idx, 0), cents, col_mask & found, D, BLOCK_D)
    d = tl.where(found, d, float("inf"))
    tl.store(index_ptr + cents, best_idx, mask=col_mask)
    tl.store(dist_ptr + cents, d, mask=col_mask)


def _first_tiles(offsets: torch.Tensor) -> torch.Tensor:
    """First row-tile index of every class, then the total ([K + 1], on the device)."""
    counts = offsets[1:] - offsets[:-1]
    first = torch.zeros_like(offsets)
    first[1:] = torch.cumsum(torch.div(counts + BLOCK_R - 1, BLOCK_R, rounding_mode="floor"), 0)
    return first


def _norms(centroids: torch.Tensor) -> torch.Tensor:
    return centroids.square().sum(-1).contiguous()


def assign(x, centroids, offsets, with_distance):
    num_classes, k, dim = centroids.shape
    n = x.shape[0]
    assignment = torch.zeros(n, dtype=torch.int64, device=x.device)
    distance = torch.zeros(n if with_distance else 0, dtype=torch.float32, device=x.device)
    if n and k:
        grid = (triton.cdiv(n, BLOCK_R) + num_classes,)
        assign_kernel[grid](x, centroids, _norms(centroids), offsets, _first_tiles(offsets), assignment, distance,
                            num_classes, k, dim, BLOCK_R=BLOCK_R, BLOCK_C=BLOCK_C, BLOCK_D=BLOCK_D, BLOCK_K=BLOCK_K,
                            WITH_DISTANCE=with_distance, num_warps=NUM_WARPS)
    return assignment, distance


def update(x, assignment, offsets, centroids):
    num_classes, k, dim = centroids.shape
    n = x.shape[0]
    clusters = num_classes * k
    row_class = torch.repeat_interleave(torch.arange(num_classes, device=x.device), offsets[1:] - offsets[:-1],
                                        output_size=n)
    # Assignments outside [0, k) (only possible in a direct call) get the key K * k: sorted past every cluster.
    valid = (assignment >= 0) & (assignment < k)
    keys = torch.where(valid, row_class * k + assignment, clusters)
    sorted_keys, order = torch.sort(keys, stable=True)
    seg = torch.searchsorted(sorted_keys, torch.arange(clusters + 1, device=x.device))
    out = torch.empty_like(centroids)
    counts = torch.empty(num_classes, k, dtype=torch.int64, device=x.device)
    if clusters and dim:
        update_kernel[(clusters, triton.cdiv(dim, UPDATE_COLS))](
            x, order, seg, centroids, out, counts, dim, BLOCK_ROWS=UPDATE_ROWS, BLOCK_COLS=UPDATE_COLS,
            num_warps=NUM_WARPS)
    elif clusters:
        counts.copy_((seg[1:] - seg[:-1]).reshape(num_classes, k))
    return out, counts


def nearest(x, centroids, offsets, excluded):
    num_classes, k, dim = centroids.shape
    index = torch.full((num_classes, k), -1, dtype=torch.int64, device=x.device)
    distance = torch.full((num_classes, k), float("inf"), dtype=torch.float32, device=x.device)
    if num_classes and k:
        has_excl = excluded.numel() > 0
        nearest_kernel[(num_classes, triton.cdiv(k, BLOCK_C))](
            x, centroids, offsets, excluded.view(torch.uint8) if has_excl else index, index,
            distance, k, dim, HAS_EXCL=has_excl, BLOCK_R=BLOCK_R, BLOCK_C=BLOCK_C, BLOCK_D=BLOCK_D,
            num_warps=NUM_WARPS)
    return index, distance


def aot_specs():
    """(name, kernel, signature, constexprs) for ahead-of-time compile checks (test tier 6), for every
    row dtype the kernels serve."""
    specs = []
    tiles = {"BLOCK_R": BLOCK_R, "BLOCK_C": BLOCK_C, "BLOCK_D": BLOCK_D}
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        sig = SIGNATURE_TYPES[dtype]
        for with_distance in (False, True):
            specs.append((f"assign[{sig},distance={with_distance}]", assign_kernel,
                          {"x_ptr": f"*{sig}", "c_ptr": "*fp32", "cn_ptr": "*fp32", "off_ptr": "*i64",
                           "tiles_ptr": "*i64", "assign_ptr": "*i64", "dist_ptr": "*fp32", "num_classes": "i32",
                           "k": "i32", "D": "i32"}, {**tiles, "BLOCK_K": BLOCK_K, "WITH_DISTANCE": with_distance}))
        specs.append((f"update[{sig}]", update_kernel,
                      {"x_ptr": f"*{sig}", "order_ptr": "*i64", "seg_ptr": "*i64", "prev_ptr": "*fp32",
                       "out_ptr": "*fp32", "counts_ptr": "*i64", "D": "i32"},
                      {"BLOCK_ROWS": UPDATE_ROWS, "BLOCK_COLS": UPDATE_COLS}))
        for has_excl in (False, True):
            specs.append((f"nearest[{sig},excluded={has_excl}]", nearest_kernel,
                          {"x_ptr": f"*{sig}", "c_ptr": "*fp32", "off_ptr": "*i64", "excl_ptr": "*u8",
                           "index_ptr": "*i64", "dist_ptr": "*fp32", "k": "i32", "D": "i32"},
                          {**tiles, "HAS_EXCL": has_excl}))
    return specs
