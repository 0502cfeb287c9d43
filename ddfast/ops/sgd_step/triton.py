"""Triton kernel for sgd_step (semantics and backend contract: reference.py).

One launch, one program per block of BLOCK elements: theta' = theta - lr * g, or with momentum
v' = mu * v + g and theta' = theta - lr * v', in fp32. lr is read in-kernel from its 0-d tensor (no
host synchronisation; it may require grad). Full blocks load and store without masks (16-byte
vector accesses when every vector is 16-byte aligned); the tail block is masked. Vectors are fp16,
bf16 or fp32 (fp64 runs on reference and cpp). The backward is adjoint_step's Triton kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_common import SIGNATURE_TYPES

BLOCK = 4096
NUM_WARPS = 8


@triton.jit
def _step(theta_ptr, grad_ptr, v_ptr, out_ptr, v_out_ptr, offs, numel, lr, mu, FULL: tl.constexpr,
          HAS_VELOCITY: tl.constexpr, WITH_VELOCITY: tl.constexpr):
    mask = offs < numel
    if FULL:
        g = tl.load(grad_ptr + offs)
        theta = tl.load(theta_ptr + offs)
    else:
        g = tl.load(grad_ptr + offs, mask=mask, other=0.0)
        theta = tl.load(theta_ptr + offs, mask=mask, other=0.0)
    d = g.to(tl.float32)
    if HAS_VELOCITY:
        if FULL:
            v = tl.load(v_ptr + offs)
        else:
            v = tl.load(v_ptr + offs, mask=mask, other=0.0)
        d = mu * v.to(tl.float32) + d
    new = (theta.to(tl.float32) - lr * d).to(out_ptr.dtype.element_ty)
    if FULL:
        tl.store(out_ptr + offs, new)
        if WITH_VELOCITY:
            tl.store(v_out_ptr + offs, d.to(v_out_ptr.dtype.element_ty))
    else:
        tl.store(out_ptr + offs, new, mask=mask)
        if WITH_VELOCITY:
            tl.store(v_out_ptr + offs, d.to(v_out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def step_kernel(theta_ptr, grad_ptr, lr_ptr, v_ptr, out_ptr, v_out_ptr, numel, mu, BLOCK: tl.constexpr,
                ALIGNED: tl.constexpr, HAS_VELOCITY: tl.constexpr, WITH_VELOCITY: tl.constexpr):
    pid = tl.program_id(0)
    lr = tl.load(lr_ptr)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    full = (pid + 1).to(tl.int64) * BLOCK <= numel
    if ALIGNED and full:  # ALIGNED is a constexpr: the unmasked variant is compiled only when it is True
        _step(theta_ptr, grad_ptr, v_ptr, out_ptr, v_out_ptr, offs, numel, lr, mu, True, HAS_VELOCITY, WITH_VELOCITY)
    else:
        _step(theta_ptr, grad_ptr, v_ptr, out_ptr, v_out_ptr, offs, numel, lr, mu, False, HAS_VELOCITY,
              WITH_VELOCITY)


def forward(theta, grad, lr, velocity, momentum: float, with_velocity: bool):
    numel = theta.numel()
    out = torch.empty_like(theta)
    v_out = torch.empty_like(theta) if with_velocity else theta.new_empty(0)
    has_v = velocity is not None
    tensors = [theta, grad, out] + ([velocity] if has_v else []) + ([v_out] if with_velocity else [])
    step_kernel[(triton.cdiv(numel, BLOCK),)](
        theta, grad, lr.to(torch.float32), velocity if has_v else theta, out, v_out if with_velocity else out,
        numel, momentum, BLOCK=BLOCK, ALIGNED=all(t.data_ptr() % 16 == 0 for t in tensors), HAS_VELOCITY=has_v,
        WITH_VELOCITY=with_velocity, num_warps=NUM_WARPS)
    return out, v_out


def aot_specs():
    """(name, kernel, signature, constexprs) for ahead-of-time compile checks (test tier 6), for every
    dtype the kernel serves, plain and momentum."""
    specs = []
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        sig = SIGNATURE_TYPES[dtype]
        signature = {"theta_ptr": f"*{sig}", "grad_ptr": f"*{sig}", "lr_ptr": "*fp32", "v_ptr": f"*{sig}",
                     "out_ptr": f"*{sig}", "v_out_ptr": f"*{sig}", "numel": "i64", "mu": "fp32"}
        for has_v, with_v in ((False, False), (False, True), (True, True)):
            specs.append((f"step[{sig},velocity={has_v},momentum={with_v}]", step_kernel, signature,
                          {"BLOCK": BLOCK, "ALIGNED": True, "HAS_VELOCITY": has_v, "WITH_VELOCITY": with_v}))
    return specs
