"""Evaluation of distilled sets: train fresh networks on the set, report test accuracy
(docs/methods.md#evaluation).

* DC protocol (``protocol="dc"``; DC's and MTT's ``evaluate_synset``): a fresh network trained on
  the set for ``epochs`` epochs of minibatches of 256 (a fresh shuffle each epoch), cross-entropy
  (soft labels: cross-entropy against the label distributions), SGD momentum 0.9, weight decay
  5e-4, lr 0.01 or the set's learned lr, lr x 0.1 from epoch ``epochs // 2`` on (DC recreates the
  optimiser there, so the momentum restarts; so does this). Epochs: 300, or 1000 for the MTT family
  (a set with a learned lr or ``metadata["method"]`` in :data:`MTT_FAMILY`). A SeqMatch set
  (``metadata["sequential"]``) is trained by the sequential protocol (:func:`train_sequentially`): that
  training on S1, then on S1+S2, ..., each stage with its own learned lr and ``epochs`` epochs. DC's loop runs
  ``epochs + 1`` epochs and decays after epoch ``epochs // 2 + 1``; here exactly ``epochs`` are run.
* KD protocol (``protocol="kd"``; SRe2L's/DELT's relabel-and-train): the student is trained on
  (augmented) synthetic images against a frozen ``teacher``'s soft labels of the same augmented
  batch, ``KL(softmax(teacher / T) || softmax(student / T))`` with batch-mean reduction (SRe2L's
  ``KLDivLoss(reduction="batchmean")`` on ``log_softmax(student / T)``, no T^2 factor), AdamW lr
  1e-3, weight decay 0.01, cosine schedule over the epochs (per epoch), T = 20, minibatches of
  :func:`kd_batch_size` (DELT's); augmentation :func:`default_augment` ("kd").

Each result is the mean and (population, as DC's ``np.std``) standard deviation of the test
accuracy over ``runs`` independent runs. Presets: ``"full"`` (5 runs, 300 / 1000 epochs) and
``"quick"`` (2 runs, 60 / 200 epochs: for smoke runs and the quick start; results say which ran) and
``"paper"`` (the method's reference code base's own evaluation, :func:`paper_protocol`: DC 20 runs of 300
epochs without augmentation on ConvNet, DSA and DM 20 runs of 1000 epochs with DSA, the MTT family 5 runs of
1000 epochs; on its own, without a method, 20 runs of 300 / 1000 epochs).

Augmentation: ``augment(x, generator) -> x`` (the callable protocol of :func:`ddfast.unroll` and
:func:`ddfast.train_experts`) transforms every training minibatch; default None (none). DC trains
evaluation networks with DSA; :func:`default_augment` is the one place that picks the
augmentation callers should pass for that.

Randomness: everything draws from generators derived from ``seed`` (or ``generator``): per run a
seed for the network initialisation (made under ``torch.random.fork_rng``, so the global RNG is
left as it was) and a CPU generator for the minibatch order and ``augment``. The same seed gives
the same accuracies on the same device and software.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .compiled import CompiledCall, forward
from .data import ImageDataset
from .models import EVAL_POOL, NETWORKS, get_network
from .synthetic import SyntheticSet

__all__ = ["EvalResult", "evaluate", "cross_architecture", "random_real_baseline", "random_real_set", "kd_batch_size",
           "embedding_diversity", "verdict",
           "train_sequentially", "default_augment", "paper_protocol", "test_accuracy", "PRESETS", "PAPER_PROTOCOLS",
           "MTT_FAMILY"]

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

PRESETS = {"full": {"runs": 5, "epochs": 300, "epochs_mtt": 1000},
           "quick": {"runs": 2, "epochs": 60, "epochs_mtt": 200},
           "paper": {"runs": 20, "epochs": 300, "epochs_mtt": 1000}}
# Preset "paper": how each method's reference code base evaluates its own sets, as (runs, epochs, augmentation).
# DC's main.py: num_eval 20; a DC set trains 300 epochs with get_daparam's augmentation ("dc", see
# paper_protocol), a DSA set 1000 epochs with DSA. DM's main_DM.py: 20 runs, 1000 epochs, DSA. MTT's
# distill.py (and AST's and SeqMatch's, built on it): num_eval 5, epoch_eval_train 1000, DSA. Methods not listed
# keep the full preset's runs and epochs with their default augmentation.
PAPER_PROTOCOLS = {"dc": (20, 300, "dc"), "dsa": (20, 1000, "dsa"), "dm": (20, 1000, "dsa"),
                   "mtt": (5, 1000, "dsa"), "ast": (5, 1000, "dsa"), "seqmatch": (5, 1000, "dsa")}
MTT_FAMILY = frozenset({"mtt", "ftd", "datm", "tesla", "seqmatch", "ast"})
PROTOCOLS = ("dc", "kd")


def kd_batch_size(images: int) -> int:
    """The KD protocol's default minibatch for a set of ``images`` images: DELT's CIFAR-10 evaluation batches
    (100 / 50 / 10 at IPC 50 / 10 / 1), i.e. half the set, at least 10 and at most 100. With SRe2L's 128 or
    DC's 256 a small set gets one AdamW step per epoch, too few to fit it in 300 epochs (on digits at IPC 10
    a random real subset scored 94.0 % with 256, 96.0 % with 50)."""
    return min(100, max(10, images // 2))


def default_augment(protocol: str = "dc", dataset: ImageDataset | None = None) -> Augment | None:
    """The augmentation to pass as ``augment=`` for ``protocol``. DC protocol: ddfast's fused DSA with
    DC's default strategy 'color_crop_cutout_flip_scale_rotate' in 'S' mode, unseeded (a fresh
    parameter set per image, as DC's ``evaluate_synset`` calls DiffAugment). KD protocol: SRe2L's relabel
    transforms, a random-resized crop with scale (0.08, 1) and a horizontal flip per image
    (:class:`ddfast.crops.RandomResizedCropFlip`; SRe2L's FKD CutMix is not applied)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "dc":
        from .ops.dsa import dsa_augment

        return dsa_augment("color_crop_cutout_flip_scale_rotate", mode="S")
    from .crops import RandomResizedCropFlip

    return RandomResizedCropFlip((0.08, 1.0))


def paper_protocol(method: str, dataset: ImageDataset, model: str = "ConvNet") -> dict:
    """The reference code base's evaluation of ``method``'s sets (:data:`PAPER_PROTOCOLS`) as ``{"runs", "epochs",
    "augment"}`` for :func:`evaluate` and :func:`random_real_baseline` with ``preset="paper"``; epochs None for a
    method not listed (the preset's own). DC's own augmentation (``get_daparam``) is none for a ConvNet except on
    MNIST (crop, scale, rotate) and for a BatchNorm network (crop, noise); ddfast approximates those two cases with
    DSA's crop/scale/rotate and crop transforms (DC's rotation range is 45 degrees, DSA's 15; DC's noise is left
    out)."""
    runs, epochs, kind = PAPER_PROTOCOLS.get(method, (PRESETS["full"]["runs"], None, "default"))
    if kind != "dc":
        return {"runs": runs, "epochs": epochs, "augment": default_augment("dc", dataset)}
    from .ops.dsa import dsa_augment

    strategy = "crop_scale_rotate" if dataset.name == "mnist" else "crop" if model.endswith("BN") else None
    return {"runs": runs, "epochs": epochs, "augment": None if strategy is None else dsa_augment(strategy, mode="S")}


@dataclass
class EvalResult:
    """Accuracies (fractions in [0, 1]) of ``runs`` networks ``model`` trained on one set."""

    model: str
    protocol: str
    preset: str
    accuracies: list
    epochs: int
    lr: float
    seconds: float
    seed: int | None
    augmented: bool
    images: int
    extra: dict = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return len(self.accuracies)

    @property
    def mean(self) -> float:
        return sum(self.accuracies) / len(self.accuracies)

    @property
    def std(self) -> float:
        m = self.mean
        return math.sqrt(sum((a - m) ** 2 for a in self.accuracies) / len(self.accuracies))

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(mean=self.mean, std=self.std, runs=self.runs)
        return out

    def __str__(self) -> str:
        return (f"{self.model} ({self.protocol} protocol, {self.preset} preset, {self.epochs} epochs): "
                f"{100 * self.mean:.2f} +- {100 * self.std:.2f} % over {self.runs} runs")


# ------------------------------------------------------------------------------------------ helpers

def _as_set(syn) -> SyntheticSet:
    if isinstance(syn, SyntheticSet):
        return syn
    if isinstance(syn, (tuple, list)) and len(syn) == 2:
        return SyntheticSet(syn[0].detach(), syn[1].detach())
    raise TypeError(f"syn must be a SyntheticSet or an (images, labels) pair, got {type(syn).__name__}")


def _check_common(dataset, model, protocol, preset, augment, teacher):
    if not isinstance(dataset, ImageDataset):
        raise TypeError(f"dataset must be a ddfast.data.ImageDataset (load_dataset), got {type(dataset).__name__}")
    if model not in NETWORKS:
        raise ValueError(f"model must be one of {NETWORKS}, got {model!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    if augment is not None and not callable(augment):
        raise TypeError(f"augment must be callable as augment(x, generator) or None, got {type(augment).__name__}")
    if protocol == "kd" and not isinstance(teacher, nn.Module):
        raise ValueError("protocol='kd' needs teacher= (a trained nn.Module giving the soft labels)")


def _positive(value, name, kind=int):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or \
            (kind is int and int(value) != value):
        raise ValueError(f"{name} must be a positive {'integer' if kind is int else 'number'}, got {value!r}")
    return kind(value)


def _master_generator(seed, generator) -> tuple[torch.Generator, int | None]:
    if generator is not None:
        if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise TypeError("generator must be a CPU torch.Generator")
        return generator, None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed), seed


def _draw_seed(gen: torch.Generator) -> int:
    return int(torch.randint(0, 2 ** 62, (1,), generator=gen))


def _make_network(model, dataset, seed, device) -> nn.Module:
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        net = get_network(model, dataset.channels, dataset.num_classes, dataset.im_size)
    return net.to(device)


@torch.no_grad()
def test_accuracy(net: nn.Module, dataset: ImageDataset, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``net`` (eval mode) on ``dataset``'s test split (the forward compiled per
    :mod:`ddfast.compiled`'s setting)."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    correct, total = 0, 0
    run = CompiledCall(forward, "eval_forward", calls=math.ceil(dataset.num_test / batch_size))
    for x, y in dataset.loader("test", batch_size):
        correct += int((run(net, x.to(device)).argmax(1) == y.to(device)).sum())
        total += int(y.shape[0])
    net.train(was_training)
    return correct / max(total, 1)


def _train(net, images, labels, *, protocol, epochs, lr, batch_size, augment, gen, teacher, temperature, bar):
    net.train()
    n = images.shape[0]
    run = CompiledCall(forward, "train_step", calls=epochs * math.ceil(n / batch_size))
    if protocol == "dc":
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    for epoch in range(epochs):
        if protocol == "dc" and epoch == epochs // 2 and epochs > 1:
            opt = torch.optim.SGD(net.parameters(), lr=lr * 0.1, momentum=0.9, weight_decay=5e-4)
        elif protocol == "kd":
            for group in opt.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * epoch / epochs))
        order = torch.randperm(n, generator=gen).to(images.device)
        for idx in torch.split(order, batch_size):
            x, y = images[idx], labels[idx]
            if augment is not None:
                x = augment(x, gen)
            out = run(net, x)
            if protocol == "dc":
                loss = F.cross_entropy(out, y)
            else:
                with torch.no_grad():
                    target = F.softmax(teacher(x) / temperature, dim=1)
                loss = F.kl_div(F.log_softmax(out / temperature, dim=1), target, reduction="batchmean")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if bar is not None:
            bar.update(1)


