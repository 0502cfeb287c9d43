"""ddfast.data: every dataset loads from tiny files written here in the real formats; missing files
name the expected paths; digits' fixed split; class sampling; ZCA against a numpy formula."""

from __future__ import annotations

import gzip
import pickle
import shutil
import struct
import warnings

import numpy as np
import pytest
import torch

from ddfast.data import ZCA, load_dataset

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def _pixels(rng, n, c, side):
    return rng.integers(0, 256, size=(n, c, side, side), dtype=np.uint8)


def _dump(path, obj, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def write_cifar10(root, rng, per_batch=3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    arrays = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        x = _pixels(rng, per_batch, 3, 32)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        arrays[name] = (x, y)
        batch = {b"batch_label": name.encode(), b"labels": y, b"data": x.reshape(per_batch, -1),
                 b"filenames": [b"f.png"] * per_batch}
        if i == 0:  # as the published files (numpy 1.x): the array class under numpy.core.multiarray
            raw = pickle.dumps(batch, protocol=2)
            (folder / name).write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
        else:
            _dump(folder / name, batch, protocol=2 if i % 2 else 4)
    _dump(folder / "batches.meta", {b"label_names": [f"class{c}".encode() for c in range(10)], b"num_vis": 3072})
    return arrays


def test_cifar10_pickles(tmp_path):
    arrays = write_cifar10(tmp_path, np.random.default_rng(0))
    ds = load_dataset("cifar10", tmp_path)
    assert ds.train_images.shape == (15, 3, 32, 32) and ds.test_images.shape == (3, 3, 32, 32)
    assert ds.train_labels.dtype == torch.int64 and ds.num_classes == 10 and ds.channels == 3
    assert ds.class_names[3] == "class3" and ds.im_size == (32, 32) and ds.mean == CIFAR10_MEAN
    x1, y1 = arrays["data_batch_2"]
    assert ds.train_labels[3:6].tolist() == y1
    c = 1
    want = (x1[0, c].astype(np.float64) / 255 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]
    np.testing.assert_allclose(ds.train_images[3, c].numpy(), want, rtol=1e-5, atol=1e-5)
    # the folder itself may be passed as root
    assert load_dataset("CIFAR-10", tmp_path / "cifar-10-batches-py").train_images.shape[0] == 15


def test_cifar100_fine_labels_and_resize(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 4), ("test", 2)):
        _dump(folder / name, {b"data": _pixels(rng, n, 3, 32).reshape(n, -1), b"fine_labels": [99, 0, 5, 7][:n],
                              b"coarse_labels": [0] * n}, protocol=5)
    _dump(folder / "meta", {b"fine_label_names": [f"f{c}".encode() for c in range(100)],
                            b"coarse_label_names": [b"c"] * 20})
    ds = load_dataset("cifar100", tmp_path, im_size=16)
    assert ds.num_classes == 100 and ds.train_labels.tolist() == [99, 0, 5, 7] and ds.test_labels.tolist() == [99, 0]
    assert ds.train_images.shape == (4, 3, 16, 16) and ds.class_names[99] == "f99"
    assert [i.tolist() for i in ds.indices_per_class[:2]] == [[1], []]


def test_cifar_pickle_refuses_code(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test", "meta"):
        _dump(folder / name, {b"fine_labels": [0], b"data": np.zeros((1, 3072), np.uint8)})
    _dump(folder / "train", {b"data": warnings.warn})  # a global outside numpy arrays and builtins
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_dataset("cifar100", tmp_path)


def test_cifar_missing_files_name_the_paths(tmp_path):
    write_cifar10(tmp_path, np.random.default_rng(2))
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar10", tmp_path)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_4") in str(info.value)
    assert "data_batch_3" not in str(info.value).split("not found:")[1]
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        load_dataset("cifar100", tmp_path / "nothing")


def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()


def write_idx(folder, rng, packed=False, n_train=5, n_test=3):
    folder.mkdir(parents=True, exist_ok=True)
    data = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8)}
    for name, array in data.items():
        if packed:
            with gzip.open(folder / (name + ".gz"), "wb") as f:
                f.write(_idx(array))
        else:
            (folder / name).write_bytes(_idx(array))
    return data


