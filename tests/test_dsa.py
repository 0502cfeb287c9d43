"""DSA (ddfast.dsa, dsa_sample, dsa_augment). Tier 1: the reference against the
independent per-image transcription of DC's families in dsa_cases (affine_grid + grid_sample built per
image, slicing for crop and cutout), and bilinear sampling against its align_corners=False definition;
tier 2: cpp against the reference (fp32, fp64) on DC shapes; tier 3: gradcheck, opcheck, torch.compile;
tier 4: bad inputs. Plus sampling, Siamese sharing, groups and ddfast.unroll."""

from __future__ import annotations

import math

import pytest
import torch

import ddfast
from ddfast.ops.dsa import plan as dsa_plan
from ddfast.ops.dsa._op import dsa_pass_op
from ddfast.ops.dsa.params import DSAParams, IDENTITY

from conftest import assert_close, cpu_backends, seeded
from dsa_cases import bilinear_brute, brute, theta_of

FAMILIES = ["color", "crop", "cutout", "flip", "scale", "rotate"]
DC = "color_crop_cutout_flip_scale_rotate"


def _images(n, c, h, w, seed=0, dtype=torch.float64):
    return torch.randn(n, c, h, w, generator=seeded(seed), dtype=torch.float64).to(dtype)


def _params(n, strategy, seed=1, **kw):
    kw.setdefault("mode", "M")
    kw.setdefault("shared", False)
    return ddfast.dsa_sample(n, strategy, seeded(seed), **kw)


def _run(backend, x, params, group_index=None, compose=False, upstream_seed=5):
    x = x.detach().clone().requires_grad_()
    with ddfast.use_backend(backend):
        y = ddfast.dsa(x, params, group_index, compose)
    up = torch.randn(y.shape, generator=seeded(upstream_seed), dtype=torch.float64).to(y.dtype)
    (dx,) = torch.autograd.grad(y, x, up)
    return y, dx


# --- tier 1: reference vs brute force ------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (2, 3, 32, 32)], ids=["28x28x1", "32x32x3"])
def test_each_family_matches_dc_transcription(family, shape):
    x = _images(*shape)
    params = _params(shape[0], family, seed=len(family))
    with ddfast.use_backend("reference"):
        got = ddfast.dsa(x, params)
    assert_close(got, brute(x, params.table, [family]), torch.float64, family)


@pytest.mark.parametrize("compose", [False, True])
def test_m_mode_sequence_matches_dc(compose):
    x = _images(3, 3, 32, 32, seed=2)
    params = _params(3, DC, seed=3)
    with ddfast.use_backend("reference"):
        got = ddfast.dsa(x, params, compose=compose)
    assert_close(got, brute(x, params.table, DC.split("_"), compose=compose), torch.float64, f"compose={compose}")


def test_64x64_and_odd_orders():
    x = _images(2, 3, 64, 64, seed=4)
    for strategy in (DC, "rotate_crop_color_flip", "scale_cutout_crop", "flip_crop_rotate_scale"):
        params = _params(2, strategy, seed=6)
        with ddfast.use_backend("reference"):
            got = ddfast.dsa(x, params)
        assert_close(got, brute(x, params.table, strategy.split("_")), torch.float64, strategy)


def test_bilinear_convention_is_align_corners_false():
    img = _images(1, 2, 5, 7, seed=8)[0]
    for family, col, value in (("scale", 9, 1.13), ("rotate", 11, 0.21)):
        row = list(IDENTITY)
        row[col] = value
        if family == "scale":
            row[10] = 0.87
        table = torch.tensor([row])
        want = bilinear_brute(img, theta_of(family, table[0].double().tolist()))
        assert_close(brute(img[None], table, [family])[0], want, torch.float64, "grid_sample vs definition")
        params = DSAParams(table, (family,), "shared")
        for backend in cpu_backends():
            with ddfast.use_backend(backend):
                assert_close(ddfast.dsa(img[None], params)[0], want, torch.float64, f"{backend} {family}")


def test_integer_families_cover_dc_ranges():
    """Crop shifts take every value of [-s, s], cutout offsets every value of DC's randint range."""
    params = _params(4000, "crop_cutout", seed=9)
    from ddfast.ops.dsa.reference import crop_shifts, cutout_starts
    dh, dw = crop_shifts(params.table, [4, 4, 16, 16])
    assert set(dh.tolist()) == set(range(-4, 5)) == set(dw.tolist())
    oh, _ = cutout_starts(params.table, 32, 32, [4, 4, 16, 16])
    assert set((oh + 8).tolist()) == set(range(0, 33))  # DC: randint(0, 32 + 1 - 16 % 2)