def train_sequentially(net, images, labels, stages: Sequence[tuple[int, float]], *, epochs: int, augment=None,
                       generator: torch.Generator, batch_size: int = 256, bar=None) -> nn.Module:
    """SeqMatch's sequential protocol (shqii1j/seqmatch, evaluation.py / buffer.py): for each stage (rows, lr)
    in order, the DC protocol's training (:func:`evaluate`'s, a fresh SGD optimiser per stage) for ``epochs``
    epochs on ``images[:rows]`` (the union S1..Sj of a set stored subset by subset) with that stage's lr;
    returns ``net``."""
    for rows, lr in stages:
        _train(net, images[:rows], labels[:rows], protocol="dc", epochs=epochs, lr=lr, batch_size=batch_size,
               augment=augment, gen=generator, teacher=None, temperature=1.0, bar=bar)
    return net


def _progress(total, desc, enabled):
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        return tqdm(total=total, desc=desc, unit="epoch", leave=False)
    return None


def _run_protocol(draw_set: Callable[[torch.Generator], tuple], dataset, model, *, protocol, preset, runs, epochs, lr,
                  batch_size, augment, teacher, temperature, master, seed, device, progress, mtt_family, images,
                  stages=None):
    cfg = PRESETS[preset]
    runs = _positive(runs, "runs") or cfg["runs"]
    epochs = _positive(epochs, "epochs") or (cfg["epochs_mtt"] if mtt_family else cfg["epochs"])
    batch_size = _positive(batch_size, "batch_size") or (256 if protocol == "dc" else kd_batch_size(images))
    temperature = _positive(temperature, "temperature", float)
    device = dataset.device if device is None else torch.device(device)
    if teacher is not None:
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    accuracies, start = [], time.perf_counter()
    bar = _progress(runs * epochs * max(1, len(stages or ())), f"eval {model}", progress)
    try:
        for _ in range(runs):
            run_gen = torch.Generator().manual_seed(_draw_seed(master))
            x, y, run_lr = draw_set(run_gen)
            run_lr = lr if lr is not None else run_lr
            net = _make_network(model, dataset, _draw_seed(run_gen), device)
            if stages:
                run_stages = [(rows, lr or stage_lr) for rows, stage_lr in stages]  # lr: the caller's override
                train_sequentially(net, x.to(device), y.to(device), run_stages, epochs=epochs, augment=augment,
                                   generator=run_gen, batch_size=batch_size, bar=bar)
            else:
                _train(net, x.to(device), y.to(device), protocol=protocol, epochs=epochs, lr=run_lr,
                       batch_size=batch_size, augment=augment, gen=run_gen, teacher=teacher, temperature=temperature,
                       bar=bar)
            accuracies.append(test_accuracy(net, dataset))
            if bar is not None:
                bar.set_postfix(acc=f"{100 * sum(accuracies) / len(accuracies):.2f}%")
    finally:
        if bar is not None:
            bar.close()
    return EvalResult(model, protocol, preset, accuracies, epochs, float(run_lr), time.perf_counter() - start, seed,
                      augment is not None, images, {"temperature": temperature} if protocol == "kd" else {})


