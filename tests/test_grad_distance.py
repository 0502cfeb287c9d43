"""grad_distance on CPU: tiers 1-4 of docs/semantics.md#testing-tiers (reference vs brute force, backends vs
reference, gradcheck/opcheck/compile, bad inputs)."""

from __future__ import annotations

import pytest
import torch

import ddfast
from ddfast.ops.grad_distance import reference
from ddfast.ops.grad_distance._op import grad_distance_op

from conftest import assert_close, cpu_backends, seeded
from gd_cases import (DC_SHAPES, METRICS, ODD_SHAPES, check_compiled_matches_eager, dc_batched, dc_match_loss,
                      make_grads, make_weights)

def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


CASES = {  # name: (shapes, K, batched)
    "dc_convnet3_x10": (DC_SHAPES, 10, True),
    "dc_convnet3_single": (DC_SHAPES, 1, False),
    "odd_x3": (ODD_SHAPES, 3, True),
    "odd_k1": (ODD_SHAPES, 1, True),
    "odd_single": (ODD_SHAPES, 1, False),
}


def _inputs(case, metric, dtype, seed=0):
    shapes, k, batched = CASES[case]
    g = seeded(seed)
    return make_grads(shapes, k, dtype, g, batched), make_grads(shapes, k, dtype, g, batched), \
        make_weights(len(shapes), metric, g), batched


# Tier 1: the reference against DC's formulas, transcribed independently, in float64.
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("case", ["dc_convnet3_x10", "odd_x3", "odd_single"])
def test_reference_matches_dc_formula(case, metric):
    g_syn, g_real, weights, batched = _inputs(case, metric, torch.float64)
    got, _ = reference.forward(g_syn, g_real, metric, weights, batched)
    want = dc_batched(g_syn, g_real, metric, weights) if batched else dc_match_loss(g_syn, g_real, metric, weights)
    assert_close(got, want, torch.float64, f"{case}/{metric} forward")


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("case", ["odd_x3", "odd_single"])
def test_reference_backward_matches_autograd_of_dc_formula(case, metric):
    g_syn, g_real, weights, batched = _inputs(case, metric, torch.float64)
    syn = [t.clone().requires_grad_() for t in g_syn]
    real = [t.clone().requires_grad_() for t in g_real]
    want = dc_batched(syn, real, metric, weights) if batched else dc_match_loss(syn, real, metric, weights)
    upstream = torch.linspace(0.5, 2.0, want.numel(), dtype=torch.float64).reshape(want.shape)
    expected = torch.autograd.grad(want, syn + real, upstream, allow_unused=True)
    with ddfast.use_backend("reference"):
        syn2 = [t.clone().requires_grad_() for t in g_syn]
        real2 = [t.clone().requires_grad_() for t in g_real]
        got = torch.autograd.grad(ddfast.grad_distance(syn2, real2, metric, weights, batched), syn2 + real2, upstream)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert_close(g, torch.zeros_like(g) if e is None else e, torch.float64, f"{case}/{metric} grad of input {i}")


@pytest.mark.parametrize("backend", cpu_backends())
def test_dc_one_dimensional_tensors_contribute_zero_under_ours(backend):
    g = seeded(1)
    w_syn, w_real = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    b_syn, b_real = torch.randn(4, generator=g), torch.randn(4, generator=g)
    with ddfast.use_backend(backend):
        without = ddfast.grad_distance([w_syn], [w_real], "ours")
        with_bias = ddfast.grad_distance([w_syn, b_syn], [w_real, b_real], "ours")
        only_bias = ddfast.grad_distance([b_syn], [b_real], "ours")
    assert without.item() != 0
    assert torch.equal(with_bias, without)
    assert only_bias.item() == 0.0


