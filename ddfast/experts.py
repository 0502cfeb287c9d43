"""Expert trajectories for trajectory matching (docs/semantics.md#flat-models-and-trajectory-matching): train them,
save and load MTT's buffers.

MTT (GeorgeCazenavette/mtt-distillation, buffer.py) trains ``num_experts`` networks from random
initialisations on the real data with SGD (``--lr_teacher 0.01``, ``--mom 0``, ``--l2 0``,
``--batch_train 256``, ``--train_epochs 50``, a fresh shuffle every epoch, DSA augmentation) and
records every parameter after initialisation and after each epoch. It saves them as
``replay_buffer_{n}.pt``: a list of trajectories, each a list of ``epochs + 1`` snapshots, each a
list of per-parameter CPU tensors in ``module.parameters()`` order. distill.py loads those files
and flattens a snapshot with ``torch.cat([p.reshape(-1) for p in snapshot])``, which is
:meth:`ddfast.FlatModel.flatten`'s layout.

:func:`train_experts` follows buffer.py's defaults (without its per-epoch test evaluation and its
optional ``--decay``, which an ``epoch_end`` hook can do), with every random draw reproducible
from one ``torch.Generator``; :func:`save_buffer`, :func:`load_buffer` and :func:`expert_files`
write and read that file layout.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from ._io import atomic_torch_save, load_torch
from .ops._validate import class_labels, positive_int, real_number
from .ops.unroll import FlatModel

__all__ = ["ExpertHooks", "train_experts", "save_buffer", "load_buffer", "expert_files", "next_buffer_path",
           "flatten_snapshot"]

Snapshot = list  # list[torch.Tensor], one per parameter
Trajectory = list  # list[Snapshot], epochs + 1 of them

_BUFFER_NAME = re.compile(r"replay_buffer_(\d+)\.pt")


@dataclass
class ExpertHooks:
    """Optional callables that change how :func:`train_experts` trains (AST, FTD and other variants).

    * ``loss(model, x, y, logits, raw) -> loss``: the training loss of one minibatch (default: mean
      cross-entropy of ``logits`` and ``y``, MTT's ``nn.CrossEntropyLoss()``). ``x`` is the augmented
      batch that produced ``logits``, ``raw`` the same batch before augmentation (AST's gradient penalty
      is taken there).
    * ``optimizer(params) -> torch.optim.Optimizer``: the optimiser of one expert, given its parameter
      list (default: ``torch.optim.SGD(params, lr, momentum, weight_decay)``; ``lr``, ``momentum`` and
      ``weight_decay`` are then unused). Each step calls ``optimizer.step(closure)``, the closure
      zeroing the gradients, running forward and loss and backward, and returning the loss, so
      optimisers that evaluate more than once per step (sharpness-aware ones, as FTD uses) work.
    * ``epoch_end(expert, epoch, model, optimizer, mean_loss)``: called after each epoch (0-based
      indices), after that epoch's snapshot; e.g. MTT's ``--decay`` (lr x 0.1 after epoch
      ``epochs // 2 + 1``) by changing ``optimizer.param_groups``, or logging.
    """

    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    optimizer: Callable[[list], torch.optim.Optimizer] | None = None
    epoch_end: Callable[[int, int, nn.Module, torch.optim.Optimizer, float], None] | None = None


def _snapshot(model: nn.Module) -> Snapshot:
    # A copy even on the CPU: buffer.py's ``p.detach().cpu()`` aliases the live parameter there.
    return [p.detach().to("cpu", copy=True) for p in model.parameters()]


def _check_training_inputs(model_fn, images, labels, augment, generator, hooks) -> None:
    if not callable(model_fn):
        raise TypeError(f"model_fn must be a callable returning an nn.Module, got {type(model_fn).__name__}")
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"images has dtype {images.dtype}; expected a floating-point tensor")
    if images.dim() < 2 or images.shape[0] == 0:
        raise ValueError(f"images must be [N, ...] with N >= 1, got shape {tuple(images.shape)}")
    # int64, 1-D, one per image, on images' device, none negative; the upper bound is the model's
    # output width, checked at the first step (see _check_label_range)
    known = isinstance(labels, torch.Tensor) and labels.dtype == torch.int64 and labels.numel() > 0
    class_labels(labels, images, max(int(labels.max()) + 1, 1) if known else 1, "labels", "images")
    if augment is not None and not callable(augment):
        raise TypeError(f"augment must be callable as augment(x, generator) or None, got {type(augment).__name__}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator (it draws the minibatch order), got one on "
                         f"{generator.device}")
    for name in ("loss", "optimizer", "epoch_end"):
        hook = getattr(hooks, name, None)
        if hook is not None and not callable(hook):
            raise TypeError(f"hooks.{name} must be callable or None, got {type(hook).__name__}")


def _check_label_range(labels: torch.Tensor, logits: torch.Tensor) -> None:
    """Before the first cross-entropy: a label past the model's outputs would be an index error on
    the CPU and a device-side assert on CUDA."""
    top = int(labels.max())
    if logits.dim() == 2 and top >= logits.shape[1]:
        raise ValueError(f"labels has label {top} but the model gives {logits.shape[1]} class scores")


def _progress_bar(total: int, enabled: bool):
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm is an optional dependency; without it training runs without a bar
            pass
        else:
            return tqdm(total=total, desc="experts", unit="epoch")
    return None


def _train_one(model: nn.Module, images, labels, epochs, batch_size, device, augment, generator, hooks,
               make_optimizer, expert, bar) -> Trajectory:
    model.train()
    optimizer = make_optimizer(list(model.parameters()))
    loss_fn = getattr(hooks, "loss", None)
    epoch_end = getattr(hooks, "epoch_end", None)
    trajectory = [_snapshot(model)]
    n = images.shape[0]
    check_range = expert == 0 and loss_fn is None
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        total, count = 0.0, 0
        for idx in torch.split(order, batch_size):
            x = images[idx.to(images.device)].to(device)
            y = labels[idx.to(labels.device)].to(device)
            raw = x
            if augment is not None:
                x = augment(x, generator)
            first = []

            def closure():
                optimizer.zero_grad()
                logits = model(x)
                if check_range:
                    _check_label_range(labels, logits)
                loss = nn.functional.cross_entropy(logits, y) if loss_fn is None else loss_fn(model, x, y, logits, raw)
                loss.backward()
                if not first:
                    first.append(loss.detach())
                return loss

            optimizer.step(closure)
            check_range = False
            total = total + first[0].float() * y.shape[0]  # summed on the device: one sync per epoch
            count += y.shape[0]
        trajectory.append(_snapshot(model))
        mean_loss = float(total) / count
        if epoch_end is not None:
            epoch_end(expert, epoch, model, optimizer, mean_loss)
        if bar is not None:
            bar.set_postfix(expert=expert, loss=f"{mean_loss:.4f}")
            bar.update(1)
    return trajectory


def train_experts(model_fn: Callable[[], nn.Module], images: torch.Tensor, labels: torch.Tensor, num_experts: int,
                  epochs: int, *, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
                  batch_size: int = 256, augment: Callable | None = None, generator: torch.Generator | None = None,
                  hooks: ExpertHooks | None = None, device: torch.device | str | None = None,
                  progress: bool = True) -> list[Trajectory]:
    """Train ``num_experts`` networks and return their trajectories in MTT's buffer layout.

    ``images`` are ``[N, ...]`` floating-point, ``labels`` ``[N]`` int64 class indices on the same
    device (minibatches are moved to ``device``, as buffer.py keeps the data on the CPU). Each expert
    is ``model_fn()`` (a fresh, randomly initialised ``nn.Module``) moved to ``device``
    (default: ``images.device``), trained in train mode for ``epochs`` epochs of minibatches of
    ``batch_size`` over a fresh permutation of ``images`` (the last batch may be smaller, as with
    MTT's ``DataLoader(shuffle=True)``), with mean cross-entropy and
    ``torch.optim.SGD(lr, momentum, weight_decay)``: MTT buffer.py's defaults ``--lr_teacher 0.01``,
    ``--mom 0``, ``--l2 0``, ``--batch_train 256``. ``augment(x, generator)``, if given, transforms
    each minibatch on ``device`` (MTT applies DSA here). ``hooks`` (:class:`ExpertHooks`) may replace
    the loss and the optimiser and observe each epoch.

    Returns ``[trajectory per expert]``, a trajectory being ``epochs + 1`` snapshots (after
    initialisation, then after each epoch), a snapshot being CPU copies of the parameters in
    ``model.parameters()`` order: :func:`save_buffer` writes it as MTT's ``replay_buffer_{n}.pt``.

    Randomness: the minibatch order and ``augment`` draw from ``generator`` (a CPU
    ``torch.Generator``; default a fresh one with a non-deterministic seed). ``model_fn()`` and the
    training of each expert run under ``torch.random.fork_rng`` seeded from ``generator``, so
    weight initialisation and any global-RNG draw inside (dropout) are reproducible too, and the
    caller's global RNG state is left as it was. The same seed gives the same trajectories on the
    same device and software (CUDA kernels may still be non-deterministic unless
    ``torch.use_deterministic_algorithms`` is set). ``progress`` shows a tqdm bar (if tqdm is installed).
    """
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    _check_training_inputs(model_fn, images, labels, augment, generator, hooks)
    positive_int(num_experts, "num_experts")
    positive_int(epochs, "epochs")
    positive_int(batch_size, "batch_size")
    lr = real_number(lr, "lr", positive=True)
    momentum = real_number(momentum, "momentum")
    weight_decay = real_number(weight_decay, "weight_decay")
    device = images.device if device is None else torch.device(device)
    make_optimizer = getattr(hooks, "optimizer", None)
    if make_optimizer is None:
        def make_optimizer(params):
            return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    fork_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    trajectories = []
    bar = _progress_bar(num_experts * epochs, progress)
    try:
        for expert in range(num_experts):
            seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
            with torch.random.fork_rng(devices=fork_devices):
                torch.manual_seed(seed)
                model = model_fn()
                if not isinstance(model, nn.Module):
                    raise TypeError(f"model_fn must return an nn.Module, got {type(model).__name__}")
                model = model.to(device)
                trajectories.append(_train_one(model, images, labels, epochs, batch_size, device, augment,
                                               generator, hooks, make_optimizer, expert, bar))
    finally:
        if bar is not None:
            bar.close()
    return trajectories


def _check_buffer(trajectories, where: str) -> None:
    """MTT's nested layout: a non-empty list of trajectories, each a non-empty list of snapshots, each a
    non-empty list of floating-point tensors, every snapshot with the first one's tensor shapes."""
    def _is_seq(v):
        return isinstance(v, (list, tuple))

    if not _is_seq(trajectories):
        raise TypeError(f"{where} must be a list of trajectories, got {type(trajectories).__name__}")
    if not trajectories:
        raise ValueError(f"{where} has no trajectories")
    shapes = None
    for i, trajectory in enumerate(trajectories):
        if not _is_seq(trajectory):
            raise TypeError(f"{where}[{i}] must be a list of snapshots (one per epoch), got {type(trajectory).__name__}")
        if not trajectory:
            raise ValueError(f"{where}[{i}] has no snapshots")
        for e, snapshot in enumerate(trajectory):
            if not _is_seq(snapshot):
                raise TypeError(f"{where}[{i}][{e}] must be a list of parameter tensors, got "
                                f"{type(snapshot).__name__}")
            for k, p in enumerate(snapshot):
                if not isinstance(p, torch.Tensor):
                    raise TypeError(f"{where}[{i}][{e}][{k}] must be a torch.Tensor, got {type(p).__name__}")
                if not p.is_floating_point():
                    raise TypeError(f"{where}[{i}][{e}][{k}] has dtype {p.dtype}; parameters are floating-point")
            got = [tuple(p.shape) for p in snapshot]
            if shapes is None:
                if not got:
                    raise ValueError(f"{where}[{i}][{e}] has no parameter tensors")
                shapes = got
            elif got != shapes:
                if len(got) != len(shapes):
                    raise ValueError(f"{where}[{i}][{e}] has {len(got)} parameter tensors but {where}[0][0] has "
                                     f"{len(shapes)}")
                k = next(k for k, (a, b) in enumerate(zip(got, shapes)) if a != b)
                raise ValueError(f"{where}[{i}][{e}][{k}] has shape {got[k]} but {where}[0][0][{k}] has {shapes[k]}")


def save_buffer(path: str | os.PathLike, trajectories: Sequence[Trajectory]) -> None:
    """Write ``trajectories`` to ``path`` in MTT's ``replay_buffer_{n}.pt`` layout (``torch.save`` of
    nested lists of detached CPU tensors; the parent folder is created if missing).

    Atomic: the data goes to a temporary file in the same folder, is flushed and fsynced, then
    renamed onto ``path``; on any error the temporary file is removed and an existing ``path`` is
    left untouched."""
    _check_buffer(trajectories, "trajectories")
    data = [[[p.detach().to("cpu") for p in snapshot] for snapshot in trajectory] for trajectory in trajectories]
    atomic_torch_save(data, path)


def load_buffer(path: str | os.PathLike) -> list[Trajectory]:
    """Read an MTT ``replay_buffer_{n}.pt`` (``torch.load(weights_only=True)`` onto the CPU) and check
    its nesting: trajectories -> snapshots -> per-parameter tensors, all snapshots of one shape."""
    path = os.fspath(path)
    data = load_torch(path, "an expert buffer (MTT's replay_buffer layout)")
    _check_buffer(data, f"buffer {path!r}")
    return [[list(snapshot) for snapshot in trajectory] for trajectory in data]


def expert_files(folder: str | os.PathLike) -> list[str]:
    """The ``replay_buffer_{n}.pt`` files in ``folder``, by ``n`` (numeric order: 2 before 10); empty
    if there are none. (MTT's distill.py stops at the first missing ``n``; this lists them all.)"""
    folder = os.fspath(folder)
    found = []
    for name in os.listdir(folder):
        match = _BUFFER_NAME.fullmatch(name)
        if match and os.path.isfile(os.path.join(folder, name)):
            found.append((int(match.group(1)), os.path.join(folder, name)))
    return [path for _, path in sorted(found)]


def next_buffer_path(folder: str | os.PathLike) -> str:
    """``folder/replay_buffer_{n}.pt`` with the smallest ``n`` not taken: buffer.py's naming when saving."""
    folder = os.fspath(folder)
    n = 0
    while os.path.exists(os.path.join(folder, f"replay_buffer_{n}.pt")):
        n += 1
    return os.path.join(folder, f"replay_buffer_{n}.pt")


def flatten_snapshot(snapshot: Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
                     module: nn.Module | FlatModel) -> torch.Tensor:
    """One flat parameter vector from a snapshot (``FlatModel(module).flatten``: checks the count and
    shapes against ``module``'s parameters; a mapping by parameter name works too). This is the
    vector distill.py builds with ``torch.cat([p.reshape(-1) for p in snapshot])``."""
    flat = module if isinstance(module, FlatModel) else FlatModel(module)
    return flat.flatten(snapshot)
