"""Triton kernels for grad_distance (semantics: reference.py; work items: plan.py).

Three launches per forward/backward pair, whatever the number of tensors and classes:
``partials`` (one program per work item, reads both gradient lists through element-offset tables),
``finalize`` (one program per class, reduces that class's partials in a fixed order: deterministic)
and ``backward`` (one program per work item, writes the gradients of both lists). Each item's range is
split into an unaligned head, a body of 16-byte vectors and a tail, so the hot loads are
``ld.global.v4`` whenever the tensors start on 16-byte boundaries.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_common import (SIGNATURE_TYPES, accumulate_type, div_rn, offset_table, sqrt_rn,
                             vector_width)
from .plan import EPS, ITEM_FIELDS, METRIC_CODES, accumulate_dtype, plan_for

BLOCK = 1024
FINALIZE_BLOCK = 256
NUM_WARPS = 4
FIELDS = tl.constexpr(ITEM_FIELDS)  # int64 fields per work item


@triton.jit
def _item_ranges(start, length, VEC: tl.constexpr):
    """Head [start, head_end), body [body_lo, body_hi) of whole vectors, tail [tail_lo, end)."""
    end = start + length
    body_lo = (start + VEC - 1) // VEC * VEC
    body_hi = end // VEC * VEC
    head_end = tl.minimum(body_lo, end)
    tail_lo = tl.maximum(body_hi, body_lo)
    return head_end, body_lo, body_hi, tail_lo, end


@triton.jit
def _forward_terms(syn_ptr, real_ptr, so, ro, offs, mask, METRIC: tl.constexpr, ACC: tl.constexpr):
    gs = tl.load(syn_ptr + so + offs, mask=mask, other=0.0).to(ACC)
    gr = tl.load(real_ptr + ro + offs, mask=mask, other=0.0).to(ACC)
    if METRIC == 0 or METRIC == 2:  # ours, cos: <gr,gs>, ||gr||^2, ||gs||^2
        return gs * gr, gr * gr, gs * gs
    elif METRIC == 1:  # mse
        diff = gs - gr
        return diff * diff, gs * 0, gs * 0
    else:  # l1
        return tl.abs(gs - gr), gs * 0, gs * 0


@triton.jit
def grad_distance_partials_kernel(syn_ptr, real_ptr, offsets_ptr, items_ptr, item_weight_ptr, partials_ptr,
                                  num_tensors, METRIC: tl.constexpr, ALIGNED: tl.constexpr,
                                  VEC: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    item = tl.program_id(0)
    fields = items_ptr + item * FIELDS
    tensor = tl.load(fields)
    start = tl.load(fields + 2)
    slot = tl.load(fields + 4)
    weight = tl.load(item_weight_ptr + item)
    length = tl.where(weight != 0, tl.load(fields + 3), 0)
    so = tl.load(offsets_ptr + tensor)
    ro = tl.load(offsets_ptr + num_tensors + tensor)
    if ALIGNED:
        so = tl.multiple_of(so, VEC)
        ro = tl.multiple_of(ro, VEC)
    head_end, body_lo, body_hi, tail_lo, end = _item_ranges(start, length, VEC)
    lanes = tl.arange(0, VEC)
    offs = start + lanes
    h0, h1, h2 = _forward_terms(syn_ptr, real_ptr, so, ro, offs, offs < head_end, METRIC, ACC)
    offs = tail_lo + lanes
    t0, t1, t2 = _forward_terms(syn_ptr, real_ptr, so, ro, offs, offs < end, METRIC, ACC)
    acc0 = tl.zeros([BLOCK], dtype=ACC)
    acc1 = tl.zeros([BLOCK], dtype=ACC)
    acc2 = tl.zeros([BLOCK], dtype=ACC)
    for block in range(0, tl.cdiv(body_hi - body_lo, BLOCK)):
        body = body_lo + block * BLOCK + tl.arange(0, BLOCK)
        b0, b1, b2 = _forward_terms(syn_ptr, real_ptr, so, ro, body, body < body_hi, METRIC, ACC)
        acc0 += b0
        acc1 += b1
        acc2 += b2
    has_slot = slot >= 0
    tl.store(partials_ptr + slot * 3, tl.sum(acc0) + tl.sum(h0) + tl.sum(t0), mask=has_slot)
    tl.store(partials_ptr + slot * 3 + 1, tl.sum(acc1) + tl.sum(h1) + tl.sum(t1), mask=has_slot)
    tl.store(partials_ptr + slot * 3 + 2, tl.sum(acc2) + tl.sum(h2) + tl.sum(t2), mask=has_slot)


@triton.jit
def _cosine_distance(dot, sq_r, sq_s, EPS: tl.constexpr):
    """1 - <gr,gs> / (||gr|| ||gs|| + eps), from the sums."""
    return 1.0 - div_rn(dot, sqrt_rn(sq_r) * sqrt_rn(sq_s) + EPS)


@triton.jit
def grad_distance_finalize_kernel(partials_ptr, part_ptr_ptr, part_weight_ptr, out_ptr, stats_ptr,
                                  METRIC: tl.constexpr, EPS: tl.constexpr, BLOCK: tl.constexpr,
                                  ACC: tl.constexpr):
    klass = tl.program_id(0)
    lo = tl.load(part_ptr_ptr + klass)
    hi = tl.load(part_ptr_ptr + klass + 1)
    acc0 = tl.zeros([BLOCK], dtype=ACC)
    acc1 = tl.zeros([BLOCK], dtype=ACC)
    acc2 = tl.zeros([BLOCK], dtype=ACC)
    for first in range(lo, hi, BLOCK):
        idx = first + tl.arange(0, BLOCK)
        mask = idx < hi
        weight = tl.load(part_weight_ptr + idx, mask=mask, other=0.0).to(ACC)
        active = weight != 0
        p0 = tl.load(partials_ptr + idx * 3, mask=mask & active, other=0.0)
        if METRIC == 0:  # ours: weighted sum of per-row cosine distances
            acc0 += tl.where(active, weight * _cosine_distance(p0, tl.load(partials_ptr + idx * 3 + 1, mask=mask & active, other=0.0),
                                                              tl.load(partials_ptr + idx * 3 + 2, mask=mask & active, other=0.0), EPS), 0.0)
        elif METRIC == 2:  # cos: sums over the concatenation
            acc0 += p0
            acc1 += tl.load(partials_ptr + idx * 3 + 1, mask=mask & active, other=0.0)
            acc2 += tl.load(partials_ptr + idx * 3 + 2, mask=mask & active, other=0.0)
        else:  # mse, l1: weighted sums
            acc0 += tl.where(active, weight * p0, 0.0)
    total = tl.sum(acc0)
    if METRIC == 2:
        sq_r = tl.sum(acc1)
        sq_s = tl.sum(acc2)
        tl.store(stats_ptr + klass * 3, total)
        tl.store(stats_ptr + klass * 3 + 1, sq_r)
        tl.store(stats_ptr + klass * 3 + 2, sq_s)
        total = _cosine_distance(total, sq_r, sq_s, EPS)
    tl.store(out_ptr + klass, total.to(out_ptr.dtype.element_ty))


@triton.jit
def _backward_block(syn_ptr, real_ptr, dsyn_ptr, dreal_ptr, so, ro, dso, dro, offs, hi, load_hi, c_cross, c_syn, c_real,
                    METRIC: tl.constexpr, NEED_SYN: tl.constexpr, NEED_REAL: tl.constexpr, ACC: tl.constexpr):
    # Stores cover [.., hi); loads [.., load_hi), which is empty for inactive items: they store zeros
    # (their tensors are not in the formula at all, so not even NaN inputs may leak into them).
    mask = offs < hi
    load_mask = offs < load_hi
    gs = tl.load(syn_ptr + so + offs, mask=load_mask, other=0.0).to(ACC)
    gr = tl.load(real_ptr + ro + offs, mask=load_mask, other=0.0).to(ACC)
    if METRIC == 1:  # mse: 2 (gs - gr)
        dsyn = c_syn * (gs - gr)
        dreal = -dsyn
    elif METRIC == 3:  # l1: sign(gs - gr), NaN kept
        diff = gs - gr
        sign = tl.where(diff > 0, 1.0, tl.where(diff < 0, -1.0, 0.0)).to(ACC)
        dsyn = c_syn * tl.where(diff != diff, diff, sign)
        dreal = -dsyn
    else:  # ours, cos
        dsyn = c_cross * gr + c_syn * gs
        dreal = c_cross * gs + c_real * gr
    if NEED_SYN:
        tl.store(dsyn_ptr + dso + offs, dsyn.to(dsyn_ptr.dtype.element_ty), mask=mask)
    if NEED_REAL:
        tl.store(dreal_ptr + dro + offs, dreal.to(dreal_ptr.dtype.element_ty), mask=mask)


@triton.jit
def grad_distance_backward_kernel(syn_ptr, real_ptr, offsets_ptr, items_ptr, item_weight_ptr,
                                  stats_ptr, grad_out_ptr, dsyn_ptr, dreal_ptr, num_tensors,
                                  METRIC: tl.constexpr, ALIGNED: tl.constexpr, VEC: tl.constexpr,
                                  BLOCK: tl.constexpr, NEED_SYN: tl.constexpr, NEED_REAL: tl.constexpr,
                                  EPS: tl.constexpr, ACC: tl.constexpr):
    item = tl.program_id(0)
    fields = items_ptr + item * FIELDS
    tensor = tl.load(fields)
    klass = tl.load(fields + 1)
    start = tl.load(fields + 2)
    length = tl.load(fields + 3)
    slot = tl.load(fields + 4)
    weight = tl.load(item_weight_ptr + item).to(ACC)
    active = weight != 0
    scale = tl.where(active, tl.load(grad_out_ptr + klass).to(ACC) * weight, 0.0)
    if METRIC == 0 or METRIC == 2:
        # d/dgs [1 - s/(a b + eps)] = -gr/den + s a gs / (b den^2), a = ||gr||, b = ||gs||; the norm's
        # gradient at 0 is 0 (autograd's convention).
        row = slot if METRIC == 0 else klass
        dot = tl.load(stats_ptr + row * 3, mask=active, other=0.0)
        norm_r = sqrt_rn(tl.load(stats_ptr + row * 3 + 1, mask=active, other=0.0))
        norm_s = sqrt_rn(tl.load(stats_ptr + row * 3 + 2, mask=active, other=0.0))
        den = norm_r * norm_s + EPS
        c_cross = -div_rn(scale, den)
        c_syn = tl.where(norm_s > 0, div_rn(scale * dot * norm_r, norm_s * den * den), 0.0)
        c_real = tl.where(norm_r > 0, div_rn(scale * dot * norm_s, norm_r * den * den), 0.0)
    elif METRIC == 1:
        c_cross = scale
        c_syn = 2.0 * scale
        c_real = scale
    else:
        c_cross = scale
        c_syn = scale
        c_real = scale
    so = tl.load(offsets_ptr + tensor)
    ro = tl.load(offsets_ptr + num_tensors + tensor)
    dso = tl.load(offsets_ptr + 2 * num_tensors + tensor)
    dro = tl.load(offsets_ptr + 3 * num_tensors + tensor)
    if ALIGNED:
        so = tl.multiple_of(so, VEC)
        ro = tl.multiple_of(ro, VEC)
        dso = tl.multiple_of(dso, VEC)
        dro = tl.multiple_of(dro, VEC)
    head_end, body_lo, body_hi, tail_lo, end = _item_ranges(start, length, VEC)
    lanes = tl.arange(0, VEC)
    offs = start + lanes
    _backward_block(syn_ptr, real_ptr, dsyn_ptr, dreal_ptr, so, ro, dso, dro, offs, head_end, tl.where(active, head_end, start),
                    c_cross, c_syn, c_real, METRIC, NEED_SYN, NEED_REAL, ACC)
    body_load_hi = tl.where(active, body_hi, body_lo)
    for block in range(0, tl.cdiv(body_hi - body_lo, BLOCK)):
        body = body_lo + block * BLOCK + tl.arange(0, BLOCK)
        _backward_block(syn_ptr, real_ptr, dsyn_ptr, dreal_ptr, so, ro, dso, dro, body, body_hi, body_load_hi,
                        c_cross, c_syn, c_real, METRIC, NEED_SYN, NEED_REAL, ACC)
    offs = tail_lo + lanes
    _backward_block(syn_ptr, real_ptr, dsyn_ptr, dreal_ptr, so, ro, dso, dro, offs, end, tl.where(active, end, tail_lo),
                    c_cross, c_syn, c_real, METRIC, NEED_SYN, NEED_REAL, ACC)


def forward(g_syn, g_real, metric: str, weights, batched: bool):
    """(distance [K] or [], statistics for backward); same contract as reference.forward."""
    ref = g_syn[0]
    num_classes = ref.shape[0] if batched else 1
    plan = plan_for(g_syn, metric, weights, batched)
    offsets, aligned = offset_table([g_syn, g_real], ref.device)
    items, item_weight, part_ptr, part_weight = plan.on(ref.device)
    acc = accumulate_type(ref.dtype)
    acc_torch = accumulate_dtype(ref.dtype)
    code = METRIC_CODES[metric]
    partials = torch.empty(max(plan.num_parts, 1) * 3, dtype=acc_torch, device=ref.device)
    stats = partials[: plan.num_parts * 3] if metric == "ours" else torch.empty(
        3 * num_classes if metric == "cos" else 0, dtype=acc_torch, device=ref.device)
    out = torch.empty(num_classes, dtype=acc_torch, device=ref.device)
    if plan.num_items:
        grad_distance_partials_kernel[(plan.num_items,)](
            g_syn[0], g_real[0], offsets, items, item_weight, partials, len(g_syn),
            METRIC=code, ALIGNED=aligned, VEC=vector_width(ref.dtype), BLOCK=BLOCK, ACC=acc, num_warps=NUM_WARPS)
    grad_distance_finalize_kernel[(num_classes,)](
        partials, part_ptr, part_weight, out, stats if metric == "cos" else partials,
        METRIC=code, EPS=EPS, BLOCK=FINALIZE_BLOCK, ACC=acc, num_warps=NUM_WARPS)
    return (out if batched else out.reshape(())), stats


def backward(grad_out, g_syn, g_real, stats, metric: str, weights, batched: bool, need_syn: bool, need_real: bool):
    """Gradients w.r.t. g_syn and g_real (lists; empty where not needed)."""
    ref = g_syn[0]
    plan = plan_for(g_syn, metric, weights, batched)
    items, item_weight, _, _ = plan.on(ref.device)
    dsyn = [torch.empty_like(t) for t in g_syn] if need_syn else []
    dreal = [torch.empty_like(t) for t in g_real] if need_real else []
    if plan.num_items and (need_syn or need_real):
        # Unneeded outputs are stood in for by the inputs; the kernel never writes them.
        offsets, aligned = offset_table([g_syn, g_real, dsyn or g_syn, dreal or g_real], ref.device)
        grad_distance_backward_kernel[(plan.num_items,)](
            g_syn[0], g_real[0], offsets, items, item_weight, stats if stats.numel() else stats.new_empty(1),
            grad_out.reshape(-1).to(accumulate_dtype(ref.dtype)).contiguous(), (dsyn or g_syn)[0], (dreal or g_real)[0], len(g_syn),
            METRIC=METRIC_CODES[metric], ALIGNED=aligned, VEC=vector_width(ref.dtype), BLOCK=BLOCK,
            NEED_SYN=need_syn, NEED_REAL=need_real, EPS=EPS, ACC=accumulate_type(ref.dtype), num_warps=NUM_WARPS)
    return dsyn, dreal


def aot_specs():
    """(name, kernel, signature, constexprs) for ahead-of-time compile checks (test tier 6).

    Every kernel for every dtype it serves, in the 16-byte-aligned variant whose PTX must show
    vector loads. Pointer arguments are marked 16-byte aligned as the JIT does for real tensors.
    """
    specs = []
    for dtype, sig in SIGNATURE_TYPES.items():
        acc = accumulate_type(dtype)
        acc_sig = "fp64" if dtype == torch.float64 else "fp32"
        vec = vector_width(dtype)
        for metric, code in METRIC_CODES.items():
            specs.append((f"partials[{sig},{metric}]", grad_distance_partials_kernel,
                          {"syn_ptr": f"*{sig}", "real_ptr": f"*{sig}", "offsets_ptr": "*i64", "items_ptr": "*i64",
                           "item_weight_ptr": "*fp64", "partials_ptr": f"*{acc_sig}", "num_tensors": "i32"},
                          {"METRIC": code, "ALIGNED": True, "VEC": vec, "BLOCK": BLOCK, "ACC": acc}))
            specs.append((f"finalize[{sig},{metric}]", grad_distance_finalize_kernel,
                          {"partials_ptr": f"*{acc_sig}", "part_ptr_ptr": "*i64", "part_weight_ptr": "*fp64",
                           "out_ptr": f"*{acc_sig}", "stats_ptr": f"*{acc_sig}"},
                          {"METRIC": code, "EPS": EPS, "BLOCK": FINALIZE_BLOCK, "ACC": acc}))
            specs.append((f"backward[{sig},{metric}]", grad_distance_backward_kernel,
                          {"syn_ptr": f"*{sig}", "real_ptr": f"*{sig}", "offsets_ptr": "*i64",
                           "items_ptr": "*i64", "item_weight_ptr": "*fp64",
                           "stats_ptr": f"*{acc_sig}", "grad_out_ptr": f"*{acc_sig}", "dsyn_ptr": f"*{sig}",
                           "dreal_ptr": f"*{sig}", "num_tensors": "i32"},
                          {"METRIC": code, "ALIGNED": True, "VEC": vec, "BLOCK": BLOCK, "NEED_SYN": True,
                           "NEED_REAL": True, "EPS": EPS, "ACC": acc}))
    return specs