# Tier 2: every CPU backend against the reference computed in float64.
@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("case", list(CASES))
def test_backend_matches_reference(backend, dtype, metric, case):
    g_syn, g_real, weights, batched = _inputs(case, metric, dtype, seed=3)
    ref_syn = [t.double().requires_grad_() for t in g_syn]
    ref_real = [t.double().requires_grad_() for t in g_real]
    with ddfast.use_backend("reference"):
        want = ddfast.grad_distance(ref_syn, ref_real, metric, weights, batched)
        upstream = torch.linspace(0.5, 2.0, want.numel(), dtype=torch.float64).reshape(want.shape)
        want_grads = torch.autograd.grad(want, ref_syn + ref_real, upstream)
    syn = [t.clone().requires_grad_() for t in g_syn]
    real = [t.clone().requires_grad_() for t in g_real]
    with ddfast.use_backend(backend):
        got = ddfast.grad_distance(syn, real, metric, weights, batched)
        got_grads = torch.autograd.grad(got, syn + real, upstream.to(dtype))
    assert got.dtype == dtype and got.shape == want.shape  # fp32/fp64: the inputs' dtype
    assert_close(got, want, dtype, f"{backend}/{case}/{metric} forward")
    assert [g.shape for g in got_grads] == [w.shape for w in want_grads]
    # The error is measured over each list's whole gradient (the op's output), not tensor by tensor:
    # a 1-element row's gradient cancels to ~eps and is meaningless in fp32 on its own.
    n = len(g_syn)
    for name, sl in (("g_syn", slice(0, n)), ("g_real", slice(n, 2 * n))):
        assert_close(flat(got_grads[sl]), flat(want_grads[sl]), dtype, f"{backend}/{case}/{metric} grad of {name}")


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("metric", METRICS)
def test_gradient_only_where_required(backend, metric):
    """DC differentiates w.r.t. g_syn only (g_real is detached): g_real gets no gradient."""
    g_syn, g_real, weights, batched = _inputs("odd_x3", metric, torch.float64, seed=4)
    syn = [t.requires_grad_() for t in g_syn]
    with ddfast.use_backend(backend):
        loss = ddfast.grad_distance(syn, g_real, metric, weights, batched).sum()
        grads = torch.autograd.grad(loss, syn)
    with ddfast.use_backend("reference"):
        want = torch.autograd.grad(ddfast.grad_distance(syn, g_real, metric, weights, batched).sum(), syn)
    for i, (g, w) in enumerate(zip(grads, want)):
        assert_close(g, w, torch.float64, f"grad of g_syn[{i}]")
    assert all(t.grad is None for t in g_real)


@pytest.mark.parametrize("backend", cpu_backends())
def test_bf16_and_fp16_accumulate_in_fp32(backend):
    g_syn, g_real, weights, batched = _inputs("dc_convnet3_x10", "ours", torch.float32, seed=5)
    want, _ = reference.forward([t.double() for t in g_syn], [t.double() for t in g_real], "ours", weights, batched)
    for dtype in (torch.bfloat16, torch.float16):
        with ddfast.use_backend(backend):
            got = ddfast.grad_distance([t.to(dtype) for t in g_syn], [t.to(dtype) for t in g_real], "ours", weights,
                                       batched)
        # Inputs are rounded to dtype first, so compare with a reference on the rounded values.
        rounded, _ = reference.forward([t.to(dtype).double() for t in g_syn], [t.to(dtype).double() for t in g_real],
                                       "ours", weights, batched)
        assert got.dtype == torch.float32  # sums of fp16 values overflow fp16
        assert_close(got, rounded, dtype, f"{backend} {dtype}")
        assert_close(want, rounded, torch.bfloat16, "rounding of inputs only")


@pytest.mark.parametrize("backend", cpu_backends())
def test_nan_propagates_but_not_from_skipped_tensors(backend):
    g_syn, g_real, _, _ = _inputs("odd_x3", "mse", torch.float64, seed=6)
    weights = [1.0] * len(g_syn)
    weights[1] = 0.0
    g_syn[1][0, 0] = float("nan")  # in a skipped tensor
    with ddfast.use_backend(backend):
        assert torch.isfinite(ddfast.grad_distance(g_syn, g_real, "mse", weights, True)).all()
        g_syn[0][2, 0, 0, 0] = float("nan")  # in an active tensor of class 2
        out = ddfast.grad_distance(g_syn, g_real, "mse", weights, True)
    assert torch.isnan(out[2]) and torch.isfinite(out[:2]).all()


@pytest.mark.parametrize("backend", cpu_backends())
def test_deterministic(backend):
    g_syn, g_real, weights, batched = _inputs("dc_convnet3_x10", "ours", torch.float32, seed=7)
    syn = [t.requires_grad_() for t in g_syn]
    with ddfast.use_backend(backend):
        runs = []
        for _ in range(2):
            out = ddfast.grad_distance(syn, g_real, "ours", weights, batched)
            runs.append((out, torch.autograd.grad(out.sum(), syn)))
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_non_contiguous_inputs():
    g = seeded(8)
    base = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)
    real = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)
    syn_t = base.transpose(1, 2)  # [3, 4, 6], not contiguous
    for backend in cpu_backends():
        with ddfast.use_backend(backend):
            got = ddfast.grad_distance([syn_t], [real], "ours", batched=True)
        want = dc_batched([syn_t.contiguous()], [real], "ours")
        assert_close(got, want, torch.float64, backend)


# Tier 3: gradcheck, opcheck, torch.compile.
@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("batched", [True, False])
def test_gradcheck(backend, metric, batched):
    shapes = [(3, 2, 2, 2), (3,), (2, 5), (2, 1, 3)]
    g = seeded(9)
    g_syn = make_grads(shapes, 2, torch.float64, g, batched)
    g_real = make_grads(shapes, 2, torch.float64, g, batched)
    weights = [1.0, 0.5, 2.0, 0.0] if metric != "cos" else [1.0, 1.0, 1.0, 0.0]
    inputs = tuple(t.requires_grad_() for t in g_syn + g_real)
    n = len(shapes)

    def fn(*tensors):
        return ddfast.grad_distance(list(tensors[:n]), list(tensors[n:]), metric, weights, batched)

    with ddfast.use_backend(backend):
        assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("batched", [True, False])
