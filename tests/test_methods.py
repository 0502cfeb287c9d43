"""The DC/DSA, DM and MTT methods, their checkpoint/resume, and the runner/CLI on small digits."""

from __future__ import annotations

import json

import pytest
import torch

import ddfast
from ddfast import _ext
from ddfast.data import load_dataset
from ddfast.experts import save_buffer, train_experts
from ddfast.methods import METHODS, make_config
from ddfast.methods import _common as common
from ddfast.models import get_network
from ddfast.ops.grad_distance import grad_distance
from ddfast.ops.per_class_gradients import per_class_gradients

SMALL = {"model": "ConvNetD2", "batch_real": 8}


@pytest.fixture(scope="module")
def digits8():
    """Digits at 8x8 (its native size) keeps every network pass cheap."""
    return load_dataset("digits", im_size=8)


def _distill(method, data, ipc, iterations, *extra, checkpoint=None, **settings):
    config = make_config(method, data.name, ipc=ipc, iterations=iterations, **settings)
    return METHODS[method].distill(data, config, *extra, checkpoint=checkpoint, progress=False)


# ---------------------------------------------------------------------------------- seeds and configs

def test_derived_seeds_are_reproducible_and_purpose_specific():
    assert common.derive_seed(3, "net", 7) == common.derive_seed(3, "net", 7)
    seeds = {common.derive_seed(3, "net", 7), common.derive_seed(3, "net", 8), common.derive_seed(4, "net", 7),
             common.derive_seed(3, "real", 7)}
    assert len(seeds) == 4
    a = torch.randn(5, generator=common.generator(1, "x"))
    b = torch.randn(5, generator=common.generator(1, "x"))
    assert torch.equal(a, b)


def test_make_config_applies_dataset_defaults_then_overrides():
    config = make_config("dm", "digits", ipc=10)
    assert config.ipc == 10 and config.iterations == 200  # digits default
    assert make_config("dm", "cifar10", ipc=10).iterations == 20000  # DM's own default
    cifar_dream = make_config("dream", "cifar10", ipc=10)  # DREAM's --reproduce CIFAR-10 run: factor 2, mse, 5e-3
    assert (cifar_dream.factor, cifar_dream.lr_img, cifar_dream.net_samples, cifar_dream.iterations) == (2, 5e-3, 2000, 2000)
    assert make_config("dream", "digits", ipc=10).factor == 1
    assert make_config("dm", "digits", ipc=1, iterations=7).iterations == 7
    assert make_config("dc", "digits", ipc=10).loops() == (10, 10)  # digits ipc-10 default
    assert make_config("dc", "digits", ipc=10, inner_loop=50).loops() == (10, 50)
    assert make_config("dsa", "digits", ipc=1).dsa is True and make_config("dc", "digits", ipc=1).dsa is False


def test_make_config_rejects_unknown_settings_by_name():
    with pytest.raises(ValueError, match="no_such_setting"):
        make_config("dm", "digits", ipc=1, no_such_setting=3)
    with pytest.raises(ddfast.UsageError, match=r"--method must be one of \[.*'dm'.*\], got 'nope'"):
        make_config("nope", "digits", ipc=1)
    with pytest.raises(ValueError, match="fixes"):
        make_config("dc", "digits", ipc=1, dsa=True)
    assert make_config("dsa", "digits", ipc=1, dsa=True).dsa is True  # repeating a fixed value is fine


def test_dc_loops_follow_dc_table_and_reject_unknown_ipc():
    assert make_config("dc", "cifar10", ipc=10).loops() == (10, 50)
    with pytest.raises(ValueError, match="outer_loop"):
        make_config("dc", "digits", ipc=7).loops()
    assert make_config("dc", "digits", ipc=7, outer_loop=3, inner_loop=2).loops() == (3, 2)


def test_class_siamese_gives_real_and_synthetic_images_the_same_set(digits8):
    from ddfast.methods._augment import ClassSiamese

    siamese = ClassSiamese.from_strategy("color_crop_cutout_flip_scale_rotate", 10, mode="M")
    params = siamese.sample(0, 3, "cpu")
    image = digits8.train_images[digits8.indices_per_class[4][:1]]
    real = torch.cat([digits8.train_images[:5], image])  # the image as a real sample of class 4 ...
    syn = torch.cat([image, digits8.train_images[5:7]])  # ... and as the synthetic image of class 4
    out_real = siamese(real, torch.tensor([0, 1, 2, 3, 5, 4]), params)
    out_syn = siamese(syn, torch.tensor([4, 7, 7]), params)
    torch.testing.assert_close(out_real[5], out_syn[0])
    assert not torch.equal(out_syn[0], image[0])
    other = siamese(syn, torch.tensor([3, 7, 7]), params)  # another class's set differs
    assert not torch.equal(other[0], out_syn[0])


