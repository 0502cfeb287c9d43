"""Real datasets for distillation and evaluation, read from local files only (never downloaded).

:func:`load_dataset` returns an :class:`ImageDataset`: train and test images as ``[N, C, H, W]``
float32 tensors on ``device`` (normalised by the dataset's per-channel mean and std, as DC's
``get_dataset`` does with ``transforms.Normalize``), int64 labels, the class names, mean and std,
and the training indices of each class for fast class sampling (:meth:`ImageDataset.sample_class`).

Datasets and the files each expects under ``root`` (default ``$DDFAST_DATA`` or ``./data``):

* ``"digits"``: scikit-learn's ``load_digits`` (1,797 8x8 grayscale images, 10 classes), no files
  needed: the embedded default. Pixels 0..16 are scaled to [0, 1] and upsampled to 16x16 (or
  ``im_size``) with bilinear interpolation (``align_corners=False``); the train/test split is a
  fixed stratified 80/20 split (per class, a permutation from a generator seeded with 0; 20 % of
  each class, rounded, goes to test). Mean and std are computed on that training split.
* ``"cifar10"`` / ``"cifar100"``: the python-pickle folders ``cifar-10-batches-py/``
  (``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``) and ``cifar-100-python/``
  (``train``, ``test``, ``meta``; fine labels), either under ``root`` or ``root`` itself.
  The pickles are read with an unpickler that only admits numpy arrays and builtin containers.
* ``"mnist"`` / ``"fashion_mnist"``: the IDX files ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each may be
  ``.gz``) in ``root``, ``root/MNIST/raw`` or ``root/mnist`` (``FashionMNIST/raw`` and
  ``fashion_mnist`` for Fashion-MNIST; torchvision's layout works). Without a ``root``, Fashion-MNIST is
  also looked for where Debian's ``dataset-fashion-mnist`` package installs it (``/usr/share/datasets/fashion-mnist``).
* ``"imagefolder"``: ``root/train/<class>/*.png|jpg|jpeg|bmp|webp`` and ``root/val/<class>/...``
  or ``root/test/<class>/...``, or Tiny-ImageNet's validation layout ``root/val/images/*`` with
  ``root/val/val_annotations.txt`` (file name, class folder name, tab separated). Classes are the
  sorted training folder names. Images are decoded with Pillow as RGB, resized (shorter side to
  ``im_size``, bilinear) and centre-cropped when they are not ``im_size`` already (default: the size
  of the first training image). Mean/std: ImageNet's, as DC and MTT use for Tiny-ImageNet. When
  the decoded set would exceed ``memory_limit`` bytes, images stay on disk and are streamed through
  a ``torch.utils.data.DataLoader`` (:meth:`ImageDataset.loader`, :meth:`ImageDataset.images`).

Missing files raise ``FileNotFoundError`` naming the exact paths expected and the layout.

``zca=True`` follows MTT (utils.py ``get_dataset``): pixels in [0, 1] are *not* mean/std normalised
but ZCA-whitened with a transform fitted on the training images (:class:`ZCA`, regularisation
``zca_eps`` = 0.1 as MTT's ``kornia.enhance.ZCAWhitening(eps=0.1)``) and applied to both splits;
:meth:`ImageDataset.denormalize` inverts it for visualisation.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from .errors import UsageError
from .usage import did_you_mean

__all__ = ["ImageDataset", "ZCA", "load_dataset", "DATASETS", "default_root"]

DATASETS = ("digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder")

# DC's get_dataset constants (VICO-UoE/DatasetCondensation, utils.py)
_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2861,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
_FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
DEFAULT_MEMORY_LIMIT = 4 * 2 ** 30


def default_root() -> Path:
    """``$DDFAST_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("DDFAST_DATA", "data"))


# Folders a system package installs a dataset into, searched after the default root when no root is given:
# Debian's dataset-fashion-mnist puts the four IDX .gz files in /usr/share/datasets/fashion-mnist.
SYSTEM_FOLDERS = {"fashion_mnist": (("dataset-fashion-mnist", Path("/usr/share/datasets/fashion-mnist")),)}


# --------------------------------------------------------------------------------------------- ZCA

