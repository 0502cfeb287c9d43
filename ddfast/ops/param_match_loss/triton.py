"""Triton kernels for param_match_loss (semantics and backend contract: reference.py).

Forward, two launches: ``sums`` (one program per block of BLOCK elements reads the three vectors once
and writes its two partial sums, no atomics) and ``finalize`` (one program adds the partials in block
order and writes [A, B] and A / B: deterministic). Backward, one launch: ``grads`` writes the needed
gradients of the three vectors in one pass (the coefficients come from the saved sums in-kernel: no
host synchronisation). Full blocks load without masks (16-byte vector loads when every vector is
16-byte aligned); the tail block is masked. Vectors are fp16, bf16 or fp32; sums in fp32 (fp64 runs
on reference and cpp).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_common import SIGNATURE_TYPES, div_rn

BLOCK = 4096
FINALIZE_BLOCK = 1024
NUM_WARPS = 8


@triton.jit
def _load(ptr, offs, numel, FULL: tl.constexpr):
    """fp32 values at offs; FULL: every offset is in range (no mask, so loads may be vectorised)."""
    if FULL:
        x = tl.load(ptr + offs)
    else:
        x = tl.load(ptr + offs, mask=offs < numel, other=0.0)
    return x.to(tl.float32)


@triton.jit
def _store(ptr, offs, x, numel, FULL: tl.constexpr):
    if FULL:
        tl.store(ptr + offs, x.to(ptr.dtype.element_ty))
    else:
        tl.store(ptr + offs, x.to(ptr.dtype.element_ty), mask=offs < numel)


@triton.jit
def _block_sums(n_ptr, s_ptr, t_ptr, offs, numel, FULL: tl.constexpr):
    t = _load(t_ptr, offs, numel, FULL)
    dn = _load(n_ptr, offs, numel, FULL) - t
    ds = _load(s_ptr, offs, numel, FULL) - t
    return tl.sum(dn * dn), tl.sum(ds * ds)


@triton.jit
def sums_kernel(n_ptr, s_ptr, t_ptr, partial_ptr, numel, num_blocks, BLOCK: tl.constexpr, ALIGNED: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    if ALIGNED:
        if (pid + 1).to(tl.int64) * BLOCK <= numel:
            a, b = _block_sums(n_ptr, s_ptr, t_ptr, offs, numel, True)
        else:
            a, b = _block_sums(n_ptr, s_ptr, t_ptr, offs, numel, False)
    else:
        a, b = _block_sums(n_ptr, s_ptr, t_ptr, offs, numel, False)
    tl.store(partial_ptr + pid, a)
    tl.store(partial_ptr + num_blocks + pid, b)


@triton.jit
def finalize_kernel(partial_ptr, loss_ptr, sums_ptr, num_blocks, BLOCK: tl.constexpr):
    """One program: the partial sums in block order, then [A, B] and A / B (no epsilon)."""
    acc_a = tl.zeros([BLOCK], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, num_blocks, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < num_blocks
        acc_a += tl.load(partial_ptr + offs, mask=mask, other=0.0)
        acc_b += tl.load(partial_ptr + num_blocks + offs, mask=mask, other=0.0)
    a = tl.sum(acc_a)
    b = tl.sum(acc_b)
    tl.store(sums_ptr, a)
    tl.store(sums_ptr + 1, b)
    tl.store(loss_ptr, div_rn(a, b))


@triton.jit
def _store_grads(n_ptr, s_ptr, t_ptr, dn_ptr, ds_ptr, dt_ptr, offs, numel, c_n, c_s, FULL: tl.constexpr,
                 NEED_N: tl.constexpr, NEED_S: tl.constexpr, NEED_T: tl.constexpr):
    t = _load(t_ptr, offs, numel, FULL)
    gn = c_n * (_load(n_ptr, offs, numel, FULL) - t)
    gs = c_s * (_load(s_ptr, offs, numel, FULL) - t)
    if NEED_N:
        _store(dn_ptr, offs, gn, numel, FULL)
    if NEED_S:
        _store(ds_ptr, offs, gs, numel, FULL)
    if NEED_T:
        _store(dt_ptr, offs, -(gn + gs), numel, FULL)


@triton.jit
def grads_kernel(grad_ptr, sums_ptr, n_ptr, s_ptr, t_ptr, dn_ptr, ds_ptr, dt_ptr, numel, BLOCK: tl.constexpr,
                 ALIGNED: tl.constexpr, NEED_N: tl.constexpr, NEED_S: tl.constexpr, NEED_T: tl.constexpr):
    pid = tl.program_id(0)
    g = tl.load(grad_ptr)
    num = tl.load(sums_ptr)
    den = tl.load(sums_ptr + 1)
    c_n = div_rn(2.0 * g, den)
    c_s = -div_rn(2.0 * g * div_rn(num, den), den)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    full = (pid + 1).to(tl.int64) * BLOCK <= numel
    if ALIGNED and full:  # ALIGNED is a constexpr: the unmasked variant is compiled only when it is True
        _store_grads(n_ptr, s_ptr, t_ptr, dn_ptr, ds_ptr, dt_ptr, offs, numel, c_n, c_s, True, NEED_N, NEED_S, NEED_T)
    else:
        _store_grads(n_ptr, s_ptr, t_ptr, dn_ptr, ds_ptr, dt_ptr, offs, numel, c_n, c_s, False, NEED_N, NEED_S,
                     NEED_T)


def _aligned(*tensors) -> bool:
    return all(t.data_ptr() % 16 == 0 for t in tensors)


def forward(theta_n, theta_start, theta_target):
    numel = theta_n.numel()
    num_blocks = triton.cdiv(numel, BLOCK)
    partial = theta_n.new_empty(2 * num_blocks, dtype=torch.float32)
    loss = theta_n.new_empty((), dtype=torch.float32)
    sums = theta_n.new_empty(2, dtype=torch.float32)
    sums_kernel[(num_blocks,)](theta_n, theta_start, theta_target, partial, numel, num_blocks, BLOCK=BLOCK,
                               ALIGNED=_aligned(theta_n, theta_start, theta_target), num_warps=NUM_WARPS)
    finalize_kernel[(1,)](partial, loss, sums, num_blocks, BLOCK=FINALIZE_BLOCK, num_warps=4)
    return loss, sums


def backward(grad_out, theta_n, theta_start, theta_target, sums, need_n: bool, need_start: bool, need_target: bool):
    numel = theta_n.numel()
    outs = [torch.empty_like(theta_n) if need else theta_n.new_empty(0) for need in (need_n, need_start, need_target)]
    if need_n or need_start or need_target:
        # An output that is not needed gets a valid dummy pointer; its stores are compiled out.
        ptrs = [o if need else theta_n for o, need in zip(outs, (need_n, need_start, need_target))]
        grads_kernel[(triton.cdiv(numel, BLOCK),)](
            grad_out.to(torch.float32), sums, theta_n, theta_start, theta_target, *ptrs, numel, BLOCK=BLOCK,
            ALIGNED=_aligned(theta_n, theta_start, theta_target, *ptrs), NEED_N=need_n, NEED_S=need_start,
            NEED_T=need_target, num_warps=NUM_WARPS)
    return tuple(outs)


def aot_specs():
    """(name, kernel, signature, constexprs) for ahead-of-time compile checks (test tier 6), for every
    dtype the kernels serve."""
    specs = []
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        sig = SIGNATURE_TYPES[dtype]
        vec = {"n_ptr": f"*{sig}", "s_ptr": f"*{sig}", "t_ptr": f"*{sig}"}
        specs.append((f"sums[{sig}]", sums_kernel, {**vec, "partial_ptr": "*fp32", "numel": "i64",
                                                     "num_blocks": "i32"}, {"BLOCK": BLOCK, "ALIGNED": True}))
        specs.append((f"grads[{sig}]", grads_kernel,
                      {"grad_ptr": "*fp32", "sums_ptr": "*fp32", **vec, "dn_ptr": f"*{sig}", "ds_ptr": f"*{sig}",
                       "dt_ptr": f"*{sig}", "numel": "i64"},
                      {"BLOCK": BLOCK, "ALIGNED": True, "NEED_N": True, "NEED_S": True, "NEED_T": True}))
    specs.append(("finalize", finalize_kernel, {"partial_ptr": "*fp32", "loss_ptr": "*fp32", "sums_ptr": "*fp32",
                                                "num_blocks": "i32"}, {"BLOCK": FINALIZE_BLOCK}))
    return specs
