"""ddfast.eval on digits with tiny settings: accuracy above chance on real data, reported mean/std/runs/preset,
seeded reproducibility, the learned-lr (MTT-family) defaults, augmentation calls, the KD protocol, errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from ddfast.data import load_dataset
from ddfast.eval import (PRESETS, EvalResult, cross_architecture, default_augment, evaluate, paper_protocol,
                         random_real_baseline,
                         random_real_set)
from ddfast.synthetic import SyntheticSet


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_random_real_convnet_beats_chance(digits):
    result = random_real_baseline(digits, 3, "ConvNet", preset="quick", epochs=10, seed=0, progress=False)
    assert isinstance(result, EvalResult) and result.preset == "quick" and result.runs == PRESETS["quick"]["runs"]
    assert result.epochs == 10 and result.lr == 0.01 and result.protocol == "dc" and result.images == 30
    assert result.mean > 0.3, result  # chance is 0.1
    record = result.to_dict()
    assert {"mean", "std", "runs", "preset", "accuracies", "model", "seconds"} <= set(record)
    assert record["std"] == pytest.approx(abs(result.accuracies[0] - result.accuracies[1]) / 2)
    assert "quick preset" in str(result)


def test_seeded_and_leaves_global_rng(digits):
    syn = random_real_set(digits, 2, torch.Generator().manual_seed(3))
    state = torch.get_rng_state()
    a = evaluate(syn, digits, "MLP", epochs=3, runs=2, seed=5, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    b = evaluate((syn.images, syn.labels), digits, "MLP", epochs=3, runs=2, seed=5, progress=False)
    assert a.accuracies == b.accuracies and a.preset == "full"
    # one-hot soft labels give the same cross-entropy, so the same networks
    soft = SyntheticSet(syn.images, F.one_hot(syn.labels, 10).float())
    assert evaluate(soft, digits, "MLP", epochs=3, runs=2, seed=5, progress=False).accuracies == a.accuracies


def test_learned_lr_gets_the_mtt_schedule(digits):
    syn = random_real_set(digits, 1, torch.Generator().manual_seed(0))
    syn = SyntheticSet(syn.images, syn.labels, lr=0.005, metadata={"method": "mtt"})
    result = evaluate(syn, digits, "MLP", preset="quick", runs=1, progress=False)
    assert result.epochs == PRESETS["quick"]["epochs_mtt"] and result.lr == pytest.approx(0.005)
    assert evaluate(syn, digits, "MLP", runs=1, epochs=1, lr=0.1, progress=False).lr == 0.1


def test_augment_is_called_with_the_run_generator(digits):
    calls = []

    def augment(x, generator):
        assert isinstance(generator, torch.Generator)
        calls.append(x.shape[0])
        return x + 0.01 * torch.randn(x.shape, generator=generator)

    syn = random_real_set(digits, 3, torch.Generator().manual_seed(0))
    result = evaluate(syn, digits, "MLP", epochs=2, runs=2, batch_size=16, augment=augment, progress=False)
    assert calls == [16, 14] * 4 and result.augmented


def test_default_augment_is_per_image_dsa_for_the_dc_protocol():
    augment = default_augment("dc")
    x = torch.randn(6, 1, 16, 16)
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    assert type(default_augment("kd")).__name__ == "RandomResizedCropFlip"  # tests/test_sre2l_delt.py tests it
    with pytest.raises(ValueError, match="protocol"):
        default_augment("nope")


@pytest.mark.parametrize("method, runs, epochs, augmented", [
    ("dc", 20, 300, False), ("dsa", 20, 1000, True), ("dm", 20, 1000, True), ("mtt", 5, 1000, True),
    ("seqmatch", 5, 1000, True), ("dream", PRESETS["full"]["runs"], None, True)])
def test_the_paper_preset_is_each_methods_reference_evaluation(digits, method, runs, epochs, augmented):
    protocol = paper_protocol(method, digits)
    assert (protocol["runs"], protocol["epochs"], protocol["augment"] is not None) == (runs, epochs, augmented)


def test_the_paper_preset_augments_dc_sets_only_where_dc_did(digits):
    mnist_like = copy.copy(digits)
    mnist_like.name = "mnist"
    assert paper_protocol("dc", mnist_like)["augment"] is not None  # DC's crop_scale_rotate on MNIST
    assert paper_protocol("dc", digits, "ConvNetBN")["augment"] is not None  # DC's crop_noise for BatchNorm
    assert paper_protocol("dc", digits, "ConvNet")["augment"] is None


def test_kd_protocol(digits):
    teacher_set = SyntheticSet(digits.train_images, digits.train_labels)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(teacher.parameters(), lr=0.1)
    for _ in range(30):
        loss = F.cross_entropy(teacher(teacher_set.images), teacher_set.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    syn = random_real_set(digits, 5, torch.Generator().manual_seed(0))
    result = evaluate(syn, digits, "MLP", protocol="kd", teacher=teacher, temperature=4.0, epochs=40, runs=1,
                      progress=False)
    assert result.protocol == "kd" and result.lr == 1e-3 and result.extra["temperature"] == 4.0
    assert result.mean > 0.3, result
    with pytest.raises(ValueError, match="needs teacher"):
        evaluate(syn, digits, protocol="kd")


def test_cross_architecture(digits):
    syn = random_real_set(digits, 1, torch.Generator().manual_seed(0))
    results = cross_architecture(syn, digits, ["MLP", "LeNet"], epochs=1, runs=1, progress=False)
    assert list(results) == ["MLP", "LeNet"] and all(r.runs == 1 for r in results.values())


def test_random_real_set_takes_what_exists(digits):
    with pytest.warns(UserWarning, match="fewer than the 1000"):
        syn = random_real_set(digits, 1000, torch.Generator().manual_seed(0))
    assert len(syn) == len(digits) and syn.metadata["method"] == "random"


def test_errors(digits):
    syn = random_real_set(digits, 1, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="model must be one of"):
        evaluate(syn, digits, "VGG19")
    with pytest.raises(ValueError, match="protocol must be"):
        evaluate(syn, digits, protocol="sre2l")
    with pytest.raises(ValueError, match="preset must be"):
        evaluate(syn, digits, preset="fast")
    with pytest.raises(ValueError, match="runs must be a positive integer"):
        evaluate(syn, digits, runs=0)
    with pytest.raises(ValueError, match="syn has images of shape"):
        evaluate((torch.zeros(2, 3, 16, 16), torch.zeros(2, dtype=torch.int64)), digits)
    with pytest.raises(ValueError, match="syn has label 12"):
        evaluate((syn.images[:1], torch.tensor([12])), digits)
    with pytest.raises(TypeError, match="syn must be"):
        evaluate(syn.images, digits)
    with pytest.raises(TypeError, match="augment must be callable"):
        evaluate(syn, digits, augment="dsa")
