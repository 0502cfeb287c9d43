"""ddfast.synthetic: save/load round trip and atomicity, PNG grid and curve plots, DC and MTT importers."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from ddfast.data import ZCA
from ddfast.synthetic import SyntheticSet, from_dc, from_mtt, image_grid, plot_curves


def _set(soft=False, lr=None, n_per=2, k=3):
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(n_per * k, 1, 4, 4, generator=gen)
    labels = torch.arange(k).repeat_interleave(n_per)
    if soft:
        noise = torch.rand(n_per * k, k, generator=gen) * 0.1
        labels = torch.nn.functional.one_hot(labels, k) + noise
        labels = labels / labels.sum(1, keepdim=True)
    meta = {"method": "dm", "dataset": "digits", "im_size": (4, 4), "mean": [0.3], "std": [0.3], "zca": False,
            "nested": {"a": (1, 2.5, None)}}
    return SyntheticSet(images, labels, lr, meta)


@pytest.mark.parametrize("soft, lr", [(False, None), (True, 0.0123)])
def test_save_load_round_trip(tmp_path, soft, lr):
    syn = _set(soft, lr)
    syn.save(tmp_path / "sub" / "set.pt")
    back = SyntheticSet.load(tmp_path / "sub" / "set.pt")
    assert torch.equal(back.images, syn.images) and torch.equal(back.labels, syn.labels)
    assert back.metadata == {**syn.metadata, "im_size": [4, 4], "nested": {"a": [1, 2.5, None]}}
    assert (back.lr is None) == (lr is None) and (lr is None or abs(float(back.lr) - lr) < 1e-7)
    assert back.soft == soft and back.ipc == 2 and back.num_classes == 3
    assert os.listdir(tmp_path / "sub") == ["set.pt"]


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "set.pt"
    _set().save(path)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _set(soft=True).save(path)
    with pytest.raises(OSError, match="disk full"):
        _set().save(tmp_path / "new.pt")
    assert sorted(os.listdir(tmp_path)) == ["set.pt"] and path.read_bytes() == before


def test_load_refuses_foreign_files(tmp_path):
    torch.save({"images": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a ddfast synthetic set"):
        SyntheticSet.load(tmp_path / "other.pt")
    torch.save({"format": "ddfast.SyntheticSet", "obj": ZCA}, tmp_path / "code.pt")  # a class: not weights-only
    with pytest.raises(ValueError, match="weights_only=True"):
        SyntheticSet.load(tmp_path / "code.pt")


def test_validation():
    images = torch.zeros(2, 1, 4, 4)
    with pytest.raises(TypeError, match="labels has dtype torch.int32"):
        SyntheticSet(images, torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="labels has 3 rows"):
        SyntheticSet(images, torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="images must be"):
        SyntheticSet(torch.zeros(2, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"metadata\['bad'\] is a Tensor"):
        SyntheticSet(images, torch.zeros(2, dtype=torch.int64), metadata={"bad": torch.zeros(1)})
    with pytest.raises(ValueError, match="lr must be"):
        SyntheticSet(images, torch.zeros(2, dtype=torch.int64), lr=torch.zeros(2))


def test_grid_png(tmp_path):
    from matplotlib import image as mpimg

    syn = _set(n_per=2, k=3)
    path = syn.save_grid(tmp_path / "grid.png", min_cell=8)
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    picture = mpimg.imread(path)
    # 3 rows, 2 columns of 8x8 cells (4x4 images enlarged twice), 2-pixel gaps around them
    assert picture.shape[:2] == (3 * 10 + 2, 2 * 10 + 2)
    grid = image_grid(syn.pixels(), syn.hard_labels, 3, min_cell=8)
    want = (syn.images[2, 0] * 0.3 + 0.3).clamp(0, 1)  # class 1's first image, denormalised
    torch.testing.assert_close(grid[12:20:2, 2:10:2, 0], want)


def test_grid_inverts_zca(tmp_path):
    pixels = torch.rand(20, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    zca = ZCA.fit(pixels)
    syn = SyntheticSet(zca(pixels[:4]), torch.tensor([0, 0, 1, 1]), metadata={"zca": True})
    with pytest.raises(ValueError, match="pass zca="):
        syn.save_grid(tmp_path / "z.png")
    torch.testing.assert_close(syn.pixels(zca), pixels[:4], rtol=1e-4, atol=1e-4)
    assert os.path.exists(syn.save_grid(tmp_path / "z.png", zca=zca))


def test_plot_curves(tmp_path):
    path = plot_curves(tmp_path / "loss.png", {"dm": [3.0, 2.0, 1.5], "dc": [2.0, 1.0, 0.5]}, steps=[0, 10, 20],
                       logy=True, title="loss")
    assert open(path, "rb").read(4) == b"\x89PNG"
    assert os.path.exists(plot_curves(tmp_path / "one.png", [1.0, 0.5]))
    with pytest.raises(ValueError, match="has 2 values but 3 steps"):
        plot_curves(tmp_path / "bad.png", [1.0, 0.5], steps=[0, 1, 2])


def test_from_dc(tmp_path):
    # DC main.py: torch.save({'data': data_save, 'accs_all_exps': accs_all_exps}, 'res_DC_MNIST_ConvNet_2ipc.pt'),
    # one [image_syn, label_syn] per experiment; its accuracies are numpy float64 scalars
    runs = [[torch.randn(4, 1, 28, 28), torch.tensor([0, 0, 1, 1])] for _ in range(2)]
    path = tmp_path / "res_DC_MNIST_ConvNet_2ipc.pt"
    torch.save({"data": runs, "accs_all_exps": {"ConvNet": [np.float64(0.91), np.float64(0.9)]}}, path)
    syn = from_dc(path)
    assert torch.equal(syn.images, runs[1][0]) and torch.equal(syn.labels, runs[1][1])
    assert syn.metadata["method"] == "DC" and syn.metadata["ipc"] == 2 and syn.lr is None
    assert torch.equal(from_dc(path, exp=0).images, runs[0][0])
    with pytest.raises(ValueError, match="exp must index"):
        from_dc(path, exp=2)
    torch.save([1, 2], tmp_path / "res_x.pt")
    with pytest.raises(ValueError, match="not a DC result file"):
        from_dc(tmp_path / "res_x.pt")


def test_from_mtt(tmp_path):
    images, labels = torch.randn(6, 3, 8, 8), torch.arange(3).repeat_interleave(2)
    torch.save(images, tmp_path / "images_best.pt")
    torch.save(labels, tmp_path / "labels_best.pt")
    torch.save(images + 1, tmp_path / "images_zca_1000.pt")
    torch.save(images * 2, tmp_path / "images_1000.pt")
    torch.save(labels, tmp_path / "labels_1000.pt")
    syn = from_mtt(tmp_path, lr=0.01)
    assert torch.equal(syn.images, images) and torch.equal(syn.labels, labels)
    assert abs(float(syn.lr) - 0.01) < 1e-9 and syn.metadata["method"] == "mtt" and syn.metadata["zca"] is False
    torch.save(torch.tensor(0.02), tmp_path / "syn_lr_best.pt")
    assert abs(float(from_mtt(tmp_path).lr) - 0.02) < 1e-7
    numbered = from_mtt(tmp_path / "images_1000.pt", zca=True)
    assert torch.equal(numbered.images, images * 2) and numbered.metadata["zca"] is True and numbered.lr is None
    (tmp_path / "images_best.pt").unlink()
    (tmp_path / "labels_best.pt").unlink()
    assert torch.equal(from_mtt(tmp_path).images, images * 2)  # the highest numbered images_<it>.pt
    with pytest.raises(FileNotFoundError, match="images_best.pt"):
        from_mtt(tmp_path / "empty_dir_does_not_exist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="images_best.pt"):
        from_mtt(tmp_path / "empty")
