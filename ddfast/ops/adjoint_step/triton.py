"""Triton kernels for adjoint_step (semantics and backend contract: reference.py); sgd_step's backward
runs them too.

Two launches: ``step`` (one program per block of BLOCK elements writes u = nu - lr * lam and, in
momentum form, nu_next = mu * u, and the block's partial sum of lam * direction: one pass, no
atomics) and ``finalize`` (one program adds the partials in block order and writes -sum:
deterministic). lr is read in-kernel (no host synchronisation). Full blocks load and store without
masks (16-byte vector accesses when every vector is 16-byte aligned); the tail block is masked.
Vectors are fp16, bf16 or fp32, the dot product in fp32 (fp64 runs on reference and cpp).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_common import SIGNATURE_TYPES

BLOCK = 4096
FINALIZE_BLOCK = 1024
NUM_WARPS = 8


@triton.jit
def _block(lam_ptr, nu_ptr, dir_ptr, u_ptr, nu_out_ptr, offs, numel, lr, mu, FULL: tl.constexpr,
           HAS_NU: tl.constexpr, HAS_DIRECTION: tl.constexpr, WITH_VELOCITY: tl.constexpr):
    """Writes u (and nu_next) for this block; returns its partial sum of lam * direction."""
    mask = offs < numel
    if FULL:
        lam = tl.load(lam_ptr + offs).to(tl.float32)
    else:
        lam = tl.load(lam_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = -(lr * lam)
    if HAS_NU:
        if FULL:
            u = tl.load(nu_ptr + offs).to(tl.float32) - lr * lam
        else:
            u = tl.load(nu_ptr + offs, mask=mask, other=0.0).to(tl.float32) - lr * lam
    if FULL:
        tl.store(u_ptr + offs, u.to(u_ptr.dtype.element_ty))
        if WITH_VELOCITY:
            tl.store(nu_out_ptr + offs, (mu * u).to(nu_out_ptr.dtype.element_ty))
    else:
        tl.store(u_ptr + offs, u.to(u_ptr.dtype.element_ty), mask=mask)
        if WITH_VELOCITY:
            tl.store(nu_out_ptr + offs, (mu * u).to(nu_out_ptr.dtype.element_ty), mask=mask)
    dot = 0.0
    if HAS_DIRECTION:
        if FULL:
            d = tl.load(dir_ptr + offs).to(tl.float32)
        else:
            d = tl.load(dir_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dot = tl.sum(lam * d)
    return dot


@triton.jit
def step_kernel(lam_ptr, nu_ptr, dir_ptr, lr_ptr, u_ptr, nu_out_ptr, partial_ptr, numel, mu, BLOCK: tl.constexpr,
                ALIGNED: tl.constexpr, HAS_NU: tl.constexpr, HAS_DIRECTION: tl.constexpr,
                WITH_VELOCITY: tl.constexpr):
    pid = tl.program_id(0)
    lr = tl.load(lr_ptr)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    full = (pid + 1).to(tl.int64) * BLOCK <= numel
    if ALIGNED and full:  # ALIGNED is a constexpr: the unmasked variant is compiled only when it is True
        dot = _block(lam_ptr, nu_ptr, dir_ptr, u_ptr, nu_out_ptr, offs, numel, lr, mu, True, HAS_NU, HAS_DIRECTION,
                     WITH_VELOCITY)
    else:
        dot = _block(lam_ptr, nu_ptr, dir_ptr, u_ptr, nu_out_ptr, offs, numel, lr, mu, False, HAS_NU, HAS_DIRECTION,
                     WITH_VELOCITY)
    if HAS_DIRECTION:
        tl.store(partial_ptr + pid, dot)


@triton.jit
def finalize_kernel(partial_ptr, out_ptr, num_blocks, BLOCK: tl.constexpr):
    """One program: minus the sum of the partials, added in block order."""
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, num_blocks, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(partial_ptr + offs, mask=offs < num_blocks, other=0.0)
    tl.store(out_ptr, -tl.sum(acc))


def forward(lam, nu, direction, lr, momentum: float, with_velocity: bool):
    numel = lam.numel()
    num_blocks = triton.cdiv(numel, BLOCK)
    u = torch.empty_like(lam)
    nu_next = torch.empty_like(lam) if with_velocity else lam.new_empty(0)
    has_nu, has_dir = nu is not None, direction is not None
    partial = lam.new_empty(num_blocks if has_dir else 1, dtype=torch.float32)
    tensors = [lam, u] + [t for t in (nu, direction) if t is not None] + ([nu_next] if with_velocity else [])
    step_kernel[(num_blocks,)](
        lam, nu if has_nu else lam, direction if has_dir else lam, lr.to(torch.float32), u,
        nu_next if with_velocity else u, partial, numel, momentum, BLOCK=BLOCK,
        ALIGNED=all(t.data_ptr() % 16 == 0 for t in tensors), HAS_NU=has_nu, HAS_DIRECTION=has_dir,
        WITH_VELOCITY=with_velocity, num_warps=NUM_WARPS)
    if has_dir:
        dlr = lam.new_empty((), dtype=torch.float32)
        finalize_kernel[(1,)](partial, dlr, num_blocks, BLOCK=FINALIZE_BLOCK, num_warps=4)
    else:
        dlr = lam.new_zeros((), dtype=torch.float32)
    return u, dlr, nu_next


def aot_specs():
    """(name, kernel, signature, constexprs) for ahead-of-time compile checks (test tier 6), for every
    dtype the kernels serve, plain and momentum form."""
    specs = []
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        sig = SIGNATURE_TYPES[dtype]
        signature = {"lam_ptr": f"*{sig}", "nu_ptr": f"*{sig}", "dir_ptr": f"*{sig}", "lr_ptr": "*fp32",
                     "u_ptr": f"*{sig}", "nu_out_ptr": f"*{sig}", "partial_ptr": "*fp32", "numel": "i64",
                     "mu": "fp32"}
        for has_nu, with_v in ((False, False), (True, False), (True, True)):
            specs.append((f"step[{sig},nu={has_nu},momentum={with_v}]", step_kernel, signature,
                          {"BLOCK": BLOCK, "ALIGNED": True, "HAS_NU": has_nu, "HAS_DIRECTION": True,
                           "WITH_VELOCITY": with_v}))
    specs.append(("finalize", finalize_kernel, {"partial_ptr": "*fp32", "out_ptr": "*fp32", "num_blocks": "i32"},
                  {"BLOCK": FINALIZE_BLOCK}))
    return specs
