"""SRe2L and DELT (docs/methods.md#sre2l, docs/methods.md#delt): the recover augmentation, the recover loop against
a re-creation of SRe2L's hook-based step, DELT's selection, EarlyLate schedule and compute, the crop curriculum,
teachers, the KD protocol's pieces and the CLI, on small digits."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.baselines import sre2l_bn_loop
from bench.bench_bn_stat_loss import perturb_running_stats
from ddfast.data import load_dataset
from ddfast.errors import UsageError
from ddfast.eval import default_augment, embedding_diversity, kd_batch_size
from ddfast.methods import METHODS, delt, make_config, sre2l, teacher_recipe
from ddfast.methods import _common as common
from ddfast.crops import RandomResizedCropFlip, batch_crop, crop_box, resized_crop
from ddfast.models import get_network
from ddfast.runner import distill_run, eval_run, teacher_run

TINY = dict(iterations=6, batch_size=20, jitter=1)


@pytest.fixture(scope="module")
def digits8():
    return load_dataset("digits", im_size=8)


@pytest.fixture(scope="module")
def teacher8(digits8):
    """An untrained BN ConvNet with running statistics away from 0 and 1 (the BN term is then not trivial)."""
    torch.manual_seed(0)
    return perturb_running_stats(get_network("ConvNetD2BN", 1, 10, (8, 8))).eval()


# ------------------------------------------------------------------------------------------ crops

def test_crop_boxes_follow_torchvision_limits():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = crop_box(16, 12, (0.08, 1.0), gen)
        assert 0 < h <= 16 and 0 < w <= 12 and 0 <= top <= 16 - h and 0 <= left <= 12 - w
    # the whole area: only an aspect near 1 fits, else after ten tries the central fallback, the whole image
    boxes = {crop_box(32, 32, (1.0, 1.0), torch.Generator().manual_seed(s)) for s in range(20)}
    assert boxes == {(0, 0, 32, 32)}


def test_full_box_is_the_identity_and_flip_mirrors():
    x = torch.randn(3, 2, 7, 9, dtype=torch.float64)
    torch.testing.assert_close(resized_crop(x, [(0, 0, 7, 9)], [False]), x)
    torch.testing.assert_close(resized_crop(x, [(0, 0, 7, 9)], [True]), x.flip(3))


def test_resized_crop_samples_where_crop_then_bilinear_resize_does():
    x = torch.randn(2, 1, 12, 12, dtype=torch.float64)
    top, left, h, w = 2, 3, 6, 6  # a factor-2 upsampling: interior samples need no clamping
    got = resized_crop(x, [(top, left, h, w)], [False])
    ref = F.interpolate(x[:, :, top:top + h, left:left + w], size=(12, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(got[:, :, 1:-1, 1:-1], ref[:, :, 1:-1, 1:-1])


def test_resized_crop_gradient_is_exact():
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: resized_crop(t, [(1, 0, 4, 5)], [True]), (x,))


def test_batch_crop_shares_one_crop_and_jitter_rolls():
    x = torch.randn(4, 1, 8, 8)
    out = batch_crop(x, torch.Generator().manual_seed(3), (1.0, 1.0), flip=False, jitter=2)
    shifts = [(dy, dx) for dy in range(3) for dx in range(3) if torch.equal(out, torch.roll(x, (dy, dx), (2, 3)))]
    assert len(shifts) >= 1
    same = x[:1].expand(4, -1, -1, -1)
    shared = batch_crop(same, torch.Generator().manual_seed(5), (0.08, 1.0), flip=True, jitter=0)
    assert all(torch.equal(shared[0], shared[i]) for i in range(4))
    with pytest.raises(ValueError, match="crop scale"):
        batch_crop(x, torch.Generator(), (0.0, 1.0))


def test_kd_augmentation_crops_each_image_and_is_seeded():
    aug = default_augment("kd")
    assert isinstance(aug, RandomResizedCropFlip)
    x = torch.randn(1, 1, 16, 16).expand(6, -1, -1, -1)
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert not all(torch.equal(a[0], a[i]) for i in range(1, 6))
    assert [kd_batch_size(n) for n in (10, 100, 500, 5000)] == [10, 50, 100, 100]


# ------------------------------------------------------------------------------------------ recover

def reference_recover(teacher, images, labels, data, config, join=None, min_crop_at=None):
    """SRe2L's recover loop for one batch written out directly: per-layer BN hooks (bench baseline), Adam, the
    cosine lr, the same crops (drawn from the same generators), clipping after each step."""
    low, high = sre2l.pixel_bounds(data, images.device)
    x = images.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=config.lr, betas=(config.beta1, config.beta2), eps=1e-8)
    hooks = sre2l_bn_loop.install(teacher)
    join = torch.zeros(len(x), dtype=torch.long) if join is None else join
    try:
        for it in range(config.iterations):
            for g in opt.param_groups:
                g["lr"] = 0.5 * (1 + math.cos(math.pi * it / config.iterations)) * config.lr
            active = torch.nonzero(join <= it).flatten()
            low_crop = config.min_crop if min_crop_at is None else min_crop_at(it)
            inp = batch_crop(x[active], common.generator(config.seed, "aug", it), (low_crop, config.max_crop),
                             config.flip, config.jitter)
            loss = F.cross_entropy(teacher(inp), labels[active]) + config.r_bn * sre2l_bn_loop.hooks_loss(
                hooks, config.first_bn_multiplier)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.copy_(torch.max(torch.min(x, high), low))
    finally:
        for h in hooks:
            h.close()
    return x.detach()


def test_sre2l_recover_is_the_hook_based_loop(digits8, teacher8):
    config = make_config("sre2l", "digits", ipc=2, **TINY)
    syn = sre2l.distill(digits8, config, teacher8, progress=False)
    real = common.RealData.of(digits8)
    start = sre2l.initial_images(real, config)
    labels = common.class_labels(10, 2, "cpu")
    want = reference_recover(teacher8, start, labels, digits8, config)
    torch.testing.assert_close(syn.images, want, rtol=1e-4, atol=1e-5)
    assert syn.metadata["compute"] == {"image_iterations": 20 * 6, "sre2l_image_iterations": 20 * 6,
                                       "forwarded_images": 20 * 6}
    low, high = sre2l.pixel_bounds(digits8, "cpu")
    assert bool((syn.images >= low - 1e-6).all() and (syn.images <= high + 1e-6).all())


def test_recover_batches_hold_every_class():
    groups = sre2l.batches(10, 5, 20)
    assert [len(g) for g in groups] == [20, 20, 10]
    assert sorted(torch.cat(groups).tolist()) == list(range(50))
    assert sorted({int(r) // 5 for r in groups[2]}) == list(range(10))


@pytest.mark.parametrize("method", ["sre2l", "delt"])
def test_recover_resume_continues_exactly(tmp_path, digits8, teacher8, method):
    extra = {"round_iterations": 2} if method == "delt" else {}
    config = make_config(method, "digits", ipc=2, iterations=4, batch_size=10, jitter=1, **extra)
    run = METHODS[method].distill
    whole = run(digits8, config, teacher8, progress=False)

    class Killed(Exception):
        pass

    def kill(it, state):
        if it == 7:  # the checkpoint of iteration 6 holds batch 1 after 2 of its 4 steps, with Adam's moments
            raise Killed

    ck = common.Checkpointing(tmp_path / "ck.pt", every=1, resume=True)
    with pytest.raises(Killed):
        run(digits8, config, teacher8, checkpoint=ck, progress=False, callback=kill)
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["state"]["iteration"] == 6
    resumed = run(digits8, config, teacher8, checkpoint=ck, progress=False)
    torch.testing.assert_close(resumed.images, whole.images)
    assert resumed.metadata["compute"] == whole.metadata["compute"]
    # the iteration count per batch and the teacher are part of the run: another one is refused
    longer = make_config(method, "digits", ipc=2, iterations=8, batch_size=10, jitter=1, **extra)
    with pytest.raises(ValueError, match="iterations per batch"):
        run(digits8, longer, teacher8, checkpoint=ck, progress=False)
    other = get_network("ConvNetD2BN", 1, 10, (8, 8)).eval()
    with pytest.raises(ValueError, match="another teacher"):
        run(digits8, config, other, checkpoint=ck, progress=False)


def test_uneven_last_batch(digits8, teacher8):
    config = make_config("delt", "digits", ipc=3, iterations=2, round_iterations=1, batch_size=20, jitter=0)
    syn = delt.distill(digits8, config, teacher8, progress=False)
    real = common.RealData.of(digits8)
    start = delt.initial_images(real, sre2l.frozen(teacher8), config)
    moved = (syn.images - start).flatten(1).abs().sum(1) > 0
    assert bool(moved.all())  # every image, the last batch's too, was optimised
    assert syn.metadata["compute"]["forwarded_images"] == sre2l.image_iterations(delt.join_iterations(10, config), 2)


def test_bad_settings_name_the_argument(digits8, teacher8):
    for key, value, match in (("min_crop", 0.0, r"--set min_crop must be a float in \(0, 1\], got 0.0"),
                              ("jitter", -1, r"--set jitter must be an integer >= 0, got -1")):
        with pytest.raises(UsageError, match=match):
            make_config("sre2l", "digits", ipc=1, **{**TINY, key: value})
    for key, value, match in (("iterations", 0, "iterations"), ("init", "zeros", "init")):
        config = make_config("sre2l", "digits", ipc=1, **{**TINY, key: value})
        with pytest.raises(ValueError, match=match):
            sre2l.distill(digits8, config, teacher8, progress=False)
    with pytest.raises(ValueError, match="round_iterations"):
        delt.distill(digits8, make_config("delt", "digits", ipc=1, iterations=4, round_iterations=8), teacher8,
                     progress=False)
    with pytest.raises(ValueError, match="zca"):
        sre2l.pixel_bounds(load_dataset("digits", im_size=8, zca=True), "cpu")
    with pytest.raises(ValueError, match="BatchNorm"):
        sre2l.squeeze(digits8, teacher_recipe("digits", model="ConvNetD2", epochs=1), progress=False)
    with pytest.raises(ValueError, match="teacher epochs"):
        sre2l.squeeze(digits8, teacher_recipe("digits", epochs=0), progress=False)
    with pytest.raises(ValueError, match="teacher batch_size"):
        sre2l.squeeze(digits8, teacher_recipe("digits", batch_size=0), progress=False)


def test_runner_checks_settings_before_training_a_teacher(tmp_path):
    with pytest.raises(ValueError, match="round_iterations"):
        distill_run("delt", "digits", 2, tmp_path / "run", settings={"round_iterations": 10_000}, progress=False)
    assert not (tmp_path / "run" / "teacher.pt").exists()
    with pytest.raises(ValueError, match="does not use a teacher"):
        distill_run("dm", "digits", 1, tmp_path / "dm", teacher=tmp_path / "t.pt", progress=False)


# ------------------------------------------------------------------------------------------ DELT

def test_earlylate_chunks_and_join_iterations():
    assert delt.chunk_sizes(10, 8) == [2, 2, 1, 1, 1, 1, 1, 1]
    assert delt.chunk_sizes(50, 8) == [7, 7, 6, 6, 6, 6, 6, 6]
    assert delt.chunk_sizes(2, 8) == [1, 1, 0, 0, 0, 0, 0, 0]
    config = make_config("delt", "digits", ipc=10, iterations=1000, round_iterations=125, batch_size=100)
    join = delt.join_iterations(10, config)
    assert join[:10].tolist() == [0, 0, 125, 125, 250, 375, 500, 625, 750, 875]
    assert torch.equal(join.view(10, 10), join[:10].repeat(10, 1))
    # DELT's IPC 10 count: 25,500 of 40,000 image-steps at 4000 / 500 (same shape at 1000 / 125)
    assert sre2l.image_iterations(join, 1000) == 100 * 1000 * 25_500 // 40_000


def test_equal_chunks_save_the_predicted_fraction():
    for rounds in (2, 4, 8):
        config = make_config("delt", "digits", ipc=rounds * 3, iterations=rounds * 10, round_iterations=10,
                             batch_size=10 * rounds * 3)
        join = delt.join_iterations(10, config)
        used = sre2l.image_iterations(join, config.iterations)
        full = 10 * config.ipc * config.iterations
        assert used * 2 * rounds == full * (rounds + 1)  # (M - 1) / (2M) saved, exactly


def test_delt_run_counts_its_compute_and_keeps_late_images_still(digits8, teacher8):
    config = make_config("delt", "digits", ipc=4, iterations=8, round_iterations=2, batch_size=40, jitter=0)
    seen = {}

    def watch(it, state):
        seen[it] = state.tensors["current"].detach().clone()

    syn = delt.distill(digits8, config, teacher8, progress=False, callback=watch)
    join = delt.join_iterations(10, config)
    compute = syn.metadata["compute"]
    assert compute["image_iterations"] == compute["forwarded_images"] == sre2l.image_iterations(join, 8)
    assert compute["sre2l_image_iterations"] == 40 * 8
    real = common.RealData.of(digits8)
    start = delt.initial_images(real, sre2l.frozen(teacher8), config)
    rows = sre2l.batches(10, 4, 40)[0]
    late = (join[rows] >= 6).nonzero().flatten()
    assert len(late) > 0
    torch.testing.assert_close(seen[6][late], start[rows][late])  # untouched before joining (Adam: zero grads)
    assert not torch.equal(syn.images[rows][late], start[rows][late])
    want = reference_recover(sre2l.frozen(teacher8), start[rows], common.class_labels(10, 4, "cpu")[rows], digits8,
                             config, join=join[rows], min_crop_at=delt.min_crop_schedule(config))
    torch.testing.assert_close(syn.images[rows], want, rtol=1e-4, atol=1e-5)


class FixedLogits(nn.Module):
    """Returns stored logits row by row (a teacher with known confidences)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.logits[x[:, 0, 0, 0].long()]