def test_sampling_distributions_and_global_rng_untouched():
    state = torch.get_rng_state()
    t = _params(20000, DC, seed=10).table
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(t, _params(20000, DC, seed=10).table)
    assert -0.5 <= t[:, 0].min() and t[:, 0].max() < 0.5
    assert 0 <= t[:, 1].min() and t[:, 1].max() < 2.0
    assert 0.5 <= t[:, 2].min() and t[:, 2].max() < 1.5
    assert abs(t[:, 8].mean().item() - 0.5) < 0.02 and set(t[:, 8].tolist()) == {0.0, 1.0}
    assert 1 / 1.2 - 1e-6 <= t[:, 9:11].min() and t[:, 9:11].max() <= 1.2 + 1e-6
    assert t[:, 11].abs().max() <= math.radians(15) + 1e-6 and t[:, 11].abs().max() > math.radians(14.9)
    assert torch.all(t[:, 7] == 1)


def test_s_mode_draws_one_family_per_call():
    seen = set()
    for seed in range(40):
        p = ddfast.dsa_sample(8, DC, seeded(seed), mode="S", shared=False)
        assert len(p.families) == 1 and p.table.shape == (8, 12)
        seen.add(p.families[0])
    assert seen == set(FAMILIES)


def test_s_mode_groups_apply_their_own_family():
    x = _images(6, 3, 16, 16, seed=11)
    p = ddfast.dsa_sample(6, DC, seeded(12), mode="S", groups=4)
    group = torch.tensor([0, 1, 2, 3, 1, 0])
    for backend in cpu_backends():
        with ddfast.use_backend(backend):
            got = ddfast.dsa(x, p, group)
        assert_close(got, brute(x, p.table, p.families, row_of=lambda n: int(group[n])), torch.float64, backend)
    # a group's row is the identity outside the columns of the one family its draw picked
    from ddfast.ops.dsa.params import COLUMNS
    ident = torch.tensor(IDENTITY)
    for k in range(4):
        changed = set((p.table[k] != ident).nonzero().flatten().tolist())
        assert any(changed <= set(COLUMNS[f]) for f in p.families), (k, changed)


def test_siamese_shared_set_on_batches_of_different_size():
    real, syn = _images(7, 3, 32, 32, seed=13), _images(2, 3, 32, 32, seed=14)
    syn[1] = real[4]
    p = ddfast.dsa_sample(0, DC, seeded(15), mode="M", shared=True)
    for backend in cpu_backends():
        with ddfast.use_backend(backend):
            a, b = ddfast.dsa(real, p), ddfast.dsa(syn, p)
        assert torch.equal(a[4], b[1])
        assert_close(b, brute(syn, p.table, DC.split("_")), torch.float64, backend)


# --- tier 2: cpp vs reference --------------------------------------------------------------------------------

CPP = [b for b in cpu_backends() if b != "reference"]


@pytest.mark.parametrize("backend", CPP)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", [(256, 3, 32, 32, DC, False), (256, 3, 32, 32, DC, True), (1, 1, 28, 28, DC, False),
                                  (4, 3, 64, 64, DC, False), (3, 2, 13, 9, "rotate_crop_color_flip", False),
                                  (3, 1, 11, 16, "scale_cutout_crop_rotate", True)],
                         ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}x{c[3]}-{c[4][:6]}-{c[5]}" if isinstance(c, tuple) else c)
def test_cpp_matches_reference(backend, dtype, case):
    n, c, h, w, strategy, compose = case
    x = _images(n, c, h, w, seed=h, dtype=dtype)
    params = _params(n, strategy, seed=w)
    want = _run("reference", x.double(), params, compose=compose)
    got = _run(backend, x, params, compose=compose)
    for g, r, what in zip(got, want, ("out", "dx")):
        assert g.dtype == dtype
        assert_close(g, r, dtype, f"{backend} {what}")


@pytest.mark.parametrize("backend", CPP)
@pytest.mark.parametrize("family", FAMILIES)
def test_cpp_each_family_s_mode_shared(backend, family):
    x = _images(5, 3, 28, 28, seed=3)
    params = _params(5, family, seed=21, shared=True, mode="S")
    for g, r in zip(_run(backend, x, params), _run("reference", x, params)):
        assert_close(g, r, torch.float64, family)


@pytest.mark.parametrize("backend", CPP)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("strategy", ["crop_flip", "flip_cutout_crop", "color_crop_cutout_flip", "crop_cutout_flip_scale",
                                      "color_flip_rotate", "cutout_scale_rotate"])