def test_opcheck(metric, batched):
    g = seeded(10)
    g_syn = [t.requires_grad_() for t in make_grads([(4, 3, 3, 3), (4,), (2, 5)], 2, torch.float32, g, batched)]
    g_real = make_grads([(4, 3, 3, 3), (4,), (2, 5)], 2, torch.float32, g, batched)
    result = torch.library.opcheck(grad_distance_op, (g_syn, g_real, metric, [1.0, 1.0, 0.0], batched))
    assert set(result.values()) == {"SUCCESS"}, result


def test_torch_compile_fullgraph():
    """Inductor on CPU would compile C++ for minutes on 2 cores; aot_eager traces the same graph
    (dynamo, fake kernels, AOT autograd) and runs the custom op's real kernels."""
    g = seeded(11)
    g_syn = [t.requires_grad_() for t in make_grads(DC_SHAPES, 2, torch.float32, g)]
    g_real = make_grads(DC_SHAPES, 2, torch.float32, g)
    check_compiled_matches_eager(g_syn, g_real, assert_close, compile_backend="aot_eager")


# Tier 4: bad inputs raise errors naming the argument.
def _pair(shapes=((3, 4), (3,)), dtype=torch.float32):
    return [torch.ones(s, dtype=dtype) for s in shapes], [torch.ones(s, dtype=dtype) for s in shapes]


@pytest.mark.parametrize("call, error, message", [
    (lambda s, r: ddfast.grad_distance(s, r[:1]), ValueError, "g_syn has 2 tensors but g_real has 1"),
    (lambda s, r: ddfast.grad_distance([], []), ValueError, "g_syn is empty"),
    (lambda s, r: ddfast.grad_distance(s[0], r[0]), TypeError, "g_syn must be a list or tuple"),
    (lambda s, r: ddfast.grad_distance([s[0], "x"], r), TypeError, r"g_syn\[1\] must be a torch.Tensor"),
    (lambda s, r: ddfast.grad_distance(s, [r[0], torch.ones(4)]), ValueError, r"g_syn\[1\] has shape \(3,\) but g_real\[1\]"),
    (lambda s, r: ddfast.grad_distance(s, [r[0].double(), r[1]]), TypeError, r"g_real\[0\] has dtype torch.float64"),
    (lambda s, r: ddfast.grad_distance(s, [r[0], r[1].to("meta")]), ValueError, r"g_real\[1\] is on meta"),
    (lambda s, r: ddfast.grad_distance(s, r, metric="cosine"), ValueError, "metric must be one of"),
    (lambda s, r: ddfast.grad_distance([t.long() for t in s], [t.long() for t in r]), TypeError, r"g_syn\[0\] has dtype torch.int64"),
    (lambda s, r: ddfast.grad_distance(s, r, weights=[1.0]), ValueError, "weights has 1 entries but there are 2"),
    (lambda s, r: ddfast.grad_distance(s, r, weights=[1.0, float("nan")]), ValueError, r"weights\[1\] must be finite"),
    (lambda s, r: ddfast.grad_distance(s, r, weights=[1.0, "a"]), TypeError, r"weights\[1\] must be a real number"),
    (lambda s, r: ddfast.grad_distance(s, r, metric="cos", weights=[1.0, 0.5]), ValueError, r"weights\[1\] is 0.5"),
    (lambda s, r: ddfast.grad_distance([torch.ones(3, 4), torch.ones(2, 4)], [torch.ones(3, 4), torch.ones(2, 4)],
                                       batched=True), ValueError, r"g_syn\[1\] has 2 classes"),
    (lambda s, r: ddfast.grad_distance([torch.ones(())], [torch.ones(())], batched=True), ValueError,
     r"g_syn\[0\] is 0-d"),
])
def test_bad_inputs(call, error, message):
    s, r = _pair()
    with pytest.raises(error, match=message):
        call(s, r)


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("metric", METRICS)
def test_custom_op_path_equals_eager_path(backend, metric):
    """ddfast.grad_distance runs an autograd.Function in eager mode and the custom op under
    torch.compile: both must give the same values and gradients."""
    g_syn, g_real, weights, batched = _inputs("odd_x3", metric, torch.float64, seed=12)
    syn_a = [t.clone().requires_grad_() for t in g_syn]
    syn_b = [t.clone().requires_grad_() for t in g_syn]
    with ddfast.use_backend(backend):
        eager = ddfast.grad_distance(syn_a, g_real, metric, weights, batched)
        via_op = grad_distance_op(syn_b, g_real, metric, weights, batched)[0]
        ga = torch.autograd.grad(eager.sum(), syn_a)
        gb = torch.autograd.grad(via_op.sum(), syn_b)
    assert torch.equal(eager, via_op)
    assert all(torch.equal(a, b) for a, b in zip(ga, gb))