def test_confidence_orders():
    prob = torch.tensor([0.9, 0.1, 0.5, 0.7, 0.3])  # class 0's probability of image i
    logits = torch.stack([prob.log(), (1 - prob).log()], 1)
    teacher = FixedLogits(logits)
    x = torch.arange(5.).view(5, 1, 1, 1)
    assert delt.confidence_order(teacher, x, "top", 0).tolist() == [0, 3, 2, 4, 1]
    assert delt.confidence_order(teacher, x, "min", 0).tolist() == [1, 4, 2, 3, 0]
    # ascending positions 0..4 = images 1, 4, 2, 3, 0; medium walks 3, 4, 2, 1, 0 (mid = ceil(5 / 2))
    assert delt.confidence_order(teacher, x, "medium", 0).tolist() == [3, 0, 2, 4, 1]
    with pytest.raises(ValueError, match="selection mode"):
        delt.confidence_order(teacher, x, "median", 0)


def test_crop_curriculum_goes_from_whole_images_to_min_crop():
    config = make_config("delt", "digits", ipc=1, iterations=100, min_crop=0.08)
    at = delt.min_crop_schedule(config)
    values = [at(t) for t in range(100)]
    assert values[0] == pytest.approx(1.0) and values[50] == pytest.approx(0.54)
    assert all(a >= b for a, b in zip(values, values[1:])) and at(100) == pytest.approx(0.08)
    assert delt.min_crop_schedule(make_config("delt", "digits", ipc=1, crop_curriculum=False)) is None


