"""Triton kernels for bn_stat_loss (semantics: reference.py; work items: plan.py).

Three launches per forward/backward pair, whatever the number of layers:

* ``partials``: one program per work item (a piece of whole runs of one channel of one layer, read
  through an element-offset table over the activation list), writing sum(x - K) and sum((x - K)^2)
  with K the channel's first element (shifted sums: one pass, accurate for |mean| >> std);
* ``finalize``: one program that walks the layers and, per layer, blocks of channels, reducing each
  channel's partials in a fixed order into mean and biased variance, then the two norms of the
  layer and the weighted total (deterministic; no atomics);
* ``backward``: one program per work item writing d/dx = c1 + c2 (x - mean) for its piece, and the
  gradients of the running statistics from the channel's first piece.

Pieces are walked in groups of VEC elements: when every activation starts on a 16-byte boundary and
every run length S is a multiple of VEC, the groups are 16-byte vectors (``ld.global.v4``); the
division by the run length (to find a group's run) is then paid once per vector, not per element.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_common import (SIGNATURE_TYPES, accumulate_type, div_rn, element_offsets, offset_table, sqrt_rn,
                             vector_width)
from .plan import ITEM_FIELDS, LAYER_FIELDS, accumulate_dtype, plan_for

BLOCK = 1024  # elements per loop step of a work item
FINALIZE_BLOCK = 128  # channels per step of the finalize
NUM_WARPS = 4
IF = tl.constexpr(ITEM_FIELDS)
LF = tl.constexpr(LAYER_FIELDS)


@triton.jit
def _piece(items_ptr, layers_ptr, item):
    """(layer, channel, first run, runs, C, S, B, first channel of the layer) of one work item."""
    f = items_ptr + item * IF
    layer = tl.load(f)
    lf = layers_ptr + layer * LF
    return (layer, tl.load(f + 1), tl.load(f + 2), tl.load(f + 3), tl.load(lf), tl.load(lf + 1), tl.load(lf + 2),
            tl.load(lf + 5))


@triton.jit
def _group_offsets(start, num_groups, groups_per_run, run_stride, ALIGNED: tl.constexpr, VEC: tl.constexpr,
                   ROWS: tl.constexpr):
    """Offsets [ROWS, VEC] from a piece's first element of groups start..start+ROWS, and their mask."""
    j = start + tl.arange(0, ROWS)
    run = j // groups_per_run
    row = run.to(tl.int64) * run_stride + ((j - run * groups_per_run) * VEC).to(tl.int64)
    if ALIGNED:
        row = tl.multiple_of(row, VEC)
    offs = row[:, None] + tl.arange(0, VEC)[None, :]
    mask = (j < num_groups)[:, None] & (tl.arange(0, VEC) < VEC)[None, :]
    return offs, mask


