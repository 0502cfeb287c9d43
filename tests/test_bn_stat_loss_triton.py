"""Tier 5 (and the GPU tier): bn_stat_loss's Triton kernels against the reference. Under
TRITON_INTERPRET=1 on tiny odd shapes (CPU tensors): several layers of different C and run length,
non-power-of-two sizes, batch 1, [B, C] and [B, C, L] inputs, channels cut into several pieces,
tensors that do not start on 16-byte boundaries, and both the 16-byte-vector and the element-wise
paths. On a GPU, tests marked ``gpu`` add ResNet-18-sized activations in fp32/fp16/bf16/fp64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ddfast
from ddfast.models import get_network
from ddfast.ops.bn_stat_loss import triton as bn_triton
from ddfast.ops.bn_stat_loss._op import bn_stat_loss_op
from ddfast.ops.bn_stat_loss.plan import plan_for

from conftest import HAS_CUDA, assert_close, seeded

pytestmark = [pytest.mark.triton, pytest.mark.validates("bn_stat_loss", "triton")]
DEVICE = "cuda" if HAS_CUDA else "cpu"
# Run lengths 9, 1, 5, 4, 3000 (a channel of 3 runs of 3000 is cut into 2 pieces), batch 1 included.
ODD = [(3, 5, 3, 3), (2, 7), (2, 3, 5), (1, 4, 2, 2), (3, 2, 3000)]
# Every run length a multiple of 4: the 16-byte-vector path for fp32/fp64 when aligned.
VECTOR = [(3, 5, 4, 4), (2, 3, 8), (1, 6, 2, 6), (3, 2, 4000)]
RESNET18_BN = [(64, 32)] * 5 + [(128, 16)] * 5 + [(256, 8)] * 5 + [(512, 4)] * 5


def _unaligned(t: torch.Tensor) -> torch.Tensor:
    """The same values in storage that starts one element past a 16-byte boundary."""
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    return buf[1:].view(t.shape).copy_(t)


def _case(shapes, dtype, seed, aligned=True, mean=0.0, stats_dtype=None):
    g = seeded(seed)
    acts, means, variances = [], [], []
    for shape in shapes:
        c = shape[1]
        view = (1, c) + (1,) * (len(shape) - 2)
        center = mean + torch.randn(c, generator=g, dtype=torch.float64)
        spread = 0.5 + torch.rand(c, generator=g, dtype=torch.float64)
        a = (center.reshape(view) + spread.reshape(view) * torch.randn(shape, generator=g, dtype=torch.float64))
        a = a.to(dtype=dtype, device=DEVICE)
        acts.append(a if aligned else _unaligned(a))
        sd = stats_dtype or dtype
        means.append((center + 0.3 * torch.randn(c, generator=g, dtype=torch.float64)).to(sd).to(DEVICE))
        variances.append((spread.square() * (0.5 + torch.rand(c, generator=g, dtype=torch.float64))).to(sd).to(DEVICE))
    weights = [10.0] + [1.0 + 0.25 * i for i in range(len(shapes) - 1)]
    return acts, means, variances, weights


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def _check(acts, means, variances, weights, dtype, stats_grad=False, what=""):
    n = len(acts)
    ref = [a.detach().double().requires_grad_() for a in acts]
    ref_m = [t.detach().double().requires_grad_(stats_grad) for t in means]
    ref_v = [t.detach().double().requires_grad_(stats_grad) for t in variances]
    with ddfast.use_backend("reference"):
        want = ddfast.bn_stat_loss(ref, ref_m, ref_v, weights)
        want_grads = torch.autograd.grad(want * 0.5, ref + (ref_m + ref_v if stats_grad else []))
    xs = [a.detach().requires_grad_() for a in acts]
    ms = [t.detach().requires_grad_(stats_grad) for t in means]
    vs = [t.detach().requires_grad_(stats_grad) for t in variances]
    with ddfast.use_backend("triton"):
        got = ddfast.bn_stat_loss(xs, ms, vs, weights)
        got_grads = torch.autograd.grad(got * 0.5, xs + (ms + vs if stats_grad else []))
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32) and got.device == acts[0].device
    assert all(g.dtype == dtype for g in got_grads[:n])
    assert_close(got, want, dtype, f"{what} loss")
    assert_close(_flat(got_grads[:n]), _flat(want_grads[:n]), dtype, f"{what} gradient of the activations")
    if stats_grad:
        assert_close(_flat(got_grads[n:]), _flat(want_grads[n:]), dtype, f"{what} gradient of the running statistics")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shapes, aligned, vector", [(ODD, True, False), (VECTOR, True, True), (VECTOR, False, False)],
                         ids=["odd", "vector", "vector_shapes_unaligned"])
def test_triton_matches_reference(shapes, aligned, vector, dtype):
    acts, means, variances, weights = _case(shapes, dtype, seed=1, aligned=aligned)
    if DEVICE == "cpu":  # the interpreter's CPU tensors: check which path runs
        assert bn_triton._vector(acts, bn_triton.element_offsets(acts)[1])[0] == vector
    assert max(plan_for(acts, weights).layers[:, 4]) > 1  # some channel is cut into several pieces
    _check(acts, means, variances, weights, dtype, stats_grad=dtype == torch.float64, what=f"{dtype}")


def test_triton_fp16_with_fp32_running_statistics():
    acts, means, variances, weights = _case(ODD, torch.float16, seed=2, stats_dtype=torch.float32)
    _check(acts, means, variances, weights, torch.float16, what="fp16")


def test_triton_large_mean_fp32():
    acts, means, variances, weights = _case(VECTOR[:3], torch.float32, seed=3, mean=100.0)
    _check(acts, means, variances, weights, torch.float32, what="mean 100")


def test_triton_zero_norm_subgradient_and_determinism():
    base = torch.tensor([1.0, 3.0, 1.0, 3.0, 1.0, 3.0])
    # [C, B, H] -> [B, C, H, 1]: channel means 2, -4, 7 and variances 1, 4, 1, exactly.
    a = torch.stack([base, -2 * base, base + 5]).reshape(3, 2, 3).permute(1, 0, 2)[..., None].contiguous().to(DEVICE)
    mean = a.double().mean((0, 2, 3)).float()
    var = a.double().var((0, 2, 3), correction=0).float()
    assert mean.tolist() == [2.0, -4.0, 7.0] and var.tolist() == [1.0, 4.0, 1.0]
    x = a.clone().requires_grad_()
    leaves = [mean.clone().requires_grad_(), (var + 0.5).requires_grad_()]
    with ddfast.use_backend("triton"):
        out = ddfast.bn_stat_loss([x], [leaves[0]], [leaves[1]])
        grads = torch.autograd.grad(out, [x, *leaves])
        again = ddfast.bn_stat_loss([x], [leaves[0]], [leaves[1]])
    assert torch.equal(out, again)
    assert torch.isfinite(grads[0]).all() and torch.count_nonzero(grads[1]) == 0  # ||dm|| = 0: subgradient 0
    with ddfast.use_backend("reference"):
        want = torch.autograd.grad(ddfast.bn_stat_loss([x], [leaves[0]], [leaves[1]]), [x, *leaves])
    for i, (g, w) in enumerate(zip(grads, want)):
        assert_close(g, w, torch.float32, f"grad {i}")


# GPU tier: realistic shapes on a CUDA device (skipped without one).
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("aligned", [True, False])
def test_gpu_resnet18_activations(dtype, aligned):
    shapes = [(100, c, hw, hw) for c, hw in RESNET18_BN]
    stats_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    acts, means, variances, weights = _case(shapes, dtype, seed=4, aligned=aligned, stats_dtype=stats_dtype)
    _check(acts, means, variances, weights, dtype, stats_grad=dtype != torch.bfloat16, what=f"resnet18 {dtype}")


@pytest.mark.gpu
def test_gpu_bn_stat_hooks_resnet18():
    torch.manual_seed(5)
    net = get_network("ResNet18", 3, 10, (32, 32)).to(DEVICE)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    net.eval()
    images = torch.randn(32, 3, 32, 32, generator=seeded(6)).to(DEVICE)
    results = {}
    for backend in ("reference", "triton"):
        x = images.clone().requires_grad_()
        with ddfast.use_backend(backend), ddfast.BNStatHooks(net) as bn:
            net(x)
            loss = bn.loss()
            results[backend] = (loss, torch.autograd.grad(loss, x)[0])
    assert_close(results["triton"][0], results["reference"][0], torch.float32, "loss")
    assert_close(results["triton"][1], results["reference"][1], torch.float32, "image gradient")


@pytest.mark.gpu
def test_gpu_deterministic_opcheck_and_compile():
    acts, means, variances, weights = _case([(64, c, hw, hw) for c, hw in RESNET18_BN[::5]], torch.float32, seed=7)
    xs = [a.requires_grad_() for a in acts]
    with ddfast.use_backend("triton"):
        runs = []
        for _ in range(2):
            out = ddfast.bn_stat_loss(xs, means, variances, weights)
            runs.append((out, torch.autograd.grad(out, xs)))
        assert torch.equal(runs[0][0], runs[1][0])
        assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
        result = torch.library.opcheck(bn_stat_loss_op, (xs, means, variances, weights))
        assert set(result.values()) == {"SUCCESS"}, result
        compiled = torch.compile(lambda a: ddfast.bn_stat_loss(a, means, variances, weights), fullgraph=True)
        got = compiled(xs)
        assert_close(got, runs[0][0], torch.float32, "compiled")


def test_triton_gradient_of_running_statistics_only():
    acts, means, variances, weights = _case(ODD, torch.float32, seed=8)
    vs = [t.clone().requires_grad_() for t in variances]
    with ddfast.use_backend("triton"):
        got = torch.autograd.grad(ddfast.bn_stat_loss(acts, means, vs, weights), vs)
    ref = [t.double().requires_grad_() for t in variances]
    with ddfast.use_backend("reference"):
        want = torch.autograd.grad(ddfast.bn_stat_loss([a.double() for a in acts], [m.double() for m in means], ref,
                                                       weights), ref)
    assert_close(_flat(got), _flat(want), torch.float32, "grad of running_vars")
