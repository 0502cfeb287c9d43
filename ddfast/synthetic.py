"""Distilled (synthetic) sets: :class:`SyntheticSet`, its files, pictures, and importers for the
sets that the DC and MTT code bases save.

File format (``SyntheticSet.save``): one ``torch.save`` of a dict ``{"format": "ddfast.SyntheticSet",
"version": 2, "images", "labels", "lr", "metadata", "checksum"}`` holding only tensors and JSON-like values, so
``SyntheticSet.load`` reads it with ``torch.load(weights_only=True)`` and verifies the checksum of the rest
(:func:`ddfast._io.save_checked`; version 1 files have none and load with a warning). Writes are atomic
(temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ._io import atomic_torch_save, load_checked, load_torch, save_checked

__all__ = ["SyntheticSet", "from_dc", "from_mtt", "to_dc", "to_mtt", "curves_figure", "plot_curves", "grid_figure", "image_grid",
           "save_image_grid"]

FORMAT = "ddfast.SyntheticSet"
VERSION = 2
_JSON_SCALARS = (str, int, float, bool, type(None))
FIGURE_DPI = 100


def _json_like(value, where: str):
    """``value`` with tuples as lists; raises TypeError naming ``where`` for anything not JSON-like."""
    if isinstance(value, _JSON_SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_like(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a non-str key {k!r}; metadata keys must be str")
            out[k] = _json_like(v, f"{where}[{k!r}]")
        return out
    raise TypeError(f"{where} is a {type(value).__name__}; metadata holds str, int, float, bool, None, lists and "
                    f"dicts only (so that the file loads with weights_only=True)")


@dataclass
class SyntheticSet:
    """A distilled set.

    * ``images``: ``[N, C, H, W]`` floating point, in the model's input space (normalised, or
      ZCA-whitened when ``metadata["zca"]``).
    * ``labels``: ``[N]`` int64 class indices (hard) or ``[N, K]`` floating-point soft labels
      (each row a target distribution over the K classes).
    * ``lr``: the learned learning rate (MTT family), a scalar tensor, or None.
    * ``metadata``: JSON-like dict. Keys ddfast writes and reads: ``method``, ``dataset``, ``ipc``,
      ``num_classes``, ``channels``, ``im_size``, ``mean``, ``std``, ``zca`` (bool),
      ``class_names``, ``iterations``, ``seed``, ``source`` (importers), ``eval_epochs``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    lr: torch.Tensor | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.images, torch.Tensor) or not self.images.is_floating_point():
            got = self.images.dtype if isinstance(self.images, torch.Tensor) else type(self.images).__name__
            raise TypeError(f"images must be a floating-point torch.Tensor, got {got}")
        if self.images.dim() != 4 or self.images.shape[0] == 0:
            raise ValueError(f"images must be [N, C, H, W] with N >= 1, got shape {tuple(self.images.shape)}")
        if not isinstance(self.labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor, got {type(self.labels).__name__}")
        n = self.images.shape[0]
        if self.labels.dim() == 1:
            if self.labels.dtype != torch.int64:
                raise TypeError(f"labels has dtype {self.labels.dtype}; hard labels are int64 (soft labels: a "
                                f"floating-point [N, K] tensor)")
            if self.labels.numel() and int(self.labels.min()) < 0:
                raise ValueError("labels must be non-negative class indices")
        elif self.labels.dim() == 2:
            if not self.labels.is_floating_point():
                raise TypeError(f"soft labels must be floating point, got {self.labels.dtype}")
        else:
            raise ValueError(f"labels must be [N] (hard) or [N, K] (soft), got shape {tuple(self.labels.shape)}")
        if self.labels.shape[0] != n:
            raise ValueError(f"labels has {self.labels.shape[0]} rows but images has {n}")
        if self.lr is not None:
            if not isinstance(self.lr, torch.Tensor):
                self.lr = torch.tensor(float(self.lr))
            if self.lr.numel() != 1 or not self.lr.is_floating_point():
                raise ValueError(f"lr must be a floating-point scalar, got shape {tuple(self.lr.shape)}, "
                                 f"dtype {self.lr.dtype}")
            self.lr = self.lr.reshape(())
        if not isinstance(self.metadata, Mapping):
            raise TypeError(f"metadata must be a dict, got {type(self.metadata).__name__}")
        self.metadata = _json_like(dict(self.metadata), "metadata")

    # ---------------------------------------------------------------------------------- properties

    @property
    def soft(self) -> bool:
        return self.labels.dim() == 2

    @property
    def hard_labels(self) -> torch.Tensor:
        """int64 ``[N]``: the labels, or the argmax of soft labels."""
        return self.labels.argmax(1) if self.soft else self.labels

    @property
    def num_classes(self) -> int:
        if "num_classes" in self.metadata:
            return int(self.metadata["num_classes"])
        return int(self.labels.shape[1]) if self.soft else int(self.labels.max()) + 1

    @property
    def ipc(self) -> int | None:
        """Images per class when every class has the same count (else ``metadata["ipc"]`` or None)."""
        counts = torch.bincount(self.hard_labels.cpu(), minlength=self.num_classes)
        if bool((counts == counts[0]).all()):
            return int(counts[0])
        return self.metadata.get("ipc")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        labels = f"soft {list(self.labels.shape)}" if self.soft else f"hard {list(self.labels.shape)}"
        lr = None if self.lr is None else f"{float(self.lr):.4g}"
        return (f"SyntheticSet(method={self.metadata.get('method')!r}, dataset={self.metadata.get('dataset')!r}, "
                f"ipc={self.ipc}, classes={self.num_classes}, images={list(self.images.shape)} "
                f"{str(self.images.dtype).replace('torch.', '')} on {self.images.device}, labels={labels}, lr={lr})")

    def to(self, device) -> "SyntheticSet":
        return SyntheticSet(self.images.to(device), self.labels.to(device),
                            None if self.lr is None else self.lr.to(device), dict(self.metadata))

    def detach(self) -> "SyntheticSet":
        """A copy with detached tensors (no autograd history, not aliasing the learned tensors)."""
        return SyntheticSet(self.images.detach().clone(), self.labels.detach().clone(),
                            None if self.lr is None else self.lr.detach().clone(), dict(self.metadata))

    # ---------------------------------------------------------------------------------------- files

    def save(self, path: str | os.PathLike) -> str:
        """Write the set to ``path`` atomically with its checksum (CPU tensors); returns the path."""
        data = {"format": FORMAT, "version": VERSION, "images": self.images.detach().cpu(),
                "labels": self.labels.detach().cpu(), "lr": None if self.lr is None else self.lr.detach().cpu(),
                "metadata": self.metadata}
        return save_checked(data, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "SyntheticSet":
        """Read a set written by :meth:`save` (``torch.load(weights_only=True)``, checksum verified)."""
        path = os.fspath(path)
        data = load_checked(path, "a ddfast synthetic set", required=("format", "images", "labels"))
        if data["format"] != FORMAT:
            raise ValueError(f"{path!r} is not a ddfast synthetic set file (no format={FORMAT!r} entry); DC and MTT "
                             f"files load with ddfast.synthetic.from_dc / from_mtt")
        if data.get("version", 0) > VERSION:
            raise ValueError(f"{path!r} has format version {data['version']}; this ddfast reads up to {VERSION}")
        return cls(data["images"], data["labels"], data["lr"], data["metadata"]).to(device)

    # ------------------------------------------------------------------------------------- pictures

    def pixels(self, zca=None) -> torch.Tensor:
        """Images in [0, 1] pixel space (clamped) for display: ZCA-inverted when ``metadata["zca"]``
        (``zca``: the :class:`ddfast.data.ZCA`, e.g. ``dataset.zca``, required then), else
        ``x * std + mean`` with the metadata's mean/std (as is when they are absent)."""
        x = self.images.detach().float().cpu()
        if self.metadata.get("zca"):
            if zca is None:
                raise ValueError("this set is ZCA-whitened (metadata['zca']); pass zca= (the dataset's ZCA "
                                 "transform, e.g. load_dataset(..., zca=True).zca) to show it")
            x = zca.inverse(x)
        elif "mean" in self.metadata and "std" in self.metadata:
            mean = torch.tensor(self.metadata["mean"], dtype=x.dtype).view(-1, 1, 1)
            std = torch.tensor(self.metadata["std"], dtype=x.dtype).view(-1, 1, 1)
            x = x * std + mean
        return x.clamp(0, 1)

    def save_grid(self, path: str | os.PathLike, *, zca=None, min_cell: int = 64, max_per_class: int = 10) -> str:
        """PNG of the set, one labelled row per class (:func:`save_image_grid`); see :meth:`pixels` for the
        colour space."""
        return save_image_grid(path, self.pixels(zca), self.hard_labels.cpu(), self.num_classes, min_cell=min_cell,
                               max_per_class=max_per_class, class_names=self.metadata.get("class_names"),
                               title=self._title())

    def _title(self) -> str:
        parts = [str(self.metadata.get("method", "synthetic set")), self.metadata.get("dataset"),
                 None if self.ipc is None else f"IPC {self.ipc}"]
        return ", ".join(str(p) for p in parts if p)


# ---------------------------------------------------------------------------------------- pictures

def image_grid(pixels: torch.Tensor, labels: torch.Tensor, num_classes: int, *, min_cell: int = 32,
               pad: int = 2) -> torch.Tensor:
    """``[H, W, 3]`` float grid in [0, 1]: row ``c`` holds the images of class ``c`` (white where a
    class has fewer images than the widest row); images are enlarged by an integer factor (nearest
    neighbour) so a cell is at least ``min_cell`` pixels high."""
    n, c, h, w = pixels.shape
    if c not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels to be shown, got {c}")
    scale = max(1, math.ceil(min_cell / h))
    rows = [torch.nonzero(labels == k).flatten() for k in range(num_classes)]
    cols = max(1, max(len(r) for r in rows))
    ch, cw = h * scale + pad, w * scale + pad
    grid = torch.ones(num_classes * ch + pad, cols * cw + pad, 3)
    big = pixels.repeat_interleave(scale, 2).repeat_interleave(scale, 3).expand(n, 3, h * scale, w * scale)
    for k, idx in enumerate(rows):
        for j, i in enumerate(idx.tolist()):
            top, left = pad + k * ch, pad + j * cw
            grid[top:top + h * scale, left:left + w * scale] = big[i].permute(1, 2, 0)
    return grid


def _agg_figure(width_in: float, height_in: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=FIGURE_DPI)


def _save_figure(fig, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png")
    return path


def grid_figure(pixels: torch.Tensor, labels: torch.Tensor, num_classes: int, *, class_names=None,
                title: str | None = None, min_cell: int = 64, max_per_class: int = 10):
    """A matplotlib figure of the set: row ``c`` shows the first ``max_per_class`` images of class ``c``
    (set order), labelled with ``class_names[c]`` (or ``class c``), columns numbered; cells at least
    ``min_cell`` pixels, the figure at least 4 x 3 inches at 100 dpi."""
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
    names = [str(n) for n in class_names] if class_names is not None else [f"class {c}" for c in range(num_classes)]
    shown = torch.cat([torch.nonzero(labels == c).flatten()[:max_per_class] for c in range(num_classes)])
    most = int(torch.bincount(labels, minlength=num_classes).max())
    grid = image_grid(pixels[shown], labels[shown], num_classes, min_cell=min_cell)
    cell_h = (grid.shape[0] - 2) / num_classes
    cols = min(most, max_per_class)
    cell_w = (grid.shape[1] - 2) / max(cols, 1)
    left, right, bottom, top = 1.8, 0.3, 0.6, 0.6  # inches around the grid: row labels, column numbers, title
    grid_w, grid_h = grid.shape[1] / FIGURE_DPI, grid.shape[0] / FIGURE_DPI
    width, height = max(4.0, left + grid_w + right), max(3.0, bottom + grid_h + top)
    fig = _agg_figure(width, height)
    ax = fig.add_axes((left / width, bottom / height, grid_w / width, grid_h / height))
    ax.imshow(grid.numpy(), interpolation="nearest")
    ax.set_yticks([2 + cell_h * (c + 0.5) for c in range(num_classes)], names)
    ax.set_xticks([2 + cell_w * (j + 0.5) for j in range(cols)], [str(j + 1) for j in range(cols)])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel("image of the class" if most <= max_per_class else f"image of the class (first {cols} of {most})")
    fig.suptitle(title or "synthetic set", y=1 - 0.15 / height, va="top")
    return fig


def save_image_grid(path: str | os.PathLike, pixels: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
                    min_cell: int = 64, max_per_class: int = 10, class_names=None, title: str | None = None) -> str:
    """Write :func:`grid_figure` as a PNG (parent folder created)."""
    return _save_figure(grid_figure(pixels, labels, num_classes, class_names=class_names, title=title,
                                    min_cell=min_cell, max_per_class=max_per_class), path)


def curves_figure(curves: Mapping[str, Sequence[float]] | Sequence[float], *,
                  steps: Sequence[float] | Mapping[str, Sequence[float]] | None = None, xlabel: str = "iteration",
                  ylabel: str = "loss", title: str | None = None, logy: bool = False):
    """A matplotlib figure of one curve (a sequence) or several (name -> sequence), axes labelled and titled
    (``title`` defaults to "<ylabel> per <xlabel>"). ``steps``: the x values (one sequence for all curves, or
    one per name; default 0, 1, ...). ``logy`` uses a log scale when every value is positive."""
    if not isinstance(curves, Mapping):
        curves = {ylabel: curves}
    fig = _agg_figure(6, 4)
    ax = fig.add_subplot(1, 1, 1)
    positive = True
    for name, values in curves.items():
        values = [float(v) for v in values]
        xs = steps.get(name) if isinstance(steps, Mapping) else steps
        xs = list(range(len(values))) if xs is None else list(xs)
        if len(xs) != len(values):
            raise ValueError(f"curve {name!r} has {len(values)} values but {len(xs)} steps")
        ax.plot(xs, values, label=name, marker="o" if len(values) < 20 else None)
        positive = positive and all(v > 0 for v in values)
    if logy and positive:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel} per {xlabel}")
    if len(curves) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_curves(path: str | os.PathLike, curves: Mapping[str, Sequence[float]] | Sequence[float], **options) -> str:
    """Write :func:`curves_figure` (same options) as a PNG (parent folder created)."""
    return _save_figure(curves_figure(curves, **options), path)


# -------------------------------------------------------------------------------------- importers

def _numpy_safe_globals() -> list:
    """numpy scalar reconstruction, which DC's accs_all_exps (numpy float64 accuracies) needs."""
    import numpy as np

    found = [np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.int64))]
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            found.append(getattr(__import__(module, fromlist=["scalar"]), "scalar"))
        except (ImportError, AttributeError):
            continue
    return found