def test_mnist_idx(tmp_path):
    data = write_idx(tmp_path, np.random.default_rng(3))
    ds = load_dataset("mnist", tmp_path)
    assert ds.train_images.shape == (5, 1, 28, 28) and ds.test_images.shape == (3, 1, 28, 28)
    assert ds.train_labels.tolist() == data["train-labels-idx1-ubyte"].tolist()
    want = (data["t10k-images-idx3-ubyte"][2].astype(np.float64) / 255 - 0.1307) / 0.3081
    np.testing.assert_allclose(ds.test_images[2, 0].numpy(), want, rtol=1e-5, atol=1e-5)


def test_fashion_mnist_gz_in_torchvision_layout(tmp_path):
    data = write_idx(tmp_path / "FashionMNIST" / "raw", np.random.default_rng(4), packed=True)
    ds = load_dataset("fashion_mnist", tmp_path)
    assert ds.test_labels.tolist() == data["t10k-labels-idx1-ubyte"].tolist()
    assert ds.class_names[9] == "Ankle boot" and ds.mean == (0.2861,)


def test_fashion_mnist_found_where_the_system_package_puts_it_when_no_root_is_given(tmp_path, monkeypatch):
    import ddfast.data as data_module

    system = tmp_path / "usr-share-datasets-fashion-mnist"
    data = write_idx(system, np.random.default_rng(6), packed=True)
    monkeypatch.setattr(data_module, "SYSTEM_FOLDERS", {"fashion_mnist": (("dataset-fashion-mnist", system),)})
    monkeypatch.setenv("DDFAST_DATA", str(tmp_path / "empty"))
    ds = load_dataset("fashion_mnist")
    assert ds.train_labels.tolist() == data["train-labels-idx1-ubyte"].tolist()
    with pytest.raises(FileNotFoundError) as info:  # a root given is the only place looked in
        load_dataset("fashion_mnist", tmp_path / "elsewhere")
    assert "apt-get" not in str(info.value)
    monkeypatch.setattr(data_module, "SYSTEM_FOLDERS",
                        {"fashion_mnist": (("dataset-fashion-mnist", tmp_path / "not-installed"),)})
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist")


def test_idx_missing_and_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist", tmp_path)
    assert str(tmp_path / "t10k-labels-idx1-ubyte") in str(info.value) and "MNIST/raw" in str(info.value)
    write_idx(tmp_path, np.random.default_rng(5))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="bad magic"):
        load_dataset("mnist", tmp_path)


@pytest.mark.parametrize("damage", ["cut short", "cut inside the gzip stream"])
def test_a_truncated_fashion_mnist_file_is_an_error_naming_the_file_and_the_package(tmp_path, monkeypatch, damage):
    from ddfast import data as data_module

    system = tmp_path / "usr-share-datasets-fashion-mnist"
    write_idx(system, np.random.default_rng(7), packed=True, n_train=40)
    path = system / "train-images-idx3-ubyte.gz"
    if damage == "cut short":  # a whole gzip stream whose IDX body is shorter than its header says
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    else:
        path.write_bytes(path.read_bytes()[:-30])
    monkeypatch.setattr(data_module, "SYSTEM_FOLDERS", {"fashion_mnist": (("dataset-fashion-mnist", system),)})
    monkeypatch.setenv("DDFAST_DATA", str(tmp_path / "nothing-here"))
    with pytest.raises(ValueError) as info:
        load_dataset("fashion_mnist")
    message = str(info.value)
    assert str(path) in message and "apt-get install --reinstall dataset-fashion-mnist" in message, message
    mine = tmp_path / "mine"
    shutil.copytree(system, mine)  # a copy of the user's own: the package is the way to a good one
    with pytest.raises(ValueError, match="apt-get install dataset-fashion-mnist puts a good copy in"):
        load_dataset("fashion_mnist", mine)
    monkeypatch.setattr(data_module, "SYSTEM_FOLDERS", {})
    with pytest.raises(ValueError, match="truncated or damaged" if damage != "cut short" else "IDX header says"):
        load_dataset("fashion_mnist", mine)


