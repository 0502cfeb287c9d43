"""ddfast.synthetic: save/load round trip and atomicity, PNG grid and curve plots, DC and MTT importers."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from ddfast.data import ZCA
from ddfast.synthetic import SyntheticSet, curves_figure, from_dc, from_mtt, grid_figure, image_grid, plot_curves


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


def test_grid_cells_hold_the_denormalised_images():
    syn = _set(n_per=2, k=3)
    grid = image_grid(syn.pixels(), syn.hard_labels, 3, min_cell=8)
    # 3 rows, 2 columns of 8x8 cells (4x4 images enlarged twice), 2-pixel gaps around them
    assert grid.shape[:2] == (3 * 10 + 2, 2 * 10 + 2)
    want = (syn.images[2, 0] * 0.3 + 0.3).clamp(0, 1)  # class 1's first image, denormalised
    torch.testing.assert_close(grid[12:20:2, 2:10:2, 0], want)


def _figure_texts(fig) -> set[str]:
    ax = fig.axes[0]
    return {t.get_text() for t in ax.get_yticklabels() + ax.get_xticklabels()} | {ax.get_xlabel(),
                                                                                 fig.get_suptitle()}


@pytest.mark.parametrize("ipc", [1, 10])
def test_set_picture_is_legible_and_labelled(tmp_path, ipc):
    from matplotlib import image as mpimg

    names = [f"digit {c}" for c in range(10)]
    syn = SyntheticSet(torch.rand(10 * ipc, 1, 8, 8), torch.arange(10).repeat_interleave(ipc),
                       metadata={"method": "dm", "dataset": "digits", "class_names": names})
    path = syn.save_grid(tmp_path / "grid.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    height, width = mpimg.imread(path).shape[:2]
    assert height >= 10 * 64 and width >= 400 and width >= ipc * 64  # every cell at least 64 px
    texts = _figure_texts(grid_figure(syn.pixels(), syn.hard_labels, 10, class_names=names, title=syn._title()))
    assert set(names) <= texts and f"dm, digits, IPC {ipc}" in texts
    assert {str(j) for j in range(1, ipc + 1)} <= texts


def test_set_picture_caps_large_ipc():
    syn = _set(n_per=30, k=2)
    fig = grid_figure(syn.pixels(), syn.hard_labels, 2, max_per_class=10)
    texts = _figure_texts(fig)
    assert "class 0" in texts and "10" in texts and "11" not in texts
    assert "image of the class (first 10 of 30)" in texts


def test_repr_is_short():
    syn = SyntheticSet(torch.zeros(500, 3, 32, 32), torch.arange(10).repeat_interleave(50), lr=torch.tensor(0.01),
                       metadata={"method": "mtt", "dataset": "cifar10"})
    text = repr(syn)
    assert len(text) < 200 and "tensor(" not in text
    assert all(part in text for part in ("'mtt'", "ipc=50", "[500, 3, 32, 32] float32", "lr=0.01"))


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


def test_curves_have_labelled_axes_and_a_title():
    ax = curves_figure({"dm": [3.0, 2.0]}, ylabel="test accuracy %").axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("iteration", "test accuracy %",
                                                                  "test accuracy % per iteration")
    assert curves_figure([1.0], title="DM, digits").axes[0].get_title() == "DM, digits"


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


def test_export_to_dc_and_mtt_layouts_read_back(tmp_path):
    from ddfast.cli import main
    from ddfast.synthetic import to_dc, to_mtt

    images, labels = torch.randn(6, 1, 28, 28), torch.arange(3).repeat_interleave(2)
    syn = SyntheticSet(images, labels, torch.tensor(0.03),
                       {"method": "dsa", "dataset": "fashion_mnist", "num_classes": 3})
    path = to_dc(syn, tmp_path / "dc")
    assert path.name == "res_DSA_FashionMNIST_ConvNet_2ipc.pt"
    raw = torch.load(path, weights_only=True)  # DC's layout: one [images, labels] experiment, accuracies per model
    assert set(raw) == {"data", "accs_all_exps"} and raw["accs_all_exps"] == {"ConvNet": []}
    assert torch.equal(raw["data"][0][0], images) and raw["data"][0][1].dtype == torch.long
    back = from_dc(path)
    assert torch.equal(back.images, images) and torch.equal(back.labels, labels) and back.metadata["ipc"] == 2
    written = to_mtt(syn, tmp_path / "mtt")
    assert [p.name for p in written] == ["images_best.pt", "labels_best.pt", "syn_lr_best.pt"]
    back = from_mtt(tmp_path / "mtt")
    assert torch.equal(back.images, images) and torch.equal(back.labels, labels) and abs(float(back.lr) - 0.03) < 1e-7
    syn.save(tmp_path / "set.pt")
    with pytest.raises(SystemExit) as done:
        main(["export", str(tmp_path / "set.pt"), "--to", "dc", "--out", str(tmp_path / "cli"), "--method", "DM"])
    assert done.value.code == 0
    assert (tmp_path / "cli" / "res_DM_FashionMNIST_ConvNet_2ipc.pt").is_file()
    soft = SyntheticSet(images, torch.randn(6, 3), None, {})
    with pytest.raises(ValueError, match="soft labels"):
        to_mtt(soft, tmp_path / "soft")