def _torch_load(path: Path, what: str):
    return load_torch(path, what, safe_globals=tuple(_numpy_safe_globals()))


def _metadata_from(dataset, extra: dict) -> dict:
    meta = dataset.metadata() if dataset is not None else {}
    meta.update({k: v for k, v in extra.items() if v is not None})
    return meta


def from_dc(path: str | os.PathLike, exp: int = -1, *, dataset=None, method: str | None = None) -> SyntheticSet:
    """A set saved by the DC code base (VICO-UoE/DatasetCondensation main.py / main_DM.py):
    ``res_<method>_<dataset>_<model>_<ipc>ipc.pt`` holds ``{"data": [[image_syn, label_syn], ...],
    "accs_all_exps": {...}}`` with one ``[images, labels]`` pair per experiment; ``exp`` picks one
    (default the last). DC's images are mean/std normalised with its dataset constants; pass the
    matching ``dataset`` (an :class:`ddfast.data.ImageDataset`) to record mean/std/classes in the
    metadata. ``method`` defaults to the one in DC's file name."""
    path = Path(path)
    data = _torch_load(path, "a DC result file")
    if not isinstance(data, dict) or "data" not in data or not isinstance(data["data"], (list, tuple)):
        raise ValueError(f"{str(path)!r} is not a DC result file: expected a dict with 'data': [[images, labels], ...]")
    runs = data["data"]
    if not runs:
        raise ValueError(f"{str(path)!r} holds no experiments ('data' is empty)")
    if not -len(runs) <= exp < len(runs):
        raise ValueError(f"exp must index one of the {len(runs)} experiments in {str(path)!r}, got {exp}")
    pair = runs[exp]
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise ValueError(f"{str(path)!r}: data[{exp}] must be [images, labels]")
    images, labels = pair
    parts = path.stem.split("_")
    if method is None and len(parts) >= 5 and parts[0] == "res":
        method = parts[1]
    ipc = int(parts[-1][:-3]) if parts[-1].endswith("ipc") and parts[-1][:-3].isdigit() else None
    meta = _metadata_from(dataset, {"method": method, "ipc": ipc, "source": f"dc:{path.name}#{exp % len(runs)}"})
    return SyntheticSet(images.float(), labels.long(), None, meta)