# ------------------------------------------------------------------------------------------ public

def evaluate(syn, dataset: ImageDataset, model: str = "ConvNet", *, protocol: str = "dc", preset: str = "full",
             runs: int | None = None, lr: float | None = None, epochs: int | None = None, batch_size: int | None = None,
             augment: Augment | None = None, teacher: nn.Module | None = None, temperature: float = 20.0,
             seed: int = 0, generator: torch.Generator | None = None, device=None,
             progress: bool = True) -> EvalResult:
    """Train ``runs`` fresh ``model`` networks on ``syn`` (a :class:`SyntheticSet` or an
    ``(images, labels)`` pair) and test them on ``dataset``'s test split (see the module docstring
    for the protocols and presets).

    ``lr``: default the set's learned lr, else 0.01 (DC) / 1e-3 (KD). ``epochs`` / ``runs``: default
    from ``preset`` (MTT-family sets get the longer schedule). ``teacher``: the KD protocol's soft-label
    source (required there). ``seed`` or ``generator`` (a CPU generator) fixes every random draw.
    ``device``: default the dataset's."""
    syn = _as_set(syn)
    _check_common(dataset, model, protocol, preset, augment, teacher)
    if tuple(syn.images.shape[1:]) != (dataset.channels, *dataset.im_size):
        raise ValueError(f"syn has images of shape {tuple(syn.images.shape[1:])} but {dataset.name} has "
                         f"{(dataset.channels, *dataset.im_size)}")
    if syn.soft and syn.labels.shape[1] != dataset.num_classes:
        raise ValueError(f"syn has soft labels over {syn.labels.shape[1]} classes but {dataset.name} has "
                         f"{dataset.num_classes}")
    if not syn.soft and int(syn.labels.max()) >= dataset.num_classes:
        raise ValueError(f"syn has label {int(syn.labels.max())} but {dataset.name} has {dataset.num_classes} classes")
    master, seed = _master_generator(seed, generator)
    learned = syn.lr is not None
    mtt_family = learned or str(syn.metadata.get("method", "")).lower() in MTT_FAMILY
    default_lr = float(syn.lr) if learned else (0.01 if protocol == "dc" else 1e-3)
    lr = _positive(lr, "lr", float)
    images, labels = syn.images.detach(), syn.labels.detach()
    stages = _sequential_stages(syn) if protocol == "dc" else None
    return _run_protocol(lambda gen: (images, labels, default_lr), dataset, model, protocol=protocol, preset=preset,
                         runs=runs, epochs=epochs, lr=lr, batch_size=batch_size, augment=augment, teacher=teacher,
                         temperature=temperature, master=master, seed=seed, device=device, progress=progress,
                         mtt_family=mtt_family, images=len(syn), stages=stages)


