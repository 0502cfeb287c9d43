"""GPU tier: every GPU backend against the reference on realistic shapes in fp32/fp16/bf16/fp64,
plus determinism, unaligned inputs, opcheck and torch.compile on CUDA. Tests marked
``validates(op, backend)`` decide, with the Triton tests, what scripts/gpu_validate.py records in
ddfast/gpu_validated.json."""

from __future__ import annotations

import pytest
import torch

import ddfast
from ddfast.models import get_network
from ddfast.ops.grad_distance._op import grad_distance_op

from conftest import assert_close, seeded
from gd_cases import DC_SHAPES, METRICS, check_compiled_matches_eager, make_weights

pytestmark = pytest.mark.gpu

RESNET18_SHAPES = [tuple(p.shape) for p in get_network("ResNet18", 3, 10, (32, 32)).parameters()]
GPU_KERNELS = [pytest.param(name, marks=pytest.mark.validates("grad_distance", name), id=name)
               for name in ("cuda", "triton")]
CASES = {"convnet3_x10": (DC_SHAPES, 10), "resnet18_x1": (RESNET18_SHAPES, 0)}


def _grads(shapes, classes, dtype, generator, offset=False):
    lead = (classes,) if classes else ()
    out = []
    for s in shapes:
        t = torch.randn((*lead, *s), generator=generator, dtype=torch.float64).to(dtype=dtype, device="cuda")
        if offset:  # storage starting one element past a 16-byte boundary
            buf = torch.empty(t.numel() + 1, dtype=dtype, device="cuda")
            t = buf[1:].view(t.shape).copy_(t)
        out.append(t)
    return out


def _check(backend, shapes, classes, dtype, metric, offset=False, seed=0):
    g = seeded(seed)
    g_syn, g_real = _grads(shapes, classes, dtype, g, offset), _grads(shapes, classes, dtype, g, offset)
    weights = make_weights(len(shapes), metric, g)
    batched = classes > 0
    ref_syn = [t.double().requires_grad_() for t in g_syn]
    ref_real = [t.double().requires_grad_() for t in g_real]
    # fp16 gradients of 'cos' over 11M elements are ~1e-7, under fp16's normal range: scale the
    # upstream gradient as a GradScaler would in fp16 training.
    loss_scale = 2.0 ** 12 if dtype == torch.float16 and metric == "cos" else 1.0
    with ddfast.use_backend("reference"):
        want = ddfast.grad_distance(ref_syn, ref_real, metric, weights, batched)
        upstream = torch.linspace(0.5, 2.0, want.numel(), dtype=torch.float64, device="cuda").reshape(want.shape)
        want_grads = torch.autograd.grad(want, ref_syn + ref_real, upstream * loss_scale)
    syn = [t.detach().requires_grad_() for t in g_syn]
    real = [t.detach().requires_grad_() for t in g_real]
    with ddfast.use_backend(backend):
        got = ddfast.grad_distance(syn, real, metric, weights, batched)
        got_grads = torch.autograd.grad(got, syn + real, upstream.to(got.dtype) * loss_scale)
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32) and got.is_cuda
    assert all(x.dtype == dtype for x in got_grads)
    assert_close(got, want, dtype, f"{backend} {metric} forward")
    n = len(shapes)
    for name, sl in (("g_syn", slice(0, n)), ("g_real", slice(n, 2 * n))):
        assert_close(torch.cat([x.reshape(-1) for x in got_grads[sl]]),
                     torch.cat([x.reshape(-1) for x in want_grads[sl]]), dtype, f"{backend} {metric} grad of {name}")


@pytest.mark.parametrize("backend", GPU_KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("case", list(CASES))
def test_gpu_backend_matches_reference(backend, dtype, metric, case):
    shapes, classes = CASES[case]
    _check(backend, shapes, classes, dtype, metric)


@pytest.mark.parametrize("backend", GPU_KERNELS)
@pytest.mark.parametrize("metric", METRICS)
def test_gpu_unaligned_inputs(backend, metric):
    _check(backend, DC_SHAPES, 3, torch.float32, metric, offset=True, seed=1)


@pytest.mark.parametrize("backend", GPU_KERNELS)
def test_gpu_deterministic(backend):
    g = seeded(2)
    g_syn = [t.requires_grad_() for t in _grads(RESNET18_SHAPES, 2, torch.float32, g)]
    g_real = _grads(RESNET18_SHAPES, 2, torch.float32, g)
    with ddfast.use_backend(backend):
        runs = []
        for _ in range(3):
            out = ddfast.grad_distance(g_syn, g_real, "ours", batched=True)
            runs.append((out, torch.autograd.grad(out.sum(), g_syn)))
    for out, grads in runs[1:]:
        assert torch.equal(out, runs[0][0])
        assert all(torch.equal(a, b) for a, b in zip(grads, runs[0][1]))


@pytest.mark.parametrize("backend", GPU_KERNELS)
def test_gpu_opcheck(backend):
    g = seeded(3)
    g_syn = [t.requires_grad_() for t in _grads([(8, 3, 3, 3), (8,), (4, 9)], 2, torch.float32, g)]
    g_real = _grads([(8, 3, 3, 3), (8,), (4, 9)], 2, torch.float32, g)
    with ddfast.use_backend(backend):
        result = torch.library.opcheck(grad_distance_op, (g_syn, g_real, "ours", [1.0, 1.0, 1.0], True))
    assert set(result.values()) == {"SUCCESS"}, result


@pytest.mark.parametrize("backend", GPU_KERNELS)
def test_gpu_torch_compile_fullgraph(backend):
    g = seeded(4)
    g_syn = [t.requires_grad_() for t in _grads(DC_SHAPES, 2, torch.float32, g)]
    g_real = _grads(DC_SHAPES, 2, torch.float32, g)
    with ddfast.use_backend(backend):
        check_compiled_matches_eager(g_syn, g_real, assert_close)


def test_gpu_per_class_gradients_vmap_matches_loop():
    # In fp64, so that cuDNN's choice of algorithms (and TF32) cannot make the two differ.
    torch.manual_seed(0)
    net = get_network("ConvNet", 3, 10, (32, 32)).cuda().double()
    g = seeded(5)
    x_real = torch.randn(10, 16, 3, 32, 32, generator=g, dtype=torch.float64).cuda()
    x_syn = torch.randn(10, 4, 3, 32, 32, generator=g, dtype=torch.float64).cuda().requires_grad_()
    results = {}
    for strategy in ("loop", "vmap"):
        g_real = ddfast.per_class_gradients(net, None, x_real, None, 10, create_graph=False, strategy=strategy)
        g_syn = ddfast.per_class_gradients(net, None, x_syn, None, 10, strategy=strategy)
        loss = ddfast.grad_distance(g_syn, g_real, batched=True).sum()
        results[strategy] = (torch.cat([t.reshape(-1) for t in g_syn]), torch.autograd.grad(loss, x_syn)[0])
    assert_close(results["vmap"][0], results["loop"][0], torch.float64, "per-class gradients")
    assert_close(results["vmap"][1], results["loop"][1], torch.float64, "d loss / d x_syn")