@dataclass
class ZCA:
    """ZCA whitening fitted on a set of images: ``white = (x - mean) @ W`` on flattened images with
    ``W = U diag((S + eps)^-1/2) U^T``, ``U, S`` the eigendecomposition of the (unbiased, N - 1)
    training covariance; the inverse is ``x @ U diag((S + eps)^1/2) U^T + mean``. This is the
    transform of kornia's ``ZCAWhitening(eps, compute_inv=True)`` that MTT uses (computed here in
    float64 with ``torch.linalg.eigh``; stored as float32)."""

    mean: torch.Tensor  # [D]
    matrix: torch.Tensor  # [D, D]
    inverse_matrix: torch.Tensor  # [D, D]
    eps: float
    shape: tuple  # (C, H, W) of one image

    @classmethod
    def fit(cls, images: torch.Tensor, eps: float = 0.1, chunk: int = 4096) -> "ZCA":
        if not isinstance(images, torch.Tensor) or images.dim() < 2 or images.shape[0] < 2:
            raise ValueError("images must be a tensor [N, ...] with N >= 2 to fit a ZCA transform")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        flat = images.reshape(images.shape[0], -1)
        n, d = flat.shape
        mean = flat.sum(0, dtype=torch.float64) / n
        cov = torch.zeros(d, d, dtype=torch.float64, device=flat.device)
        for rows in torch.split(flat, chunk):
            centred = rows.double() - mean
            cov += centred.T @ centred
        cov /= n - 1
        evals, evecs = torch.linalg.eigh(cov)
        evals = evals.clamp_min(0) + eps
        matrix = (evecs * evals.rsqrt()) @ evecs.T
        inverse = (evecs * evals.sqrt()) @ evecs.T
        return cls(mean.float(), matrix.float(), inverse.float(), float(eps), tuple(images.shape[1:]))

    def to(self, device) -> "ZCA":
        return ZCA(self.mean.to(device), self.matrix.to(device), self.inverse_matrix.to(device), self.eps, self.shape)

    def _check(self, x: torch.Tensor, name: str) -> None:
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != self.shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be [N, {', '.join(map(str, self.shape))}], got {got}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Whiten ``x`` ``[N, C, H, W]``."""
        self._check(x, "x")
        m = self.matrix.to(x.device, torch.float32)
        out = (x.reshape(x.shape[0], -1).float() - self.mean.to(x.device)) @ m
        return out.reshape(x.shape).to(x.dtype)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the whitening (for visualisation): ``[N, C, H, W]`` back to pixel space."""
        self._check(x, "x")
        m = self.inverse_matrix.to(x.device, torch.float32)
        out = x.reshape(x.shape[0], -1).float() @ m + self.mean.to(x.device)
        return out.reshape(x.shape).to(x.dtype)

    def state_dict(self) -> dict:
        return {"mean": self.mean, "matrix": self.matrix, "inverse_matrix": self.inverse_matrix, "eps": self.eps,
                "shape": list(self.shape)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "ZCA":
        return cls(state["mean"], state["matrix"], state["inverse_matrix"], float(state["eps"]), tuple(state["shape"]))


# ----------------------------------------------------------------------------------- the dataset

class _FileImages(torch.utils.data.Dataset):
    """Image files decoded on demand (streamed image folders)."""

    def __init__(self, files: Sequence[Path], labels: torch.Tensor, im_size, mean, std):
        self.files, self.labels, self.im_size = list(files), labels, tuple(im_size)
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        pixels = _decode_image(self.files[i], self.im_size)
        return (pixels - self.mean) / self.std, self.labels[i]


@dataclass
class ImageDataset:
    """A labelled image dataset (see the module docstring for the datasets and their layouts).

    ``train_images`` / ``test_images`` are ``[N, C, H, W]`` float32 on ``device``, or ``None`` when
    the set is streamed from disk (``streamed``); use :meth:`images` and :meth:`loader`, which work
    either way. ``train_labels`` / ``test_labels`` are int64 on ``device``. ``indices_per_class[c]``
    holds the training indices of class ``c`` (int64, CPU). ``normalized`` says whether ``mean``
    and ``std`` were applied (False with ZCA, where ``zca`` holds the transform)."""

    name: str
    train_images: torch.Tensor | None
    train_labels: torch.Tensor
    test_images: torch.Tensor | None
    test_labels: torch.Tensor
    num_classes: int
    channels: int
    im_size: tuple
    class_names: list
    mean: tuple
    std: tuple
    device: torch.device
    zca: ZCA | None = None
    normalized: bool = True
    indices_per_class: list = field(default_factory=list)
    _sources: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if not self.indices_per_class:
            labels = self.train_labels.cpu()
            self.indices_per_class = [torch.nonzero(labels == c).flatten() for c in range(self.num_classes)]

    @property
    def streamed(self) -> bool:
        return self.train_images is None

    def __len__(self) -> int:
        return int(self.train_labels.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.test_labels.shape[0])

    def _split(self, split: str):
        if split == "train":
            return self.train_images, self.train_labels
        if split == "test":
            return self.test_images, self.test_labels
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")

    def images(self, split: str, indices) -> torch.Tensor:
        """Images ``indices`` (int64 tensor or sequence) of ``split`` as ``[n, C, H, W]`` on ``device``."""
        data, _ = self._split(split)
        indices = torch.as_tensor(indices, dtype=torch.int64).flatten()
        if data is not None:
            return data[indices.to(data.device)]
        source = self._sources[split]
        if indices.numel() == 0:
            return torch.empty(0, self.channels, *self.im_size, device=self.device)
        return torch.stack([source[int(i)][0] for i in indices]).to(self.device)

    def sample_class_indices(self, c: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``min(n, available)`` distinct training indices of class ``c`` drawn with ``generator`` (a
        CPU generator; warns when the class has fewer than ``n`` images)."""
        if not 0 <= int(c) < self.num_classes:
            raise ValueError(f"c must be a class index in [0, {self.num_classes}), got {c}")
        if isinstance(n, bool) or int(n) != n or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        pool = self.indices_per_class[int(c)]
        if n > pool.numel():
            warnings.warn(f"{self.name}: class {c} has {pool.numel()} training images, fewer than the {n} asked "
                          f"for; taking all {pool.numel()}", stacklevel=2)
        order = torch.randperm(pool.numel(), generator=generator)[:int(n)]
        return pool[order]

    def sample_class(self, c: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``min(n, available)`` random training images of class ``c``, drawn without replacement with
        ``generator`` (DC's ``get_images``), as ``[n, C, H, W]`` on ``device``."""
        return self.images("train", self.sample_class_indices(c, n, generator))

    def loader(self, split: str, batch_size: int = 256, *, shuffle: bool = False,
               generator: torch.Generator | None = None, num_workers: int = 0) -> Iterator:
        """Minibatches ``(images, labels)`` of ``split`` on ``device``; shuffled with ``generator``
        when ``shuffle``. In-memory sets are sliced directly; streamed ones go through a DataLoader."""
        data, labels = self._split(split)
        n = labels.shape[0]
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        if data is not None:
            for idx in torch.split(order, batch_size):
                idx = idx.to(data.device)
                yield data[idx], labels[idx]
            return
        # the same order as in memory: the permutation is the sampler
        loader = torch.utils.data.DataLoader(self._sources[split], batch_size=batch_size, sampler=order.tolist(),
                                             num_workers=num_workers)
        for x, y in loader:
            yield x.to(self.device), y.to(self.device)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] scale (not clamped) from model-space images: inverse ZCA, or ``x * std + mean``."""
        if self.zca is not None:
            return self.zca.inverse(x)
        if not self.normalized:
            return x
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return x * std + mean

    def metadata(self) -> dict:
        """The fields a synthetic set records about its dataset (JSON-like)."""
        return {"dataset": self.name, "num_classes": self.num_classes, "channels": self.channels,
                "im_size": list(self.im_size), "mean": list(self.mean), "std": list(self.std),
                "zca": self.zca is not None, "class_names": list(self.class_names)}


# ------------------------------------------------------------------------------------------ readers

def _missing(dataset: str, layout: str, paths: Sequence[Path]) -> FileNotFoundError:
    listed = "\n  ".join(str(p) for p in paths)
    return FileNotFoundError(f"{dataset}: expected {layout}; not found:\n  {listed}\n(ddfast never downloads "
                             f"data: place the files there or pass their folder: --data-root on the command line, root= (load_dataset) or "
                             f"data_root= (the run functions) in Python; default $DDFAST_DATA, else ./data)")


def _load_digits(im_size):
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # in the cli and data extras
        raise ImportError("the digits dataset needs scikit-learn: pip install scikit-learn (in a ddfast checkout: "
                          "pip install -e '.[cli]' --no-build-isolation)") from exc
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    gen = torch.Generator().manual_seed(0)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n_test = int(round(0.2 * idx.numel()))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    train_idx, test_idx = torch.cat(train_idx).sort().values, torch.cat(test_idx).sort().values
    size = (16, 16) if im_size is None else im_size
    if size != (8, 8):
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    return (images[train_idx], labels[train_idx], images[test_idx], labels[test_idx],
            [str(c) for c in range(10)])


class _ArrayUnpickler(pickle.Unpickler):
    """Admits numpy arrays and builtin containers only (the content of the CIFAR pickles)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
                ("numpy._core.numeric", "_frombuffer"), ("numpy.dtypes", "UInt8DType"),
                ("numpy.dtypes", "Int64DType"), ("_codecs", "encode"), ("builtins", "bytearray")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle")


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        data = _ArrayUnpickler(f, encoding="bytes").load()
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in data.items()}