@pytest.mark.real_data
def test_the_debian_fashion_mnist_files_load_without_a_root():
    ds = load_dataset("fashion_mnist")
    assert tuple(ds.train_images.shape) == (60000, 1, 28, 28) and tuple(ds.test_images.shape) == (10000, 1, 28, 28)
    assert torch.bincount(ds.test_labels).tolist() == [1000] * 10 and ds.class_names[0] == "T-shirt/top"
    assert abs(float(ds.train_images.mean()) - 0.0) < 0.01  # normalised by Fashion-MNIST's mean and std


def _write_png(path, rng, side=8):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    array = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(array).save(path)
    return array


def test_imagefolder_in_memory_and_streamed(tmp_path):
    rng = np.random.default_rng(6)
    first = _write_png(tmp_path / "train" / "b_cat" / "0.png", rng)
    for cls, count in (("a_dog", 2), ("b_cat", 1)):
        for i in range(count):
            _write_png(tmp_path / "train" / cls / f"{i + 1}.png", rng)
    _write_png(tmp_path / "val" / "a_dog" / "x.png", rng)
    _write_png(tmp_path / "val" / "b_cat" / "y.jpg", rng, side=12)  # resized 12 -> 8
    ds = load_dataset("imagefolder", tmp_path)
    assert ds.class_names == ["a_dog", "b_cat"] and ds.train_labels.tolist() == [0, 0, 1, 1]
    assert ds.test_images.shape == (2, 3, 8, 8) and ds.im_size == (8, 8) and not ds.streamed
    want = (first[:, :, 0].astype(np.float64) / 255 - 0.485) / 0.229
    np.testing.assert_allclose(ds.train_images[2, 0].numpy(), want, rtol=1e-5, atol=1e-5)

    streamed = load_dataset("imagefolder", tmp_path, memory_limit=1)
    assert streamed.streamed and streamed.train_images is None
    gen_a, gen_b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    got = list(streamed.loader("train", 3, shuffle=True, generator=gen_a))
    want_batches = list(ds.loader("train", 3, shuffle=True, generator=gen_b))
    assert len(got) == len(want_batches) == 2
    for (x, y), (xw, yw) in zip(got, want_batches):
        torch.testing.assert_close(x, xw)
        assert torch.equal(y, yw)
    with pytest.warns(UserWarning, match="fewer than the 5"):
        got = streamed.sample_class(1, 5, torch.Generator().manual_seed(0))
    assert got.shape == (2, 3, 8, 8)


def test_tiny_imagenet_layout(tmp_path):
    rng = np.random.default_rng(8)
    for wnid in ("n01", "n02"):
        _write_png(tmp_path / "train" / wnid / "images" / f"{wnid}_0.JPEG", rng)
    _write_png(tmp_path / "val" / "images" / "val_0.JPEG", rng)
    _write_png(tmp_path / "val" / "images" / "val_1.JPEG", rng)
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t8\t8\nval_1.JPEG\tn01\t0\t0\t8\t8\n")
    ds = load_dataset("tiny-imagenet", tmp_path, im_size=4)
    assert ds.test_labels.tolist() == [1, 0] and ds.train_images.shape == (2, 3, 4, 4)