@triton.jit
def bn_stat_partials_kernel(x_ptr, offsets_ptr, layers_ptr, items_ptr, partials_ptr, ALIGNED: tl.constexpr,
                            VEC: tl.constexpr, ROWS: tl.constexpr, ACC: tl.constexpr):
    item = tl.program_id(0)
    layer, c, b0, nb, C, S, B, ch0 = _piece(items_ptr, layers_ptr, item)
    off = tl.load(offsets_ptr + layer)
    shift = tl.load(x_ptr + off + c * S).to(ACC)  # the channel's first element
    base = off + (b0 * C + c) * S
    if ALIGNED:
        base = tl.multiple_of(base, VEC)
    groups_per_run = (S // VEC).to(tl.int32)
    num_groups = nb.to(tl.int32) * groups_per_run
    acc1 = tl.zeros([ROWS, VEC], dtype=ACC)
    acc2 = tl.zeros([ROWS, VEC], dtype=ACC)
    for start in range(0, num_groups, ROWS):
        offs, mask = _group_offsets(start, num_groups, groups_per_run, C * S, ALIGNED, VEC, ROWS)
        x = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(ACC)
        d = tl.where(mask, x - shift, 0.0)
        acc1 += d
        acc2 += d * d
    tl.store(partials_ptr + 2 * item, tl.sum(tl.sum(acc1, axis=1), axis=0))
    tl.store(partials_ptr + 2 * item + 1, tl.sum(tl.sum(acc2, axis=1), axis=0))


@triton.jit
def bn_stat_finalize_kernel(x_ptr, mean_ptr, var_ptr, offsets_ptr, layers_ptr, weights_ptr, partials_ptr, stats_ptr,
                            out_ptr, num_layers, total_channels, BLOCK: tl.constexpr, ACC: tl.constexpr):
    loss = tl.zeros([BLOCK], dtype=ACC)  # lane 0 carries the total
    for layer in range(0, num_layers):
        lf = layers_ptr + layer * LF
        C = tl.load(lf)
        S = tl.load(lf + 1)
        n = (tl.load(lf + 2) * S).to(ACC)
        first = tl.load(lf + 3)
        pieces = tl.load(lf + 4)
        ch0 = tl.load(lf + 5)
        xo = tl.load(offsets_ptr + layer)
        mo = tl.load(offsets_ptr + num_layers + layer)
        vo = tl.load(offsets_ptr + 2 * num_layers + layer)
        sq_m = tl.zeros([BLOCK], dtype=ACC)
        sq_v = tl.zeros([BLOCK], dtype=ACC)
        for c0 in range(0, C, BLOCK):
            c = c0 + tl.arange(0, BLOCK)
            mask = c < C
            s1 = tl.zeros([BLOCK], dtype=ACC)
            s2 = tl.zeros([BLOCK], dtype=ACC)
            for j in range(0, pieces):
                idx = first + c * pieces + j
                s1 += tl.load(partials_ptr + 2 * idx, mask=mask, other=0.0)
                s2 += tl.load(partials_ptr + 2 * idx + 1, mask=mask, other=0.0)
            d = div_rn(s1, n)
            mean = tl.load(x_ptr + xo + c * S, mask=mask, other=0.0).to(ACC) + d
            var = div_rn(s2, n) - d * d
            var = tl.where(var < 0, 0.0, var)  # rounding only (keeps NaN)
            tl.store(stats_ptr + ch0 + c, mean, mask=mask)
            tl.store(stats_ptr + total_channels + ch0 + c, var, mask=mask)
            dm = tl.where(mask, mean - tl.load(mean_ptr + mo + c, mask=mask, other=0.0), 0.0)
            dv = tl.where(mask, var - tl.load(var_ptr + vo + c, mask=mask, other=0.0), 0.0)
            sq_m += dm * dm
            sq_v += dv * dv
        nm = sqrt_rn(tl.sum(sq_m, axis=0))
        nv = sqrt_rn(tl.sum(sq_v, axis=0))
        tl.store(stats_ptr + 2 * total_channels + layer, nm)
        tl.store(stats_ptr + 2 * total_channels + num_layers + layer, nv)
        w = tl.load(weights_ptr + layer).to(ACC)
        loss += tl.where(tl.arange(0, BLOCK) == 0, w * (nm + nv), 0.0)
    tl.store(out_ptr, tl.sum(loss, axis=0))


@triton.jit
def bn_stat_backward_kernel(x_ptr, mean_ptr, var_ptr, dx_ptr, dmean_ptr, dvar_ptr, offsets_ptr, layers_ptr,
                            items_ptr, weights_ptr, stats_ptr, grad_out_ptr, num_layers, total_channels,
                            NEED_ACT: tl.constexpr, NEED_STATS: tl.constexpr, ALIGNED: tl.constexpr,
                            VEC: tl.constexpr, ROWS: tl.constexpr, ACC: tl.constexpr):
    item = tl.program_id(0)
    layer, c, b0, nb, C, S, B, ch0 = _piece(items_ptr, layers_ptr, item)
    mean = tl.load(stats_ptr + ch0 + c)
    var = tl.load(stats_ptr + total_channels + ch0 + c)
    nm = tl.load(stats_ptr + 2 * total_channels + layer)
    nv = tl.load(stats_ptr + 2 * total_channels + num_layers + layer)
    mu = tl.load(mean_ptr + tl.load(offsets_ptr + num_layers + layer) + c)
    rv = tl.load(var_ptr + tl.load(offsets_ptr + 2 * num_layers + layer) + c)
    scale = tl.load(grad_out_ptr).to(ACC) * tl.load(weights_ptr + layer).to(ACC)
    # dL/dmean and dL/dvar; a norm's subgradient at 0 is 0 (NaN still propagates).
    coef_m = tl.where(nm == 0, 0.0, scale * div_rn(mean - mu, tl.where(nm == 0, 1.0, nm)))
    coef_v = tl.where(nv == 0, 0.0, scale * div_rn(var - rv, tl.where(nv == 0, 1.0, nv)))
    if NEED_STATS:
        first_piece = b0 == 0
        tl.store(dmean_ptr + tl.load(offsets_ptr + 4 * num_layers + layer) + c, -coef_m, mask=first_piece)
        tl.store(dvar_ptr + tl.load(offsets_ptr + 5 * num_layers + layer) + c, -coef_v, mask=first_piece)
    if NEED_ACT:
        n = (B * S).to(ACC)
        c1 = div_rn(coef_m, n)
        c2 = div_rn(2.0 * coef_v, n)
        rel = (b0 * C + c) * S
        base = tl.load(offsets_ptr + layer) + rel
        dbase = tl.load(offsets_ptr + 3 * num_layers + layer) + rel
        if ALIGNED:
            base = tl.multiple_of(base, VEC)
            dbase = tl.multiple_of(dbase, VEC)
        groups_per_run = (S // VEC).to(tl.int32)
        num_groups = nb.to(tl.int32) * groups_per_run
        for start in range(0, num_groups, ROWS):
            offs, mask = _group_offsets(start, num_groups, groups_per_run, C * S, ALIGNED, VEC, ROWS)
            x = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(ACC)
            tl.store(dx_ptr + dbase + offs, (c1 + c2 * (x - mean)).to(dx_ptr.dtype.element_ty), mask=mask)


def _vector(activations, aligned: bool) -> tuple[bool, int, int]:
    """(ALIGNED, VEC, ROWS): 16-byte groups when every tensor is aligned and every run length a
    multiple of the vector width, else single elements."""
    vec = vector_width(activations[0].dtype)
    aligned = aligned and all((a.numel() // (a.shape[0] * a.shape[1])) % vec == 0 for a in activations)
    vec = vec if aligned else 1
    return aligned, vec, BLOCK // vec


def forward(activations, running_means, running_vars, weights):
    """(loss, statistics for backward); same contract as reference.forward."""
    ref = activations[0]
    plan = plan_for(activations, weights)
    layers, items, weight_table = plan.on(ref.device)
    offsets, aligned = offset_table([activations, running_means, running_vars], ref.device)
    acc = accumulate_type(ref.dtype)
    acc_torch = accumulate_dtype(ref.dtype)
    partials = torch.empty(2 * plan.num_items, dtype=acc_torch, device=ref.device)
    stats = torch.empty(2 * plan.num_channels + 2 * plan.num_layers, dtype=acc_torch, device=ref.device)
    out = torch.empty((), dtype=acc_torch, device=ref.device)
    aligned, vec, rows = _vector(activations, element_offsets(activations)[1])
    bn_stat_partials_kernel[(plan.num_items,)](ref, offsets, layers, items, partials, ALIGNED=aligned, VEC=vec,
                                               ROWS=rows, ACC=acc, num_warps=NUM_WARPS)
    bn_stat_finalize_kernel[(1,)](ref, running_means[0], running_vars[0], offsets, layers, weight_table, partials,
                                  stats, out, plan.num_layers, plan.num_channels, BLOCK=FINALIZE_BLOCK, ACC=acc,
                                  num_warps=NUM_WARPS)
    return out, stats


def backward(grad_out, activations, running_means, running_vars, stats, weights, need_act: bool, need_stats: bool):
    """Gradients (activations, running_means, running_vars), each a list (empty where not needed)."""
    ref = activations[0]
    plan = plan_for(activations, weights)
    layers, items, weight_table = plan.on(ref.device)
    d_act = [torch.empty_like(a, memory_format=torch.contiguous_format) for a in activations] if need_act else []
    d_mean = [torch.empty_like(t) for t in running_means] if need_stats else []
    d_var = [torch.empty_like(t) for t in running_vars] if need_stats else []
    if need_act or need_stats:
        # Unneeded outputs are stood in for by the inputs; the kernel never writes them.
        lists = [activations, running_means, running_vars, d_act or activations, d_mean or running_means,
                 d_var or running_vars]
        offsets, _ = offset_table(lists, ref.device)
        aligned, vec, rows = _vector(activations, element_offsets(activations)[1]
                                     and element_offsets(d_act or activations)[1])
        bn_stat_backward_kernel[(plan.num_items,)](
            ref, running_means[0], running_vars[0], (d_act or activations)[0], (d_mean or running_means)[0],
            (d_var or running_vars)[0], offsets, layers, items, weight_table, stats,
            grad_out.reshape(1).to(stats.dtype), plan.num_layers, plan.num_channels, NEED_ACT=need_act,
            NEED_STATS=need_stats, ALIGNED=aligned, VEC=vec, ROWS=rows, ACC=accumulate_type(ref.dtype),
            num_warps=NUM_WARPS)
    return d_act, d_mean, d_var


def aot_specs():
    """(name, kernel, signature, constexprs) for ahead-of-time compile checks (test tier 6).

    Every kernel for every dtype it serves; the hot kernels in their 16-byte-aligned variant (whose
    PTX must show vector loads) and their element-wise one. Pointer arguments are marked 16-byte
    aligned as the JIT does for real tensors.
    """
    specs = []
    for dtype, sig in SIGNATURE_TYPES.items():
        acc = accumulate_type(dtype)
        acc_sig = "fp64" if dtype == torch.float64 else "fp32"
        for aligned in (True, False):
            vec = vector_width(dtype) if aligned else 1
            variant = "aligned" if aligned else "scalar"
            specs.append((f"partials[{sig},{variant}]", bn_stat_partials_kernel,
                          {"x_ptr": f"*{sig}", "offsets_ptr": "*i64", "layers_ptr": "*i64", "items_ptr": "*i64",
                           "partials_ptr": f"*{acc_sig}"},
                          {"ALIGNED": aligned, "VEC": vec, "ROWS": BLOCK // vec, "ACC": acc}))
            specs.append((f"backward[{sig},{variant}]", bn_stat_backward_kernel,
                          {"x_ptr": f"*{sig}", "mean_ptr": f"*{acc_sig}", "var_ptr": f"*{acc_sig}",
                           "dx_ptr": f"*{sig}", "dmean_ptr": f"*{acc_sig}", "dvar_ptr": f"*{acc_sig}",
                           "offsets_ptr": "*i64", "layers_ptr": "*i64", "items_ptr": "*i64", "weights_ptr": "*fp64",
                           "stats_ptr": f"*{acc_sig}", "grad_out_ptr": f"*{acc_sig}", "num_layers": "i32",
                           "total_channels": "i32"},
                          {"NEED_ACT": True, "NEED_STATS": True, "ALIGNED": aligned, "VEC": vec,
                           "ROWS": BLOCK // vec, "ACC": acc}))
        specs.append((f"finalize[{sig}]", bn_stat_finalize_kernel,
                      {"x_ptr": f"*{sig}", "mean_ptr": f"*{acc_sig}", "var_ptr": f"*{acc_sig}", "offsets_ptr": "*i64",
                       "layers_ptr": "*i64", "weights_ptr": "*fp64", "partials_ptr": f"*{acc_sig}",
                       "stats_ptr": f"*{acc_sig}", "out_ptr": f"*{acc_sig}", "num_layers": "i32",
                       "total_channels": "i32"},
                      {"BLOCK": FINALIZE_BLOCK, "ACC": acc}))
    return specs