# ------------------------------------------------------------------------------------------ teacher, KD, CLI

def test_teacher_round_trip_and_mismatch(tmp_path, digits8):
    record = teacher_run("digits", tmp_path / "t.pt", data=digits8, progress=False, model="ConvNetD2BN", epochs=1)
    net, saved = sre2l.load_teacher(tmp_path / "t.pt", digits8)
    assert saved["accuracy"] == record["accuracy"] and saved["model"] == "ConvNetD2BN"
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="im_size"):
        sre2l.load_teacher(tmp_path / "t.pt", load_dataset("digits"))
    with pytest.raises(FileNotFoundError, match="ddfast teacher"):
        sre2l.load_teacher(tmp_path / "missing.pt", digits8)


def test_embedding_diversity():
    class Embed(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def embed(self, x):
            return x.flatten(1)

    net = Embed()
    same = torch.ones(4, 1, 1, 2)
    assert embedding_diversity(net, same, torch.zeros(4, dtype=torch.long)) == pytest.approx(0.0)
    ortho = torch.tensor([[1., 0.], [0., 1.], [1., 0.], [0., 1.]]).view(4, 1, 1, 2)
    assert embedding_diversity(net, ortho, torch.tensor([0, 0, 1, 1])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least two"):
        embedding_diversity(net, ortho[:2], torch.tensor([0, 1]))


def test_methods_registered_with_teachers():
    assert METHODS["sre2l"].needs_teacher and METHODS["delt"].needs_teacher
    assert make_config("delt", "digits", ipc=10).round_iterations == 125


@pytest.mark.parametrize("method", ["sre2l", "delt"])
def test_cli_runs_end_to_end_with_the_kd_protocol(tmp_path, method):
    from ddfast.cli import main

    teacher = tmp_path / "teacher.pt"
    with pytest.raises(SystemExit) as done:
        main(["teacher", "--out", str(teacher), "--epochs", "1", "--quiet"])
    assert done.value.code == 0 and teacher.exists()
    out = tmp_path / method
    with pytest.raises(SystemExit) as done:
        main(["distill", "--method", method, "--ipc", "2", "--iterations", "4", "--teacher", str(teacher), "--out",
              str(out), "--eval-runs", "1", "--eval-epochs", "1", "--quiet", "--set", "round_iterations=2"
              if method == "delt" else "jitter=1"])
    assert done.value.code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"] == "kd" and results["teacher"]["model"] == "ConvNetBN"
    assert results["compute"]["sre2l_image_iterations"] == 20 * 4
    assert results["diversity"]["distilled"] is not None
    with pytest.raises(ValueError, match="--teacher"):
        eval_run(out / "set.pt", "digits", runs=1, epochs=1, progress=False)
    graded = eval_run(out / "set.pt", "digits", runs=1, epochs=1, teacher=teacher, progress=False)
    assert graded["protocol"] == "kd"
