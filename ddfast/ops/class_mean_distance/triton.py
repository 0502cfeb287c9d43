"""Triton kernels for class_mean_distance (semantics and backend contract: reference.py).

Rows are grouped by class once with torch ops (labels of both sides in one stable sort, class
offsets by searchsorted; no host synchronisation), then three launches per forward+backward,
whatever the number of classes:

* ``class_sums``: one program per (class, block of feature columns) sums the class's synthetic and
  real rows (gathered through the sorted order, each row segment contiguous), writes the mean
  difference for its columns and the partial squared norm. Every element is summed in a fixed row
  order: deterministic, no atomics.
* ``finalize``: one program reduces the partial norms per class, in class order, to the [K] losses
  or their sum.
* ``rows_backward``: one program per (block of rows of one side, block of columns) writes
  ``sign * 2 * g_c * scale_c * diff_c`` for each row; both sides in the same launch.

Features are fp16, bf16 or fp32; sums and the distance are fp32 (fp64 runs on reference and cpp).

Loads are coalesced but scalar: gathered rows did not compile to 16-byte vector loads in Triton 3.8
(int64 indices or a masked index load defeat it; docs/DESIGN.md). At DM sizes (2,560 x 2,048 fp32,
21 MB) the op is launch-bound on a GPU, not bandwidth-bound.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_common import SIGNATURE_TYPES

BLOCK_ROWS = 32
BLOCK_COLS = 128
FINALIZE_CLASSES = 64
FINALIZE_COLS = 32
NUM_WARPS = 4


@triton.jit
def _segment_sum(f_ptr, order_ptr, lo, count, row_base, cols, col_mask, dim, BLOCK_ROWS: tl.constexpr):
    """Sum over the rows order[lo : lo + count] (minus row_base) of f[row, cols], in fp32."""
    acc = tl.zeros([BLOCK_ROWS, cols.shape[0]], dtype=tl.float32)
    lanes = tl.arange(0, BLOCK_ROWS)
    for first in range(0, count, BLOCK_ROWS):
        row_mask = first + lanes < count
        rows = tl.load(order_ptr + lo + first + lanes, mask=row_mask, other=row_base) - row_base
        ptrs = f_ptr + rows[:, None].to(tl.int64) * dim + cols[None, :]
        acc += tl.load(ptrs, mask=row_mask[:, None] & col_mask[None, :], other=0.0).to(tl.float32)
    return tl.sum(acc, axis=0)


@triton.jit
def class_sums_kernel(f_syn_ptr, f_real_ptr, order_ptr, ptr_ptr, diff_ptr, scale_ptr, partial_ptr, num_syn_rows,
                      num_classes, dim, num_col_blocks, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    klass = tl.program_id(0)
    col_block = tl.program_id(1)
    syn_lo = tl.load(ptr_ptr + klass)
    num_syn = tl.load(ptr_ptr + klass + 1) - syn_lo
    real_lo = tl.load(ptr_ptr + num_classes + klass)
    num_real = tl.load(ptr_ptr + num_classes + klass + 1) - real_lo
    present = (num_syn > 0) & (num_real > 0)
    inv_syn = tl.where(present, tl.div_rn(1.0, tl.maximum(num_syn, 1).to(tl.float32)), 0.0)
    inv_real = tl.where(present, tl.div_rn(1.0, tl.maximum(num_real, 1).to(tl.float32)), 0.0)
    cols = col_block * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    col_mask = cols < dim
    sum_syn = _segment_sum(f_syn_ptr, order_ptr, syn_lo, tl.where(present, num_syn, 0), 0, cols, col_mask, dim,
                           BLOCK_ROWS)
    sum_real = _segment_sum(f_real_ptr, order_ptr, real_lo, tl.where(present, num_real, 0), num_syn_rows, cols,
                            col_mask, dim, BLOCK_ROWS)
    diff = sum_real * inv_real - sum_syn * inv_syn
    tl.store(diff_ptr + klass.to(tl.int64) * dim + cols, diff, mask=col_mask)
    tl.store(partial_ptr + klass * num_col_blocks + col_block, tl.sum(diff * diff))
    if col_block == 0:
        tl.store(scale_ptr + klass, inv_syn)
        tl.store(scale_ptr + num_classes + klass, inv_real)


@triton.jit
def finalize_kernel(partial_ptr, out_ptr, num_classes, num_col_blocks, PER_CLASS: tl.constexpr,
                    BLOCK_CLASSES: tl.constexpr, BLOCK_COLS: tl.constexpr):
    """Per-class sums of the partial norms (columns in order), then their sum in class order."""
    total = tl.zeros([BLOCK_CLASSES], dtype=tl.float32)
    for first in range(0, num_classes, BLOCK_CLASSES):
        classes = first + tl.arange(0, BLOCK_CLASSES)
        class_mask = classes < num_classes
        acc = tl.zeros([BLOCK_CLASSES, BLOCK_COLS], dtype=tl.float32)
        for col in range(0, num_col_blocks, BLOCK_COLS):
            cols = col + tl.arange(0, BLOCK_COLS)
            mask = class_mask[:, None] & (cols < num_col_blocks)[None, :]
            acc += tl.load(partial_ptr + classes[:, None] * num_col_blocks + cols[None, :], mask=mask, other=0.0)
        per_class = tl.sum(acc, axis=1)
        if PER_CLASS:
            tl.store(out_ptr + classes, per_class, mask=class_mask)
        total += per_class
    if not PER_CLASS:
        tl.store(out_ptr, tl.sum(total))


@triton.jit
def rows_backward_kernel(labels_ptr, diff_ptr, scale_ptr, grad_ptr, d_syn_ptr, d_real_ptr, num_syn_rows,
                         num_real_rows, num_syn_blocks, num_classes, dim, PER_CLASS: tl.constexpr,
                         BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    """Row blocks [0, num_syn_blocks) are synthetic rows, the rest real rows; labels holds y_syn then
    y_real."""
    row_block = tl.program_id(0)
    if row_block < num_syn_blocks:
        out_ptr = d_syn_ptr
        num_rows = num_syn_rows
        first = row_block * BLOCK_ROWS
        label_base = 0
        sign = -2.0
        side = 0
    else:
        out_ptr = d_real_ptr
        num_rows = num_real_rows
        first = (row_block - num_syn_blocks) * BLOCK_ROWS
        label_base = num_syn_rows
        sign = 2.0
        side = num_classes
    rows = first + tl.arange(0, BLOCK_ROWS)
    row_mask = rows < num_rows
    labels = tl.load(labels_ptr + label_base + rows, mask=row_mask, other=0)
    known = row_mask & (labels >= 0) & (labels < num_classes)  # out-of-range labels get gradient 0
    if PER_CLASS:
        g = tl.load(grad_ptr + labels, mask=known, other=0.0)
    else:
        g = tl.load(grad_ptr)
    coef = sign * g * tl.load(scale_ptr + side + labels, mask=known, other=0.0)
    cols = tl.program_id(1) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    col_mask = (cols < dim)[None, :]
    mask = row_mask[:, None] & col_mask
    diff = tl.load(diff_ptr + labels[:, None] * dim + cols[None, :], mask=known[:, None] & col_mask, other=0.0)
    value = coef[:, None] * diff
    tl.store(out_ptr + rows[:, None].to(tl.int64) * dim + cols[None, :], value.to(out_ptr.dtype.element_ty),
             mask=mask)


def forward(f_syn, y_syn, f_real, y_real, num_classes: int, per_class: bool):
    device, dim = f_syn.device, f_syn.shape[1]
    # Group rows by (side, class) without a host sync (bincount would sync to size its output). Labels
    # outside [0, K) (possible under torch.compile, where the value checks are skipped) get the key 2K:
    # sorted past every class segment, never read.
    keys = torch.cat([torch.where((y_syn >= 0) & (y_syn < num_classes), y_syn, 2 * num_classes),
                      torch.where((y_real >= 0) & (y_real < num_classes), y_real + num_classes, 2 * num_classes)])
    sorted_labels, order = torch.sort(keys, stable=True)
    ptr = torch.searchsorted(sorted_labels, torch.arange(2 * num_classes + 1, device=device))
    num_col_blocks = max(triton.cdiv(dim, BLOCK_COLS), 1)
    diff = torch.empty(num_classes, dim, dtype=torch.float32, device=device)
    scale = torch.empty(2, num_classes, dtype=torch.float32, device=device)
    partial = torch.empty(num_classes, num_col_blocks, dtype=torch.float32, device=device)
    out = torch.empty((num_classes,) if per_class else (), dtype=torch.float32, device=device)
    class_sums_kernel[(num_classes, num_col_blocks)](
        f_syn, f_real, order, ptr, diff, scale, partial, f_syn.shape[0], num_classes, dim, num_col_blocks,
        BLOCK_ROWS=BLOCK_ROWS, BLOCK_COLS=BLOCK_COLS, num_warps=NUM_WARPS)
    finalize_kernel[(1,)](partial, out, num_classes, num_col_blocks, PER_CLASS=per_class,
                          BLOCK_CLASSES=FINALIZE_CLASSES, BLOCK_COLS=FINALIZE_COLS, num_warps=NUM_WARPS)
    return out, diff, scale


def backward(grad_out, y_syn, y_real, diff, scale, dtype: torch.dtype, need_syn: bool, need_real: bool):
    num_classes, dim = diff.shape
    d_syn = diff.new_empty((y_syn.shape[0], dim) if need_syn else (0,), dtype=dtype)
    d_real = diff.new_empty((y_real.shape[0], dim) if need_real else (0,), dtype=dtype)
    syn_blocks = triton.cdiv(y_syn.shape[0], BLOCK_ROWS) if need_syn else 0
    real_blocks = triton.cdiv(y_real.shape[0], BLOCK_ROWS) if need_real else 0
    if syn_blocks + real_blocks and dim:
        grad = grad_out.to(torch.float32).contiguous()
        rows_backward_kernel[(syn_blocks + real_blocks, triton.cdiv(dim, BLOCK_COLS))](
            torch.cat([y_syn, y_real]), diff, scale, grad, d_syn, d_real, y_syn.shape[0], y_real.shape[0], syn_blocks,
            num_classes, dim, PER_CLASS=grad.dim() == 1, BLOCK_ROWS=BLOCK_ROWS, BLOCK_COLS=BLOCK_COLS,
            num_warps=NUM_WARPS)
    return d_syn, d_real


def aot_specs():
    """(name, kernel, signature, constexprs) for ahead-of-time compile checks (test tier 6), for every
    feature dtype the kernels serve."""
    specs = []
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        sig = SIGNATURE_TYPES[dtype]
        blocks = {"BLOCK_ROWS": BLOCK_ROWS, "BLOCK_COLS": BLOCK_COLS}
        specs.append((f"class_sums[{sig}]", class_sums_kernel,
                      {"f_syn_ptr": f"*{sig}", "f_real_ptr": f"*{sig}", "order_ptr": "*i64", "ptr_ptr": "*i64",
                       "diff_ptr": "*fp32", "scale_ptr": "*fp32", "partial_ptr": "*fp32", "num_syn_rows": "i32",
                       "num_classes": "i32", "dim": "i32", "num_col_blocks": "i32"}, blocks))
        for per_class in (False, True):
            specs.append((f"rows_backward[{sig},per_class={per_class}]", rows_backward_kernel,
                          {"labels_ptr": "*i64", "diff_ptr": "*fp32", "scale_ptr": "*fp32",
                           "grad_ptr": "*fp32", "d_syn_ptr": f"*{sig}", "d_real_ptr": f"*{sig}",
                           "num_syn_rows": "i32", "num_real_rows": "i32", "num_syn_blocks": "i32",
                           "num_classes": "i32", "dim": "i32"}, {"PER_CLASS": per_class, **blocks}))
    for per_class in (False, True):
        specs.append((f"finalize[per_class={per_class}]", finalize_kernel,
                      {"partial_ptr": "*fp32", "out_ptr": "*fp32", "num_classes": "i32", "num_col_blocks": "i32"},
                      {"PER_CLASS": per_class, "BLOCK_CLASSES": FINALIZE_CLASSES, "BLOCK_COLS": FINALIZE_COLS}))
    return specs