def _mtt_file(folder: Path, stem: str) -> Path | None:
    best = folder / f"{stem}_best.pt"
    if best.is_file():
        return best
    numbered = []
    for p in folder.glob(f"{stem}_*.pt"):
        tail = p.stem[len(stem) + 1:]
        if tail.isdigit():
            numbered.append((int(tail), p))
    return max(numbered)[1] if numbered else None


def from_mtt(path: str | os.PathLike, *, labels: str | os.PathLike | None = None,
             lr: float | str | os.PathLike | None = None, dataset=None, zca: bool | None = None,
             method: str = "mtt") -> SyntheticSet:
    """A set saved by MTT (GeorgeCazenavette/mtt-distillation, distill.py): ``path`` is the run folder
    (``logged_files/<dataset>/<run>``) or an images file. In a folder, ``images_best.pt`` and
    ``labels_best.pt`` are used, else the highest-numbered ``images_<it>.pt`` / ``labels_<it>.pt``
    (``images_zca_<it>.pt``, MTT's un-whitened copy for display, is never taken). MTT's distill.py
    logs the learned lr to wandb only; pass it as ``lr`` (a number, or a file holding a scalar
    tensor, as some forks save it); a folder's ``syn_lr_best.pt`` / ``lr_best.pt`` /
    ``syn_lr.pt``, when present, is used otherwise. ``zca`` records whether the images are
    ZCA-whitened (MTT's ``--zca``; default: ``dataset``'s setting, else False)."""
    path = Path(path)
    if path.is_dir():
        images_path = _mtt_file(path, "images")
        if images_path is None:
            raise FileNotFoundError(f"no MTT images file in {path}: expected {path / 'images_best.pt'} or "
                                    f"{path / 'images_<iteration>.pt'} (with the matching labels_*.pt)")
        if labels is None:
            labels = images_path.with_name(images_path.name.replace("images_", "labels_", 1))
        if lr is None:
            for name in ("syn_lr_best.pt", "lr_best.pt", "syn_lr.pt"):
                if (path / name).is_file():
                    lr = path / name
                    break
    else:
        images_path = path
        if labels is None:
            labels = path.with_name(path.name.replace("images_", "labels_", 1))
    labels = Path(labels)
    for p in (images_path, labels):
        if not p.is_file():
            raise FileNotFoundError(f"MTT set: {p} not found (distill.py writes images_<it>.pt and labels_<it>.pt, "
                                    f"or images_best.pt and labels_best.pt, into one folder)")
    images = _torch_load(images_path, "MTT images")
    label_tensor = _torch_load(labels, "MTT labels")
    if not isinstance(images, torch.Tensor) or not isinstance(label_tensor, torch.Tensor):
        raise ValueError(f"{images_path} and {labels} must each hold one tensor")
    if isinstance(lr, (str, os.PathLike)):
        value = _torch_load(Path(lr), "a learned lr")
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise ValueError(f"{lr} must hold a scalar tensor (the learned lr)")
        lr = value.detach().float().reshape(())
    elif lr is not None:
        lr = torch.tensor(float(lr))
    if zca is None:
        zca = bool(dataset is not None and dataset.zca is not None)
    if label_tensor.dim() == 1:  # MTT's hard labels (torch.long); [N, K] soft labels stay as they are
        label_tensor = label_tensor.long()
    meta = _metadata_from(dataset, {"method": method, "source": f"mtt:{images_path.name}"})
    meta["zca"] = bool(zca)
    return SyntheticSet(images.detach().float(), label_tensor.detach(), lr, meta)