def _cifar_folder(root: Path, folder: str, files: Sequence[str], dataset: str) -> Path:
    for candidate in (root / folder, root):
        if all((candidate / name).is_file() for name in files):
            return candidate
    base = root / folder
    missing = [base / name for name in files if not (base / name).is_file()]
    raise _missing(dataset, f"the python-pickle folder {base} holding {', '.join(files)}", missing)


def _cifar_pixels(batch: dict) -> torch.Tensor:
    import numpy as np

    data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return torch.from_numpy(data.copy()).float() / 255.0


def _load_cifar(name, root):
    if name == "cifar10":
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        folder = _cifar_folder(root, "cifar-10-batches-py", train_files + ["test_batch", "batches.meta"], name)
        train = [_unpickle(folder / f) for f in train_files]
        test = [_unpickle(folder / "test_batch")]
        names, key = _unpickle(folder / "batches.meta")["label_names"], "labels"
    else:
        folder = _cifar_folder(root, "cifar-100-python", ["train", "test", "meta"], name)
        train, test = [_unpickle(folder / "train")], [_unpickle(folder / "test")]
        names, key = _unpickle(folder / "meta")["fine_label_names"], "fine_labels"
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    def join(batches):
        images = torch.cat([_cifar_pixels(b) for b in batches])
        labels = torch.tensor([int(v) for b in batches for v in b[key]], dtype=torch.int64)
        return images, labels

    (xtr, ytr), (xte, yte) = join(train), join(test)
    return xtr, ytr, xte, yte, names