def test_cpp_every_placement(backend, dtype, channels, strategy):
    """Per-sample sets on many small images with large crop shifts: every shift (past the edges), flip and
    cutout position, so the cpp paths all run (row copies: contiguous, reversed, with a cutout hole, all
    fill; bilinear taps in the zero border), forward and backward, against the reference."""
    n = 40
    x = _images(n, channels, 9, 11, seed=60, dtype=dtype)
    params = _params(n, strategy, seed=61, param=ddfast.DSAConfig(ratio_crop_pad=0.6, ratio_scale=2.0))
    want = _run("reference", x.double(), params, compose="scale_rotate" in strategy)
    got = _run(backend, x, params, compose="scale_rotate" in strategy)
    for g, r, what in zip(got, want, ("out", "dx")):
        assert g.dtype == dtype
        assert_close(g, r, dtype, f"{backend} {strategy} {what}")


# --- tier 3: gradients, opcheck, compile ---------------------------------------------------------------------

@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("strategy, compose", [(f, False) for f in FAMILIES] + [(DC, False), (DC, True)])
def test_gradcheck(backend, strategy, compose):
    x = _images(2, 3, 7, 9, seed=30).requires_grad_()
    params = _params(2, strategy, seed=31)

    def f(inp):
        with ddfast.use_backend(backend):
            return ddfast.dsa(inp, params, compose=compose)

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-8)


def test_opcheck():
    x = _images(3, 3, 8, 6, seed=40).requires_grad_()
    table = _params(3, DC, seed=41).table
    sizes = dsa_plan.geometry(8, 6, ddfast.DSAConfig())
    for ops in dsa_plan.plan_passes(DC.split("_")) + dsa_plan.plan_passes(DC.split("_"), compose=True):
        torch.library.opcheck(dsa_pass_op, (x, table, None, list(ops), sizes))
    torch.library.opcheck(dsa_pass_op, (x, table, torch.tensor([2, 0, 0]), [1, 2, 5], sizes))


def test_torch_compile_fullgraph():
    x = _images(4, 3, 12, 12, seed=42, dtype=torch.float32)
    params = _params(4, DC, seed=43)
    want = ddfast.dsa(x, params)
    got = torch.compile(lambda t: ddfast.dsa(t, params), fullgraph=True, backend="aot_eager")(x)
    assert_close(got, want, torch.float32, "compiled")


def test_planner_passes():
    P = dsa_plan
    assert P.plan_passes(DC.split("_")) == [(P.COLOR, P.CROP, P.CUTOUT, P.FLIP, P.SCALE), (P.ROTATE,)]
    assert P.plan_passes(DC.split("_"), compose=True) == [(P.COLOR, P.CROP, P.CUTOUT, P.FLIP, P.SCALE, P.ROTATE)]
    assert P.plan_passes(["rotate", "crop", "color", "flip"]) == [(P.ROTATE,), (P.CROP,), (P.COLOR, P.FLIP)]


# --- tier 4: bad inputs --------------------------------------------------------------------------------------

def test_bad_inputs():
    g = seeded(0)
    x = _images(4, 3, 8, 8)
    with pytest.raises(ValueError, match="strategy has unknown family 'blur'"):
        ddfast.dsa_sample(4, "color_blur", g)
    with pytest.raises(ValueError, match="repeats family 'crop'"):
        ddfast.dsa_sample(4, "crop_flip_crop", g)
    with pytest.raises(ValueError, match="mode must be one of"):
        ddfast.dsa_sample(4, DC, g, mode="X")
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        ddfast.dsa_sample(4, DC, None)
    p = ddfast.dsa_sample(4, DC, g, mode="M", shared=False)
    with pytest.raises(ValueError, match="x must be 4-D"):
        ddfast.dsa(x[0], p)
    with pytest.raises(TypeError, match="x has dtype torch.int64"):
        ddfast.dsa(x.long(), p)
    with pytest.raises(ValueError, match="per-sample sets for 4 images but x has 3"):
        ddfast.dsa(x[:3], p)
    pg = ddfast.dsa_sample(4, DC, g, mode="M", groups=2)
    with pytest.raises(ValueError, match="group_index has group 2 outside"):
        ddfast.dsa(x, pg, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="pass group_index"):
        ddfast.dsa(x, pg)
    with pytest.raises(ValueError, match="group_index must be 1-D with one group per image"):
        ddfast.dsa(x, pg, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="group_index is given"):
        ddfast.dsa(x, p, torch.tensor([0, 1, 1, 0]))
    with pytest.raises(TypeError, match="params must be a DSAParams"):
        ddfast.dsa(x, {"table": p.table})


# --- unroll (compat.dc's DiffAugment: tests/test_compat_dc.py) -----------------------------------------------

@pytest.mark.parametrize("mode", ["S", "M"])
def test_dsa_augment_in_unroll_replays(mode):
    from test_unroll import _gradients, _relative

    augment = ddfast.dsa_augment(DC, mode=mode)
    want = _gradients("autograd", augment=augment)
    got = _gradients("adjoint", augment=augment)
    assert _relative(got, want) < 1e-9
    assert _relative(_gradients("adjoint", augment=None), want) > 1e-3  # the augmentation is really applied
