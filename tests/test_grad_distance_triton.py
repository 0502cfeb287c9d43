"""Tier 5: grad_distance's Triton kernels against the reference, on tiny odd shapes (CPU tensors
under TRITON_INTERPRET=1, CUDA tensors on a GPU): non-power-of-two rows, masked tails, rows longer
than one block, K=1, a skipped tensor, and tensors that do not start on 16-byte boundaries."""

from __future__ import annotations

import pytest
import torch

import ddfast

from conftest import HAS_CUDA, assert_close, seeded
from gd_cases import METRICS, make_weights

pytestmark = [pytest.mark.triton, pytest.mark.validates("grad_distance", "triton")]
DEVICE = "cuda" if HAS_CUDA else "cpu"
SHAPES = [(5, 3, 3, 3), (5,), (3, 2, 5), (2, 1500), (1, 1), ()]


def _unaligned(t: torch.Tensor) -> torch.Tensor:
    """The same values in storage that starts one element past a 16-byte boundary."""
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    out = buf[1:].view(t.shape)
    out.copy_(t)
    return out


def _case(metric, dtype, classes, aligned, seed):
    g = seeded(seed)
    lead = (classes,) if classes else ()
    g_syn, g_real = ([torch.randn((*lead, *s), generator=g, dtype=torch.float64).to(dtype=dtype, device=DEVICE)
                      for s in SHAPES] for _ in range(2))
    if not aligned:
        g_syn, g_real = [_unaligned(t) for t in g_syn], [_unaligned(t) for t in g_real]
    return g_syn, g_real, make_weights(len(SHAPES), metric, g)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("classes, aligned", [(3, True), (0, True), (1, False)])
def test_triton_matches_reference(metric, dtype, classes, aligned):
    g_syn, g_real, weights = _case(metric, dtype, classes, aligned, seed=classes + 10 * aligned)
    batched = classes > 0
    ref_syn = [t.double().requires_grad_() for t in g_syn]
    ref_real = [t.double().requires_grad_() for t in g_real]
    with ddfast.use_backend("reference"):
        want = ddfast.grad_distance(ref_syn, ref_real, metric, weights, batched)
        upstream = torch.linspace(0.5, 2.0, want.numel(), dtype=torch.float64, device=DEVICE).reshape(want.shape)
        want_grads = torch.autograd.grad(want, ref_syn + ref_real, upstream)
    syn = [t.detach().requires_grad_() for t in g_syn]
    real = [t.detach().requires_grad_() for t in g_real]
    with ddfast.use_backend("triton"):
        got = ddfast.grad_distance(syn, real, metric, weights, batched)
        got_grads = torch.autograd.grad(got, syn + real, upstream.to(got.dtype))
    assert_close(got, want, dtype, f"triton {metric} forward")
    n = len(SHAPES)
    for name, sl in (("g_syn", slice(0, n)), ("g_real", slice(n, 2 * n))):
        assert_close(torch.cat([g.reshape(-1) for g in got_grads[sl]]),
                     torch.cat([g.reshape(-1) for g in want_grads[sl]]), dtype, f"triton {metric} grad of {name}")


def test_triton_skipped_tensor_gets_exact_zero_gradient_even_with_nan():
    g_syn, g_real, _ = _case("ours", torch.float32, 2, True, seed=5)
    g_syn[1][0, 0] = float("nan")  # 1-D: not in the 'ours' formula
    syn = [t.requires_grad_() for t in g_syn]
    with ddfast.use_backend("triton"):
        out = ddfast.grad_distance(syn, g_real, "ours", batched=True)
        grads = torch.autograd.grad(out.sum(), syn)
    assert torch.isfinite(out).all()
    assert torch.equal(grads[1], torch.zeros_like(grads[1]))


def test_triton_deterministic():
    g_syn, g_real, weights = _case("cos", torch.float32, 3, True, seed=6)
    syn = [t.requires_grad_() for t in g_syn]
    with ddfast.use_backend("triton"):
        first = ddfast.grad_distance(syn, g_real, "cos", weights, True)
        again = ddfast.grad_distance(syn, g_real, "cos", weights, True)
    assert torch.equal(first, again)