def _read_idx(path: Path) -> torch.Tensor:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # a cut-off download or a damaged copy
        raise ValueError(f"{path} is truncated or damaged ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}i", raw[4:4 + 4 * ndim])
    count = 1
    for d in dims:
        count *= d
    body = raw[4 + 4 * ndim:]
    if len(body) != count:
        raise ValueError(f"{path}: IDX header says {dims} ({count} bytes) but the file holds {len(body)}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def _load_idx_dataset(name, root, system: bool = False):
    """The IDX files in ``root`` or its usual subfolders; with ``system`` (no root given) also in the folders a
    system package installs them into (:data:`SYSTEM_FOLDERS`)."""
    files = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    subdirs = ("MNIST/raw", "mnist") if name == "mnist" else ("FashionMNIST/raw", "fashion_mnist")
    packages = SYSTEM_FOLDERS.get(name, ()) if system else ()
    for folder in (root, *(root / s for s in subdirs), *(folder for _, folder in packages)):
        found = []
        for f in files:
            plain, packed = folder / f, folder / (f + ".gz")
            found.append(plain if plain.is_file() else packed if packed.is_file() else None)
        if all(found):
            break
    else:
        where = ", ".join([str(root / s) for s in subdirs] + [f"{folder} (apt-get install {package})"
                                                              for package, folder in packages])
        raise _missing(name, f"the IDX files {', '.join(files)} (each may end in .gz) in {root} or in {where}",
                       [root / f for f in files])
    try:
        xtr, ytr, xte, yte = (_read_idx(p) for p in found)
        for path, images, labels in ((found[0], xtr, ytr), (found[2], xte, yte)):
            if images.dim() != 3 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
                raise ValueError(f"{path}: {tuple(images.shape)} images do not match {tuple(labels.shape)} labels")
    except ValueError as exc:
        fixes = [f"apt-get install --reinstall {package}" if folder == found[0].parent else
                 f"apt-get install {package} puts a good copy in {folder}" for package, folder in
                 SYSTEM_FOLDERS.get(name, ())]
        if not fixes:
            raise
        raise ValueError(f"{exc}; {'; '.join(fixes)}") from exc
    names = [str(c) for c in range(10)] if name == "mnist" else list(_FASHION_CLASSES)
    return (xtr.unsqueeze(1).float() / 255.0, ytr.long(), xte.unsqueeze(1).float() / 255.0, yte.long(), names)


def _decode_image(path: Path, im_size) -> torch.Tensor:
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError("image folders need Pillow (pip install pillow)") from exc
    import numpy as np

    with Image.open(path) as img:
        img = img.convert("RGB")
        h, w = im_size
        if img.size != (w, h):
            scale = max(h / img.height, w / img.width)
            rw, rh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
            img = img.resize((rw, rh), Image.BILINEAR)
            left, top = (rw - w) // 2, (rh - h) // 2
            img = img.crop((left, top, left + w, top + h))
        array = np.asarray(img, dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255.0


def _image_files(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)


def _folder_split(root: Path, classes: list, split_dir: Path):
    files, labels = [], []
    index = {c: i for i, c in enumerate(classes)}
    for c in sorted(p.name for p in split_dir.iterdir() if p.is_dir()):
        if c not in index:
            raise ValueError(f"{split_dir / c} is a class folder that {root / 'train'} does not have")
        for f in _image_files(split_dir / c):
            files.append(f)
            labels.append(index[c])
    return files, labels


def _list_imagefolder(root: Path):
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise _missing("imagefolder", f"root/train/<class>/<image> and root/val/<class>/<image> (or root/test/..., "
                                      f"or Tiny-ImageNet's root/val/images + root/val/val_annotations.txt)",
                       [train_dir])
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise _missing("imagefolder", "class folders root/train/<class>/", [train_dir / "<class>"])
    train_files, train_labels = [], []
    for i, c in enumerate(classes):
        # Tiny-ImageNet keeps the training images of a class in train/<class>/images/
        folder = train_dir / c / "images" if (train_dir / c / "images").is_dir() else train_dir / c
        for f in _image_files(folder):
            train_files.append(f)
            train_labels.append(i)
    annotations = root / "val" / "val_annotations.txt"
    if annotations.is_file():
        index = {c: i for i, c in enumerate(classes)}
        test_files, test_labels = [], []
        for line in annotations.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) < 2:
                continue
            if parts[1] not in index:
                raise ValueError(f"{annotations}: class {parts[1]!r} is not a folder of {train_dir}")
            path = root / "val" / "images" / parts[0]
            if not path.is_file():
                raise _missing("imagefolder", f"the images listed in {annotations}", [path])
            test_files.append(path)
            test_labels.append(index[parts[1]])
    else:
        for name in ("val", "test"):
            split_dir = root / name
            if split_dir.is_dir() and any(p.is_dir() for p in split_dir.iterdir()):
                test_files, test_labels = _folder_split(root, classes, split_dir)
                break
        else:
            raise _missing("imagefolder", "a test split: root/val/<class>/<image>, root/test/<class>/<image>, or "
                                          "root/val/images/ with root/val/val_annotations.txt",
                           [root / "val" / "<class>", root / "test" / "<class>", annotations])
    if not train_files:
        raise _missing("imagefolder", f"image files ({', '.join(_IMAGE_SUFFIXES)}) in the class folders",
                       [train_dir / c for c in classes])
    return classes, train_files, train_labels, test_files, test_labels


# --------------------------------------------------------------------------------------- load_dataset

def canonical_name(name: str) -> str:
    """The name of :data:`DATASETS` that ``name`` spells (any case, ``-`` and ``_`` ignored, aliases); raises
    UsageError naming ``--dataset`` otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.lower().replace("-", "").replace("_", "")
    aliases = {"digits": "digits", "cifar10": "cifar10", "cifar100": "cifar100", "mnist": "mnist",
               "fashionmnist": "fashion_mnist", "imagefolder": "imagefolder", "tinyimagenet": "imagefolder",
               "tiny": "imagefolder"}
    if key not in aliases:
        raise UsageError("--dataset", f"--dataset must be one of {list(DATASETS)}, got {name!r}"
                                      f"{did_you_mean(name, DATASETS)}")
    return aliases[key]


def _size(im_size, name="im_size"):
    if im_size is None:
        return None
    if isinstance(im_size, int) and not isinstance(im_size, bool):
        im_size = (im_size, im_size)
    if not isinstance(im_size, (tuple, list)) or len(im_size) != 2 or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in im_size):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {im_size!r}")
    return tuple(im_size)


def _resize(images: torch.Tensor, size) -> torch.Tensor:
    if size is None or tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def load_dataset(name: str, root: str | os.PathLike | None = None, *, im_size=None, zca: bool = False,
                 zca_eps: float = 0.1, device: str | torch.device = "cpu",
                 memory_limit: int = DEFAULT_MEMORY_LIMIT) -> ImageDataset:
    """Load a dataset from local files (see the module docstring for names and layouts).

    ``im_size`` (int or (H, W)) resizes images (bilinear; for digits the upsampling size, default
    16; for image folders the crop size, default the first image's size); by default each dataset
    keeps its native size. ``zca`` whitens as MTT does (no mean/std normalisation, :class:`ZCA`
    with ``zca_eps``, fitted on train). ``device`` holds the tensors. ``memory_limit`` (bytes):
    image folders whose decoded float32 images exceed it are streamed from disk."""
    name = canonical_name(name)
    im_size = _size(im_size)
    given = root is not None
    root = Path(root) if given else default_root()
    device = torch.device(device)
    sources = {}
    if name == "digits":
        xtr, ytr, xte, yte, names = _load_digits(im_size)
        im_size = None  # already at size
    elif name in ("cifar10", "cifar100"):
        xtr, ytr, xte, yte, names = _load_cifar(name, root)
    elif name in ("mnist", "fashion_mnist"):
        xtr, ytr, xte, yte, names = _load_idx_dataset(name, root, system=not given)
    else:
        names, ftr, ltr, fte, lte = _list_imagefolder(root)
        if im_size is None:
            from PIL import Image

            with Image.open(ftr[0]) as first:
                im_size = (first.height, first.width)
        mean, std = _STATS["imagefolder"]
        ytr, yte = torch.tensor(ltr, dtype=torch.int64), torch.tensor(lte, dtype=torch.int64)
        if (len(ftr) + len(fte)) * 3 * im_size[0] * im_size[1] * 4 > memory_limit:
            if zca:
                raise ValueError("zca=True needs the training images in memory; this image folder exceeds "
                                 f"memory_limit={memory_limit} bytes")
            sources = {"train": _FileImages(ftr, ytr, im_size, mean, std), "test": _FileImages(fte, yte, im_size, mean,
                                                                                                std)}
            return ImageDataset(name, None, ytr.to(device), None, yte.to(device), len(names), 3, tuple(im_size),
                                list(names), mean, std, device, _sources=sources)
        xtr = torch.stack([_decode_image(f, im_size) for f in ftr])
        xte = torch.stack([_decode_image(f, im_size) for f in fte]) if fte else torch.empty(0, 3, *im_size)
        im_size = None
    xtr, xte = _resize(xtr, im_size), _resize(xte, im_size)
    channels = int(xtr.shape[1])
    if name == "digits":
        mean = tuple(float(v) for v in xtr.mean(dim=(0, 2, 3)))
        std = tuple(float(v) for v in xtr.std(dim=(0, 2, 3)))
    else:
        mean, std = _STATS[name]
    zca_transform = None
    if zca:
        zca_transform = ZCA.fit(xtr.to(device), eps=zca_eps)
        xtr, xte = zca_transform(xtr.to(device)), zca_transform(xte.to(device))
    else:
        m = torch.tensor(mean).view(1, -1, 1, 1)
        s = torch.tensor(std).view(1, -1, 1, 1)
        xtr, xte = (xtr - m) / s, (xte - m) / s
    num_classes = len(names)
    return ImageDataset(name, xtr.contiguous().to(device), ytr.to(device), xte.contiguous().to(device), yte.to(device),
                        num_classes, channels, tuple(xtr.shape[-2:]), list(names), tuple(mean), tuple(std), device,
                        zca=zca_transform, normalized=not zca)