# DC's dataset names (its get_dataset) for ddfast's
DC_DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "svhn": "SVHN", "cifar10": "CIFAR10",
                    "cifar100": "CIFAR100"}


def _class_labels(syn: SyntheticSet, what: str) -> torch.Tensor:
    if syn.labels.dim() != 1:
        raise ValueError(f"{what} files hold class labels; this set has soft labels of shape "
                         f"{tuple(syn.labels.shape)} (save it with SyntheticSet.save instead)")
    return syn.labels.detach().cpu().long()


def to_dc(syn: SyntheticSet, folder: str | os.PathLike, *, method: str | None = None, dataset: str | None = None,
          model: str = "ConvNet") -> Path:
    """Write ``syn`` as DC's main.py / main_DM.py result file, ``res_<method>_<dataset>_<model>_<ipc>ipc.pt`` in
    ``folder``: ``{"data": [[images, labels]], "accs_all_exps": {model: []}}`` (one experiment; the images as the
    set holds them, in the dataset's mean/std-normalised space as DC's are; int64 labels on the CPU). ``method``
    and ``dataset`` default to the set's metadata (method upper-cased, as DC's 'DC', 'DSA', 'DM'; dataset by DC's
    name, e.g. 'FashionMNIST'). :func:`from_dc` reads it back. Returns the file's path."""
    labels = _class_labels(syn, "DC result")
    method = method or str(syn.metadata.get("method", "ddfast")).upper()
    dataset = dataset or DC_DATASET_NAMES.get(syn.metadata.get("dataset"), syn.metadata.get("dataset", "dataset"))
    ipc = syn.ipc or int(torch.bincount(labels).max())
    path = Path(folder) / f"res_{method}_{dataset}_{model}_{ipc}ipc.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"data": [[syn.images.detach().cpu(), labels]], "accs_all_exps": {model: []}}, path)
    return path


def to_mtt(syn: SyntheticSet, folder: str | os.PathLike) -> list[Path]:
    """Write ``syn`` as MTT's distill.py leaves its best set in ``logged_files/<dataset>/<run>``:
    ``images_best.pt`` and ``labels_best.pt`` (CPU tensors; the images as the set holds them, ZCA-whitened when
    the set is, as MTT's with --zca), and, when the set has a learned lr, ``syn_lr_best.pt`` (a scalar tensor:
    MTT logs its lr to wandb only; :func:`from_mtt` and ``ddfast eval --source mtt`` read this file). Returns the
    paths written."""
    labels = _class_labels(syn, "MTT")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "images_best.pt", folder / "labels_best.pt"]
    atomic_torch_save(syn.images.detach().cpu(), written[0])
    atomic_torch_save(labels, written[1])
    if syn.lr is not None:
        written.append(folder / "syn_lr_best.pt")
        atomic_torch_save(syn.lr.detach().cpu().reshape(()), written[2])
    return written