def _sequential_stages(syn: SyntheticSet) -> list[tuple[int, float]] | None:
    """A SeqMatch set's stages from ``metadata["sequential"]`` = {"rows": [cumulative rows], "lrs": [lr per
    stage]}, checked; None for other sets."""
    seq = syn.metadata.get("sequential")
    if seq is None:
        return None
    rows, lrs = list(seq.get("rows", ())), list(seq.get("lrs", ()))
    if not rows or len(rows) != len(lrs) or rows != sorted(rows) or rows[-1] != len(syn) or rows[0] < 1:
        raise ValueError(f"syn.metadata['sequential'] must hold increasing cumulative 'rows' ending at the set's size "
                         f"({len(syn)}) and one lr per stage in 'lrs', got {seq!r}")
    return [(int(r), float(lr)) for r, lr in zip(rows, lrs)]


def cross_architecture(syn, dataset: ImageDataset, models: Sequence[str] = EVAL_POOL, **kwargs) -> dict:
    """:func:`evaluate` for each of ``models`` (default DC's pool: MLP, ConvNet, LeNet, AlexNet,
    VGG11, ResNet18), same arguments and seed for each; returns ``{model: EvalResult}``."""
    if isinstance(models, str):
        models = [models]
    for m in models:
        if m not in NETWORKS:
            raise ValueError(f"models has {m!r}; choose from {NETWORKS}")
    return {m: evaluate(syn, dataset, m, **kwargs) for m in models}