def test_initial_images_are_real_images_of_their_class(digits8):
    sampler = common.ClassSampler(digits8)
    images = common.initial_images(digits8.train_images, sampler, 3, "real", seed=0)
    assert images.shape == (30, *digits8.train_images.shape[1:])
    for row in range(30):
        c = row // 3
        pool = digits8.train_images[digits8.indices_per_class[c]]
        assert (pool - images[row]).abs().flatten(1).amax(1).min() == 0, f"row {row} is not an image of class {c}"


# ------------------------------------------------------------------------------- method behaviour

def _dm_objective(images, labels, data, seeds):
    """DM's loss averaged over fixed random networks (no augmentation): what DM descends on."""
    total = 0.0
    for seed in seeds:
        net = common.seeded_network("ConvNetD2", data.channels, data.num_classes, data.im_size, seed, "cpu")
        with torch.no_grad():
            total += float(ddfast.class_mean_distance(net.embed(images), labels, net.embed(data.train_images),
                                                      data.train_labels, data.num_classes))
    return total / len(seeds)


def test_dm_moves_images_towards_matching_class_means(digits8):
    settings = dict(SMALL, batch_real=32, dsa_strategy="none")
    start = common.initial_images(digits8.train_images, common.ClassSampler(digits8), 2, "real", seed=0)
    syn = _distill("dm", digits8, 2, 25, **settings)
    labels = syn.labels
    before = _dm_objective(start, labels, digits8, range(100, 104))
    after = _dm_objective(syn.images, labels, digits8, range(100, 104))
    assert after < 0.8 * before, (before, after)


def _gm_objective(images, labels, data, seeds):
    total = 0.0
    for seed in seeds:
        net = common.seeded_network("ConvNetD2", data.channels, data.num_classes, data.im_size, seed, "cpu")
        g_real = per_class_gradients(net, None, data.train_images, data.train_labels, data.num_classes,
                                     create_graph=False)
        g_syn = per_class_gradients(net, None, images, labels, data.num_classes, create_graph=False)
        total += float(grad_distance(g_syn, g_real, batched=True).sum())
    return total / len(seeds)


def test_dc_moves_images_towards_matching_gradients(digits8):
    settings = dict(SMALL, batch_real=32, lr_img=1.0)
    start = common.initial_images(digits8.train_images, common.ClassSampler(digits8), 1, "real", seed=0)
    syn = _distill("dc", digits8, 1, 15, **settings)
    before = _gm_objective(start, syn.labels, digits8, range(200, 203))
    after = _gm_objective(syn.images, syn.labels, digits8, range(200, 203))
    assert after < before, (before, after)


@pytest.mark.parametrize("method, settings", [
    ("dm", dict(SMALL)),
    ("dsa", dict(SMALL, outer_loop=2, inner_loop=1)),
    ("lcs_gm", dict(SMALL, pretrain_epochs=1, ema=0.5)),
    ("dream", dict(SMALL, batch_real=4, inner_steps=2, interval=1, net_samples=32, pretrain_epochs=0, kmeans_iters=2)),
])
def test_resume_continues_exactly(tmp_path, digits8, method, settings, extra=()):
    straight = _distill(method, digits8, 1, 4, *extra, **settings)
    first = common.Checkpointing(tmp_path / "ck.pt", every=2)
    _distill(method, digits8, 1, 2, *extra, checkpoint=first, **settings)
    resumed = _distill(method, digits8, 1, 4, *extra, checkpoint=common.Checkpointing(tmp_path / "ck.pt", every=2,
                                                                                      resume=True), **settings)
    assert resumed.metadata["iterations"] == 4
    assert torch.equal(resumed.images, straight.images)
    assert (resumed.lr is None) == (straight.lr is None) and (resumed.lr is None or torch.equal(resumed.lr,
                                                                                                straight.lr))


def test_resume_refuses_another_configuration(tmp_path, digits8):
    _distill("dm", digits8, 1, 1, checkpoint=common.Checkpointing(tmp_path / "ck.pt", every=1), **SMALL)
    with pytest.raises(ValueError, match="same settings"):
        _distill("dm", digits8, 1, 2, checkpoint=common.Checkpointing(tmp_path / "ck.pt", resume=True),
                 **dict(SMALL, lr_img=0.5))