def test_imagefolder_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="root/train/<class>"):
        load_dataset("imagefolder", tmp_path)
    _write_png(tmp_path / "train" / "a" / "0.png", np.random.default_rng(9))
    with pytest.raises(FileNotFoundError, match="val_annotations.txt"):
        load_dataset("imagefolder", tmp_path)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_fixed_stratified_split(digits):
    assert digits.train_images.shape == (1438, 1, 16, 16) and digits.test_images.shape == (359, 1, 16, 16)
    total = torch.bincount(digits.train_labels, minlength=10) + torch.bincount(digits.test_labels, minlength=10)
    test = torch.bincount(digits.test_labels, minlength=10)
    assert (test - 0.2 * total).abs().max() <= 0.5  # 20 % of each class, rounded
    assert abs(float(digits.train_images.mean())) < 1e-4 and abs(float(digits.train_images.std()) - 1) < 1e-3
    again = load_dataset("digits", im_size=8)
    assert again.train_images.shape[-1] == 8 and torch.equal(again.train_labels, digits.train_labels)
    assert sum(len(i) for i in digits.indices_per_class) == 1438


def test_sample_class(digits):
    gen = torch.Generator().manual_seed(0)
    idx = digits.sample_class_indices(4, 20, gen)
    assert idx.unique().numel() == 20 and bool((digits.train_labels[idx] == 4).all())
    again = digits.sample_class_indices(4, 20, torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)
    assert torch.equal(digits.sample_class(4, 20, torch.Generator().manual_seed(0)), digits.train_images[idx])
    available = len(digits.indices_per_class[8])
    with pytest.warns(UserWarning, match=f"has {available} training images"):
        assert digits.sample_class(8, 256, gen).shape[0] == available
    with pytest.raises(ValueError, match="c must be"):
        digits.sample_class(10, 1)
    with pytest.raises(ValueError, match="n must be"):
        digits.sample_class(0, -1)


def test_zca_matches_numpy_and_inverts():
    rng = np.random.default_rng(10)
    x = torch.tensor(rng.normal(size=(40, 2, 3, 3)) * rng.uniform(0.1, 2, size=(1, 2, 3, 3)), dtype=torch.float32)
    zca = ZCA.fit(x, eps=0.1)
    flat = x.double().numpy().reshape(40, -1)
    centred = flat - flat.mean(0)
    cov = centred.T @ centred / 39
    u, s, _ = np.linalg.svd(cov)  # independent: SVD of the symmetric covariance
    want = centred @ (u @ np.diag(1 / np.sqrt(s + 0.1)) @ u.T)
    np.testing.assert_allclose(zca(x).double().numpy().reshape(40, -1), want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(zca.inverse(zca(x)), x, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="x must be"):
        zca(torch.zeros(2, 3, 3, 3))


def test_zca_dataset(digits):
    white = load_dataset("digits", zca=True)
    assert white.zca is not None and not white.normalized
    pixels = white.denormalize(white.test_images[:5])
    raw = digits.denormalize(digits.test_images[:5])
    torch.testing.assert_close(pixels, raw, rtol=1e-4, atol=1e-4)


def test_bad_names():
    with pytest.raises(ValueError, match="--dataset must be one of"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match="im_size"):
        load_dataset("digits", im_size=(0, 4))


@pytest.mark.real_data
def test_ddfast_distill_finds_the_debian_fashion_mnist_without_a_data_root(tmp_path):
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    run = subprocess.run([sys.executable, "-m", "ddfast", "distill", "--method", "dm", "--dataset", "fashion_mnist",
                          "--ipc", "1", "--iterations", "2", "--eval-runs", "1", "--eval-epochs", "1", "--set",
                          "batch_real=32", "--quiet", "--device", "cpu", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "DDFAST_DATA": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    assert {"set.pt", "set.png", "loss.png", "results.json"} <= {p.name for p in out.iterdir()}
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "fashion_mnist" and results["iterations"] == 2
    assert 0 <= results["distilled"]["mean"] <= 1 and results["random_real"]["runs"] == 1
