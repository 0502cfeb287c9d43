"""MTT, matching training trajectories (Cazenavette et al., CVPR 2022;
GeorgeCazenavette/mtt-distillation ``distill.py``).

Each iteration picks an expert trajectory and a start epoch t ~ U{0..max_start_epoch-1}, runs
``syn_steps`` SGD steps of a student from expert epoch t on the synthetic set with the learnable step
size, and matches the result to expert epoch t + expert_epochs with MTT's normalised parameter
distance. ddfast runs the unroll with :func:`ddfast.unroll` (``mode="adjoint"``: exact gradient,
memory constant in the number of steps) and the loss with :func:`ddfast.param_match_loss`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..experts import expert_files, flatten_snapshot, load_buffer
from ..ops.param_match_loss import param_match_loss
from ..ops.unroll import MODES, FlatModel, unroll
from . import _common as common
from ._augment import DEFAULT_STRATEGY, per_sample


@dataclass
class MTTConfig:
    """MTT's CIFAR-10 IPC 10 defaults (distill.py and its README table): ``--syn_steps 30``,
    ``--expert_epochs 2``, ``--max_start_epoch 20``, ``--lr_img 1000``, ``--lr_lr 1e-05``,
    ``--lr_teacher 0.01``, ``--batch_syn`` the whole set (None), SGD momentum 0.5 on images and lr,
    ``--Iteration 5000``, DSA on, init real. ``mode`` is the unroll mode (adjoint, autograd, tesla)."""

    ipc: int = 10
    iterations: int = 5000
    syn_steps: int = 30
    expert_epochs: int = 2
    max_start_epoch: int = 20
    lr_img: float = 1000.0
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01
    batch_syn: int | None = None
    momentum: float = 0.5
    model: str = "ConvNet"
    init: str = "real"
    dsa_strategy: str = DEFAULT_STRATEGY
    mode: str = "adjoint"
    seed: int = 0


def load_experts(buffer) -> list:
    """Trajectories from a list of them, one buffer file, or a folder of ``replay_buffer_{n}.pt`` files."""
    if isinstance(buffer, (str, os.PathLike)):
        paths = expert_files(buffer) if os.path.isdir(buffer) else [os.fspath(buffer)]
        if not paths:
            raise FileNotFoundError(f"no replay_buffer_<n>.pt files in {os.fspath(buffer)!r}; run `ddfast buffer` first")
        return [traj for path in paths for traj in load_buffer(path)]
    return list(buffer)


def distill(data, config: MTTConfig, buffer, *, device=None, checkpoint=None, progress=True, callback=None):
    """Distil ``data`` (a :class:`ddfast.data.Dataset`) with MTT against the expert trajectories in
    ``buffer`` (see :func:`load_experts`); returns a :class:`ddfast.SyntheticSet` carrying the learned lr."""
    if config.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {config.mode!r}")
    trajectories = load_experts(buffer)
    if not trajectories:
        raise ValueError("buffer holds no expert trajectories")
    need = config.max_start_epoch + config.expert_epochs
    short = min(len(t) for t in trajectories)
    if short < need:
        raise ValueError(f"max_start_epoch + expert_epochs = {need} needs trajectories of at least {need} snapshots; "
                         f"the shortest has {short}")
    real = common.RealData.of(data, device)
    images = common.initial_images(real.images, real.sampler, config.ipc, config.init, config.seed)
    images.requires_grad_(True)
    labels = common.class_labels(real.num_classes, config.ipc, real.device)
    lr = torch.tensor(config.lr_teacher, dtype=images.dtype, device=real.device, requires_grad=True)
    image_optimizer = torch.optim.SGD([images], lr=config.lr_img, momentum=config.momentum)
    lr_optimizer = torch.optim.SGD([lr], lr=config.lr_lr, momentum=config.momentum)
    student = common.seeded_network(config.model, real.channels, real.num_classes, real.im_size,
                                    common.derive_seed(config.seed, "student"), real.device)
    fm = FlatModel(student)
    augment = per_sample(config.dsa_strategy)
    state = common.LoopState({"images": images, "lr": lr}, {"images": image_optimizer, "lr": lr_optimizer})

    def step(it: int) -> float:
        g = common.generator(config.seed, "expert", it)
        trajectory = trajectories[int(torch.randint(len(trajectories), (1,), generator=g))]
        start_epoch = int(torch.randint(config.max_start_epoch, (1,), generator=g))
        start = flatten_snapshot(trajectory[start_epoch], fm).to(real.device, images.dtype)
        target = flatten_snapshot(trajectory[start_epoch + config.expert_epochs], fm).to(real.device, images.dtype)
        theta = unroll(fm, start, images, labels, lr, config.syn_steps, batch_size=config.batch_syn,
                       augment=augment, generator=common.generator(config.seed, "unroll", it), mode=config.mode)
        loss = param_match_loss(theta, start, target)
        image_optimizer.zero_grad(set_to_none=True)
        lr_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        image_optimizer.step()
        lr_optimizer.step()
        return loss.item()

    common.run_loop(state, config.iterations, step, config=config, method="mtt", checkpoint=checkpoint,
                    progress=progress, callback=callback)
    return common.result_set("mtt", data, config, images, labels, state, lr=lr)