def test_dm_forward_strategies_agree(digits8):
    a = _distill("dm", digits8, 2, 2, **dict(SMALL, forward="batched"))
    b = _distill("dm", digits8, 2, 2, **dict(SMALL, forward="per_class"))
    torch.testing.assert_close(a.images, b.images, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def small_buffer(tmp_path_factory, digits8):
    folder = tmp_path_factory.mktemp("buffer")
    trajectories = train_experts(lambda: get_network("ConvNetD2", 1, 10, (8, 8)), digits8.train_images,
                                 digits8.train_labels, 2, 3, generator=torch.Generator().manual_seed(0), progress=False)
    save_buffer(folder / "replay_buffer_0.pt", trajectories)
    return folder


def test_mtt_adjoint_equals_autograd_unroll(digits8, small_buffer):
    settings = dict(model="ConvNetD2", syn_steps=3, max_start_epoch=1, expert_epochs=2, lr_img=10.0)
    config = make_config("mtt", "digits", ipc=1, iterations=2, **settings)
    adjoint = METHODS["mtt"].distill(digits8, config, small_buffer, progress=False)
    config = make_config("mtt", "digits", ipc=1, iterations=2, mode="autograd", **settings)
    autograd = METHODS["mtt"].distill(digits8, config, small_buffer, progress=False)
    assert adjoint.lr is not None and adjoint.lr.ndim == 0
    torch.testing.assert_close(adjoint.images, autograd.images, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(adjoint.lr, autograd.lr, rtol=1e-4, atol=1e-7)


def test_mtt_resume_continues_exactly(tmp_path, digits8, small_buffer):
    settings = dict(model="ConvNetD2", syn_steps=2, max_start_epoch=1, expert_epochs=2, lr_img=10.0)
    test_resume_continues_exactly(tmp_path, digits8, "mtt", settings, extra=(small_buffer,))


def test_mtt_rejects_short_trajectories(digits8, small_buffer):
    config = make_config("mtt", "digits", ipc=1, iterations=1, model="ConvNetD2", max_start_epoch=3)
    with pytest.raises(ValueError, match="needs trajectories of at least 5 snapshots"):
        METHODS["mtt"].distill(digits8, config, small_buffer, progress=False)


def test_mtt_names_a_missing_buffer(tmp_path, digits8):
    config = make_config("mtt", "digits", ipc=1, iterations=1)
    with pytest.raises(FileNotFoundError, match="ddfast buffer"):
        METHODS["mtt"].distill(digits8, config, tmp_path, progress=False)


# ------------------------------------------------------------------------------------ runner and CLI

def _cli(*argv):
    from ddfast.cli import main

    with pytest.raises(SystemExit) as done:
        main(list(argv))
    assert done.value.code == 0


def test_cli_distill_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    _cli("distill", "--method", "dm", "--ipc", "1", "--iterations", "2", "--out", str(out), "--quiet",
         "--set", "model='ConvNetD2'", "--set", "batch_real=8", "--eval-runs", "1", "--eval-epochs", "2",
         "--device", "cpu", "--eval-every", "1", "--set", "dsa_strategy='none'")
    results = json.loads((out / "results.json").read_text())
    assert [p["iteration"] for p in results["curve"]] == [1, 2]
    assert (out / "accuracy.png").stat().st_size > 0
    assert results["method"] == "dm" and results["ipc"] == 1 and results["iterations"] == 2
    assert results["backends_ran"]["class_mean_distance"] == ["cpp" if _ext.has_cpp() else "reference"]
    assert results["environment"]["torch"] == torch.__version__ and results["environment"]["device_name"]
    assert results["ddfast"]["version"] == ddfast.__version__
    for key in ("distilled", "random_real"):
        assert results[key]["runs"] == 1 and 0.0 <= results[key]["mean"] <= 1.0
    for name in ("set.pt", "set.png", "loss.png", "checkpoint.pt"):
        assert (out / name).stat().st_size > 0, name
    syn = ddfast.SyntheticSet.load(out / "set.pt")
    assert syn.images.shape == (10, 1, 16, 16) and syn.metadata["method"] == "dm"


def test_cli_eval_of_a_saved_set(tmp_path, capsys):
    data = load_dataset("digits")
    syn = ddfast.eval.random_real_set(data, 1, torch.Generator().manual_seed(0))
    syn.save(tmp_path / "set.pt")
    _cli("eval", str(tmp_path / "set.pt"), "--models", "MLP,LeNet", "--runs", "1", "--epochs", "2", "--quiet",
         "--device", "cpu")
    table = capsys.readouterr().out
    assert "| MLP |" in table and "| LeNet |" in table


def test_cli_buffer_then_mtt(tmp_path):
    _cli("buffer", "--out", str(tmp_path / "buf"), "--experts", "1", "--epochs", "3", "--model", "ConvNetD2",
         "--quiet", "--device", "cpu", "--dsa-strategy", "none")
    assert (tmp_path / "buf" / "replay_buffer_0.pt").exists()
    out = tmp_path / "mtt"
    _cli("distill", "--method", "mtt", "--ipc", "1", "--iterations", "1", "--out", str(out), "--quiet",
         "--buffer", str(tmp_path / "buf"), "--set", "model='ConvNetD2'", "--set", "syn_steps=2",
         "--set", "max_start_epoch=1", "--eval-runs", "1", "--eval-epochs", "1", "--device", "cpu")
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "mtt"
    assert {"param_match_loss", "sgd_step", "adjoint_step"} <= set(results["backends_ran"])
    assert ddfast.SyntheticSet.load(out / "set.pt").lr is not None


def test_cli_rejects_a_bad_setting(tmp_path, capsys):
    from ddfast.cli import main

    with pytest.raises(SystemExit) as done:
        main(["distill", "--method", "dm", "--ipc", "1", "--out", str(tmp_path), "--set", "no_such=1", "--quiet"])
    assert done.value.code == 2 and "no_such" in capsys.readouterr().err