def random_real_set(dataset: ImageDataset, ipc: int, generator: torch.Generator | None = None) -> SyntheticSet:
    """``ipc`` random training images per class (``min(ipc, available)``, without replacement),
    hard labels, as a :class:`SyntheticSet` (metadata ``method="random"``)."""
    ipc = _positive(ipc, "ipc")
    xs, ys = [], []
    for c in range(dataset.num_classes):
        x = dataset.sample_class(c, ipc, generator)
        xs.append(x)
        ys.append(torch.full((x.shape[0],), c, dtype=torch.int64, device=x.device))
    meta = {**dataset.metadata(), "method": "random", "ipc": ipc}
    return SyntheticSet(torch.cat(xs), torch.cat(ys), None, meta)


def random_real_baseline(dataset: ImageDataset, ipc: int, model: str = "ConvNet", *, protocol: str = "dc",
                         preset: str = "full", runs: int | None = None, lr: float | None = None,
                         epochs: int | None = None, batch_size: int | None = None, augment: Augment | None = None,
                         teacher: nn.Module | None = None, temperature: float = 20.0, seed: int = 0,
                         generator: torch.Generator | None = None, device=None, progress: bool = True) -> EvalResult:
    """The random-real-subset baseline: each run draws a fresh :func:`random_real_set` of ``ipc``
    images per class (from the run's generator) and evaluates it with the same protocol, preset
    and defaults as a DC-protocol set (lr 0.01, 300 / 60 epochs)."""
    _check_common(dataset, model, protocol, preset, augment, teacher)
    ipc = _positive(ipc, "ipc")
    master, seed = _master_generator(seed, generator)
    default_lr = 0.01 if protocol == "dc" else 1e-3

    def draw(gen):
        subset = random_real_set(dataset, ipc, gen)
        return subset.images, subset.labels, default_lr

    result = _run_protocol(draw, dataset, model, protocol=protocol, preset=preset, runs=runs, epochs=epochs,
                           lr=_positive(lr, "lr", float), batch_size=batch_size, augment=augment, teacher=teacher,
                           temperature=temperature, master=master, seed=seed, device=device, progress=progress,
                           mtt_family=False, images=sum(min(ipc, len(i)) for i in dataset.indices_per_class))
    result.extra["ipc"] = ipc
    return result


