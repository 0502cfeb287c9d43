"""Pieces every distillation method shares: seeded generators per purpose, real-batch sampling per
class, synthetic-set initialisation, networks built from a seed, and the checkpointed outer loop.

Reproducibility rule: every random draw of iteration ``it`` comes from a
generator derived from ``(seed, purpose, it[, class])``, never from a global RNG stream that runs
across iterations. A resumed run, or a run whose classes are sharded across processes, therefore
draws exactly what a single uninterrupted run draws.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from .._io import load_checked, save_checked
from ..models import get_network


def derive_seed(seed: int, *purpose) -> int:
    """A 63-bit seed determined by ``seed`` and the purpose tags (strings and ints)."""
    text = "/".join(str(p) for p in (seed, *purpose)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def generator(seed: int, *purpose, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded by :func:`derive_seed`."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *purpose))
    return g


def seeded_network(name: str, channels: int, num_classes: int, im_size, seed: int, device) -> nn.Module:
    """``get_network(...)`` initialised under a forked RNG seeded with ``seed`` (the caller's global RNG
    state is left as it was)."""
    device = torch.device(device)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        net = get_network(name, channels, num_classes, tuple(im_size))
    return net.to(device)


class ClassSampler:
    """Draws real images class by class from a dataset's per-class index lists (DC's ``get_images``)."""

    def __init__(self, data):
        self.data = data
        self.num_classes = data.num_classes
        self.counts = [len(ix) for ix in data.indices_per_class]
        empty = [c for c, n in enumerate(self.counts) if n == 0]
        if empty:
            raise ValueError(f"{data.name}: no training images of classes {empty}")

    def sample(self, c: int, n: int, gen: torch.Generator) -> torch.Tensor:
        """min(n, available) distinct training indices of class ``c`` (a random permutation's head)."""
        return self.data.sample_class_indices(c, min(n, self.counts[c]), gen)

    def batch(self, images: torch.Tensor, n: int, seed: int, *purpose,
              classes: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A real batch with min(n, available) images of every class of ``classes`` (default all; class c's
        rows contiguous, classes in order), drawn with one generator per class (so a class's images do not
        depend on which other classes are drawn), and its labels."""
        classes = range(self.num_classes) if classes is None else classes
        picks = [self.sample(c, n, generator(seed, *purpose, c)) for c in classes]
        index = torch.cat(picks)
        labels = torch.cat([torch.full((len(p),), c, dtype=torch.long) for c, p in zip(classes, picks)])
        return images[index.to(images.device)], labels.to(images.device)

    def warn_if_short(self, n: int, what: str) -> None:
        short = [c for c, count in enumerate(self.counts) if count < n]
        if short:
            warnings.warn(f"{self.data.name}: {what} asks for {n} real images per class; classes {short} have "
                          f"fewer ({min(self.counts)} at least), so those batches take all of them", stacklevel=3)


class ClassShard:
    """The classes this rank matches in a class-sharded method (DC/DSA, DM, DREAM+, LCS-GM under torch.distributed:
    mode (b) of docs/DESIGN.md#scale-out-with-torchdistributed). Each rank computes the matching loss of its classes
    (:meth:`ddfast.distributed.Context.classes`, round robin) on their rows of the real batch and of the synthetic
    set; :meth:`reduce` sums the synthetic set's gradient and the loss values over the ranks, so every rank takes
    the same optimiser step and holds the same set. A class's loss term touches only its own synthetic rows, so
    each row's gradient comes from exactly one rank and the summed gradient equals the single-process one bit for
    bit where the per-class computation is the same; loss values differ in summation order only. With one process
    every method runs exactly as before (:meth:`take` returns its input)."""

    def __init__(self, ctx, num_classes: int):
        self.ctx = ctx
        self.classes = ctx.classes(num_classes)
        self._ids = torch.tensor(self.classes)

    def take(self, x: torch.Tensor, labels: torch.Tensor, by: torch.Tensor | None = None):
        """The rows of ``x`` and ``labels`` whose class (``by``, default ``labels``) is one of this rank's, order
        kept."""
        if not self.ctx.distributed:
            return x, labels
        by = labels if by is None else by
        rows = torch.isin(by, self._ids.to(by.device)).nonzero().flatten()
        return x[rows], labels[rows]

    def check_network(self, net: nn.Module, method: str, model: str) -> None:
        """Refuse a BatchNorm network in training mode under several ranks: its statistics would span only this
        rank's classes instead of every class's images."""
        if self.ctx.distributed and has_batchnorm(net) and net.training:
            raise ValueError(f"{method} with model {model!r} (BatchNorm in training mode) normalises over every "
                             f"class's images at once, so its classes cannot be split across {self.ctx.world} "
                             f"ranks: run one process or a model without BatchNorm")

    def reduce(self, grad: torch.Tensor, *values: torch.Tensor | float) -> list[float]:
        """Sum ``grad`` (in place) and the scalar ``values`` over the ranks in one collective; returns the summed
        values as floats."""
        scalars = [float(v) for v in values]
        if not self.ctx.distributed:
            return scalars
        packed = torch.cat([grad.reshape(-1), torch.tensor(scalars, dtype=grad.dtype, device=grad.device)])
        self.ctx.all_reduce_(packed)
        grad.copy_(packed[:grad.numel()].view_as(grad))
        return packed[grad.numel():].tolist()


def initial_images(real_images: torch.Tensor, sampler: ClassSampler, ipc: int, init: str, seed: int) -> torch.Tensor:
    """The starting synthetic set, ``ipc`` images per class with class c in rows c*ipc..(c+1)*ipc-1:
    ``init="real"`` takes random real images of the class (DC/DM/MTT's ``--init real``; with fewer real
    images than ``ipc`` some repeat), ``"noise"`` draws standard normal pixels (``--init noise``)."""
    if init == "noise":
        g = generator(seed, "init", "noise")
        return torch.randn((sampler.num_classes * ipc, *real_images.shape[1:]), generator=g).to(real_images)
    if init != "real":
        raise ValueError(f"init must be 'real' or 'noise', got {init!r}")
    rows = []
    for c in range(sampler.num_classes):
        g = generator(seed, "init", c)
        idx = sampler.sample(c, ipc, g)
        if len(idx) < ipc:
            idx = idx[torch.randint(len(idx), (ipc,), generator=g)]
        rows.append(idx)
    return real_images[torch.cat(rows).to(real_images.device)].detach().clone()


def class_labels(num_classes: int, ipc: int, device) -> torch.Tensor:
    """Hard labels of a synthetic set laid out class by class."""
    return torch.arange(num_classes, device=device).repeat_interleave(ipc)


@dataclass
class LoopState:
    """What a method's outer loop needs to resume: the learnable tensors (and any other tensor state, such
    as an EMA of the set), their optimisers, the next iteration, the loss history and further per-iteration
    series (``series``: name -> values, e.g. one loss term)."""

    tensors: dict[str, torch.Tensor]
    optimizers: dict[str, torch.optim.Optimizer]
    iteration: int = 0
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0
    series: dict[str, list[float]] = field(default_factory=dict)
    output: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None  # the set the method returns, now
    metadata: dict = field(default_factory=dict)  # metadata that set carries (SeqMatch's stages so far)
    start: int = 0  # the iteration the last run_loop call started from (a resumed checkpoint's); not saved

    def state_dict(self) -> dict:
        return {"tensors": {k: v.detach().cpu() for k, v in self.tensors.items()},
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "iteration": self.iteration, "history": list(self.history), "seconds": self.seconds,
                "series": {k: list(v) for k, v in self.series.items()}}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state["tensors"].items():
            with torch.no_grad():
                self.tensors[k].copy_(v)
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.iteration = int(state["iteration"])
        self.history = list(state["history"])
        self.seconds = float(state["seconds"])
        self.series = {k: list(v) for k, v in state.get("series", {}).items()}


@dataclass
class Checkpointing:
    """Write ``path`` every ``every`` iterations (and at the end); ``resume`` continues from it.

    ``run``: what a resume must match besides the method and its config (:func:`ddfast.runner.distill_run` puts
    the data's fingerprint, backend, compile and autocast settings, device type and buffer files there); a
    checkpoint whose record differs is refused. ``provenance``: recorded in the checkpoint, never compared (the
    ddfast version and commit, the world size)."""

    path: str | os.PathLike
    every: int = 50
    resume: bool = False
    run: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def save(self, method: str, config, state: "LoopState") -> None:
        """Write ``state`` with what :func:`read_checkpoint` checks (atomic, with a checksum)."""
        save_checked({"method": method, "config": _plain(config), "run": self.run, "provenance": self.provenance,
                      "state": state.state_dict()}, self.path)


def run_loop(state: LoopState, iterations: int, step: Callable[[int], float | dict], *, config, method: str,
             checkpoint: Checkpointing | None = None, progress: bool = True,
             callback: Callable[[int, LoopState], None] | None = None,
             stop: Callable[[LoopState], bool] | None = None, ctx=None) -> LoopState:
    """Run ``step(it)`` for it = state.iteration .. iterations-1, with a tqdm bar, checkpoints and an
    optional ``callback(it, state)`` after each iteration (periodic evaluation). ``step`` returns its loss,
    or a dict with ``"loss"`` and further named values appended to ``state.series``. ``stop(state)``, checked
    before every iteration (so a resumed run that had stopped stays stopped), ends the loop early.

    With a distributed ``ctx`` (:class:`ddfast.distributed.Context`) every rank runs the loop on the same state;
    only rank 0 shows progress, calls ``callback`` and writes the checkpoint, which every rank reads on resume
    (the folder must be shared)."""
    main = ctx is None or ctx.is_main
    progress = progress and main
    callback = callback if main else None
    saved = read_checkpoint(checkpoint, method, config)
    if saved is not None:
        state.load_state_dict(saved["state"])
        if state.iteration > iterations:
            raise ValueError(f"checkpoint {os.fspath(checkpoint.path)!r} has run {state.iteration} iterations, more "
                             f"than the {iterations} asked for: resume with at least {state.iteration} iterations "
                             f"(or start a new run folder)")
    state.start = state.iteration
    if ctx is not None and checkpoint is not None and checkpoint.resume:
        ctx.check_same(state.iteration, "the iteration this resume starts from")
    bar = _bar(iterations, state.iteration, progress, method)
    try:
        while state.iteration < iterations and not (stop is not None and stop(state)):
            start = time.perf_counter()
            out = step(state.iteration)
            state.seconds += time.perf_counter() - start
            values = dict(out) if isinstance(out, dict) else {"loss": out}
            loss = float(values.pop("loss"))
            state.history.append(loss)
            for name, value in values.items():
                state.series.setdefault(name, []).append(float(value))
            state.iteration += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}")
            if callback is not None:
                callback(state.iteration, state)
            last = state.iteration == iterations or (stop is not None and stop(state))
            if main and checkpoint is not None and (state.iteration % checkpoint.every == 0 or last):
                checkpoint.save(method, config, state)
    finally:
        if bar is not None:
            bar.close()
    return state


def read_checkpoint(checkpoint: Checkpointing | None, method: str, config) -> dict | None:
    """The saved checkpoint when ``checkpoint`` resumes and its file exists (None otherwise), its checksum verified,
    after checking that ``method`` wrote it with the same settings as ``config`` (all but ``iterations``) and the
    same ``checkpoint.run`` record (not compared for checkpoints of older ddfast versions, which have none)."""
    if checkpoint is None or not checkpoint.resume or not os.path.exists(checkpoint.path):
        return None
    saved = load_checked(checkpoint.path, "a ddfast checkpoint", required=("method", "config", "state"))
    if saved["method"] != method:
        raise ValueError(f"checkpoint {os.fspath(checkpoint.path)!r} was written by method {saved['method']!r}, "
                         f"not {method!r}: resume needs the same settings")
    differences = _differences({"config": _resumable(_plain(config))}, {"config": _resumable(saved["config"])})
    if "run" in saved:
        differences += _differences({"run": checkpoint.run}, {"run": saved["run"]})
    if differences:
        raise ValueError(f"checkpoint {os.fspath(checkpoint.path)!r} cannot be resumed by this run: "
                         f"{'; '.join(differences)}. A resume needs the same settings, data and run options as the "
                         f"run that wrote it (only iterations may change)")
    return saved


def _differences(ours, saved, where: str = "") -> list[str]:
    """``where.key: checkpoint X, this run Y`` for each leaf of the dicts ``ours`` and ``saved`` that differs."""
    if isinstance(ours, dict) and isinstance(saved, dict):
        return [line for key in sorted({*ours, *saved}, key=str)
                for line in _differences(ours.get(key), saved.get(key), f"{where}.{key}" if where else str(key))]
    return [] if ours == saved else [f"{where}: checkpoint {saved!r}, this run {ours!r}"]


def _resumable(config: dict | None) -> dict | None:
    """The settings a resumed run must share with the checkpoint: all but the iteration count."""
    return None if config is None else {k: v for k, v in config.items() if k != "iterations"}


def resumable_settings(config) -> dict:
    """A config dataclass's settings that a resume must match (all but ``iterations``), as plain values."""
    return _resumable(_plain(config))


def _plain(config) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}


def _bar(total: int, done: int, enabled: bool, method: str):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are optional (pip install ddfast[cli])
        return None

    return tqdm(total=total, initial=done, desc=method, unit="it", dynamic_ncols=True)


def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


@dataclass
class RealData:
    """The training split of a dataset on the device the method runs on, with its class sampler."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    channels: int
    im_size: tuple[int, int]
    sampler: ClassSampler

    @property
    def device(self) -> torch.device:
        return self.images.device

    @classmethod
    def of(cls, data, device=None) -> "RealData":
        if data.train_images is None:
            raise ValueError(f"{data.name} is streamed from disk (larger than its memory_limit); the distillation "
                             f"methods need the training images in memory: load it with a larger memory_limit")
        device = torch.device(device) if device is not None else data.train_images.device
        images = data.train_images.to(device)
        return cls(images, data.train_labels.to(device), data.num_classes, images.shape[1],
                   tuple(images.shape[2:]), ClassSampler(data))


def result_set(method: str, data, config, images: torch.Tensor, labels: torch.Tensor, state: LoopState,
               lr: torch.Tensor | None = None, extra: dict | None = None):
    """The distilled set as a :class:`ddfast.SyntheticSet`, with the run's metadata."""
    from ..synthetic import SyntheticSet

    metadata = {**data.metadata(), "method": method, "ipc": config.ipc, "iterations": state.iteration,
                "seconds": state.seconds, "config": _plain(config), **(extra or {})}
    return SyntheticSet(images.detach().cpu(), labels.detach().cpu(),
                        lr=None if lr is None else lr.detach().cpu(), metadata=metadata)