def verdict(results: dict) -> str:
    """Whether a run's distilled set beats its random real subset (``results`` as results.json holds them): at
    IPC 1 the gap must exceed the larger std, at higher IPC the mean must be higher."""
    distilled, real = results["distilled"], results["random_real"]
    gap = distilled["mean"] - real["mean"]
    if results["ipc"] == 1:
        return "beats (gap > larger std)" if gap > max(distilled["std"], real["std"]) else "does not beat"
    return "beats (higher mean)" if gap > 0 else "does not beat"


def embedding_diversity(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """DELT's diversity measure: the mean over classes of the mean pairwise cosine distance (1 - cosine
    similarity, over the pairs i < j) between the ``net.embed`` features (the teacher's penultimate layer, eval
    mode) of a class's images. Classes with fewer than two images are skipped; hard labels [N]."""
    if labels.dim() != 1:
        raise ValueError(f"labels must be hard labels [N], got shape {tuple(labels.shape)}")
    if not hasattr(net, "embed"):
        raise TypeError(f"net ({type(net).__name__}) has no embed() method for penultimate features")
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    with torch.no_grad():
        feats = torch.cat([net.embed(x.to(device)) for x in torch.split(images, batch_size)]).double()
    net.train(was_training)
    feats = F.normalize(feats.flatten(1), dim=1)
    labels = labels.to(device)
    distances = []
    for c in torch.unique(labels).tolist():
        f = feats[labels == c]
        n = f.shape[0]
        if n < 2:
            continue
        sim = f @ f.T
        distances.append(float((1 - sim).triu(1).sum()) / (n * (n - 1) / 2))
    if not distances:
        raise ValueError("embedding_diversity needs a class with at least two images")
    return sum(distances) / len(distances)
