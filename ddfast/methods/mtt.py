"""MTT, matching training trajectories (Cazenavette et al., CVPR 2022;
GeorgeCazenavette/mtt-distillation ``distill.py``).

Each iteration picks an expert trajectory and a start epoch t ~ U{0..max_start_epoch-1}, runs
``syn_steps`` SGD steps of a student from expert epoch t on the synthetic set with the learnable step
size, and matches the result to expert epoch t + expert_epochs with MTT's normalised parameter
distance. ddfast runs the unroll with :func:`ddfast.unroll` (``mode="adjoint"``: exact gradient,
memory constant in the number of steps) and the loss with :func:`ddfast.param_match_loss`.

Under torch.distributed (docs/DESIGN.md#scale-out-with-torchdistributed, mode (c)) every rank runs this loop on the
same state: the expert, the start epoch, the perturbation and the optimiser steps come from the shared seed, and
the unroll splits each inner minibatch over the ranks (``process_group``: the ranks sum the inner gradient, as
MTT's distill.py spreads the student over the GPUs with DataParallel), so every rank gets the same gradients and
holds the same set, the one-process set up to the order of the sums. Rank 0 writes the checkpoints. """

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..distributed import resolve
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
    ``--Iteration 5000``, DSA on, init real. ``mode`` is the unroll mode (adjoint, autograd, tesla);
    ``memory_budget`` what the adjoint may keep of the inner steps' graphs instead of replaying them (a fraction
    of all steps or bytes; None: :func:`ddfast.unroll`'s default; the gradient is the same for any budget)."""

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
    memory_budget: float | int | None = None
    seed: int = 0


def load_experts(buffer) -> list:
    """Trajectories from a list of them, one buffer file, or a folder of ``replay_buffer_{n}.pt`` files."""
    if isinstance(buffer, (str, os.PathLike)):
        paths = expert_files(buffer) if os.path.isdir(buffer) else [os.fspath(buffer)]
        if not paths:
            raise FileNotFoundError(f"no replay_buffer_<n>.pt files in {os.fspath(buffer)!r}; run `ddfast buffer` first")
        return [traj for path in paths for traj in load_buffer(path)]
    return list(buffer)


def check_trajectories(trajectories, need: int) -> None:
    """Trajectories must exist and hold at least ``need`` snapshots (the latest start epoch + expert_epochs)."""
    if not trajectories:
        raise ValueError("buffer holds no expert trajectories")
    short = min(len(t) for t in trajectories)
    if short < need:
        raise ValueError(f"the last start epoch + expert_epochs + 1 = {need} needs trajectories of at least {need} "
                         f"snapshots; the shortest has {short}")


@dataclass
class Student:
    """How the student runs and is matched; MTT's defaults, AST's switches (docs/methods.md#ast).

    * ``momentum``: the inner SGD's momentum (AST 0.9; MTT 0).
    * ``balanced``: AST's balanced inner loss: with h = max_start_epoch // 2 and start epoch t, the inner CE
      is multiplied by log_5(t - h + 8) when t >= h, else divided by log_5(h - t + 8).
    * ``intermediate``: AST's intermediate matching: theta after floor(N/M) * i steps is matched to expert
      epoch t + i for i = 1..M-1 (M = expert_epochs), each with MTT's normalised distance, weight 1.
    * ``perturb``: AST's weight perturbation, as its released distill.py does it: every 4-D (conv) weight
      W of the starting point becomes W + perturb * (D / ||D||) * W (elementwise), D ~ N(0, I) drawn afresh
      each iteration, ||D|| its Frobenius norm over the whole tensor; 0 switches it off. The perturbed start
      is theta_0 of the unroll and of every distance's denominator, as there.
    * ``start_range``: start epochs are drawn from [lo, hi) (SeqMatch's per-subset intervals); None is
      MTT's [0, max_start_epoch).
    """

    momentum: float = 0.0
    balanced: bool = False
    intermediate: bool = False
    perturb: float = 0.0
    start_range: tuple[int, int] | None = None


def balanced_scale(start_epoch: int, max_start_epoch: int) -> float:
    """AST's balanced-loss factor for start epoch t (see :class:`Student`)."""
    half = max_start_epoch // 2  # the released code's integer half
    if start_epoch >= half:
        return math.log(start_epoch - half + 8, 5)
    return 1.0 / math.log(half - start_epoch + 8, 5)


def perturb_weights(theta: torch.Tensor, fm: FlatModel, alpha: float, gen: torch.Generator) -> torch.Tensor:
    """theta with every 4-D weight W replaced by W + alpha * (D / ||D||) * W, D ~ N(0, I) (see :class:`Student`)."""
    parts = []
    for w in fm.unflatten(theta):
        if w.dim() == 4:
            d = torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device)
            w = w + alpha * (d / d.norm()) * w
        parts.append(w.reshape(-1))
    return torch.cat(parts)


def match_trajectories(real: common.RealData, config, trajectories: list, images: torch.Tensor, labels: torch.Tensor,
                       *, method: str, student: Student = Student(), frozen: tuple | None = None, checkpoint=None,
                       recorded=None, progress=True, callback=None, ctx=None) -> tuple[common.LoopState, torch.Tensor]:
    """MTT's outer loop on the learnable ``images`` (a leaf), with ``frozen`` = (images, labels) rows joining
    the set in front of them (SeqMatch's earlier subsets; they get no gradient). Returns the loop state and
    the learned lr. ``config`` carries MTT's fields (:class:`MTTConfig`); ``recorded`` (default ``config``) is
    the configuration the checkpoint records and a resume must match (SeqMatch's whole run). ``ctx``
    (:mod:`ddfast.distributed`, default the job's): with several ranks each unroll splits its minibatches over
    them (the module docstring); every rank must call this with the same arguments."""
    ctx = resolve(ctx)
    if config.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {config.mode!r}")
    lo, hi = student.start_range or (0, config.max_start_epoch)
    if not 0 <= lo < hi:
        raise ValueError(f"start epochs must come from a non-empty range [lo, hi) with lo >= 0, got [{lo}, {hi})")
    check_trajectories(trajectories, hi + config.expert_epochs)
    lr = torch.tensor(config.lr_teacher, dtype=images.dtype, device=real.device, requires_grad=True)
    image_optimizer = torch.optim.SGD([images], lr=config.lr_img, momentum=config.momentum)
    lr_optimizer = torch.optim.SGD([lr], lr=config.lr_lr, momentum=config.momentum)
    net = common.seeded_network(config.model, real.channels, real.num_classes, real.im_size,
                                common.derive_seed(config.seed, "student"), real.device)
    fm = FlatModel(net)
    augment = per_sample(config.dsa_strategy)
    if ctx.distributed:
        # one start on every rank: a replicated initialisation (AST's k-means on GPUs) may differ in the last bits
        dist.broadcast(images.data, src=0, group=ctx.group)
    state = common.LoopState({"images": images, "lr": lr}, {"images": image_optimizer, "lr": lr_optimizer})
    all_labels = labels if frozen is None else torch.cat([frozen[1], labels])
    state.output = lambda: (images.detach() if frozen is None else torch.cat([frozen[0], images.detach()]),
                            all_labels)
    every = config.syn_steps // config.expert_epochs  # AST's middle steps; none before the first step
    matched = [i for i in range(1, config.expert_epochs) if every * i > 0] if student.intermediate else []
    marks = [every * i for i in matched]

    def step(it: int) -> float:
        g = common.generator(config.seed, "expert", it)
        trajectory = trajectories[int(torch.randint(len(trajectories), (1,), generator=g))]
        start_epoch = lo + int(torch.randint(hi - lo, (1,), generator=g))
        snapshot = {i: flatten_snapshot(trajectory[start_epoch + i], fm).to(real.device, images.dtype)
                    for i in (0, *matched, config.expert_epochs)}
        start, target = snapshot[0], snapshot[config.expert_epochs]
        if student.perturb:
            start = perturb_weights(start, fm, student.perturb, common.generator(config.seed, "perturb", it))
        x = images if frozen is None else torch.cat([frozen[0], images])
        scale = balanced_scale(start_epoch, config.max_start_epoch) if student.balanced else 1.0
        out = unroll(fm, start, x, all_labels, lr, config.syn_steps, batch_size=config.batch_syn, augment=augment,
                     generator=common.generator(config.seed, "unroll", it), mode=config.mode,
                     memory_budget=config.memory_budget, momentum=student.momentum, loss_scale=scale,
                     return_steps=marks, process_group=ctx.group)
        theta, middles = out if marks else (out, [])
        loss = param_match_loss(theta, start, target)
        for i, middle in zip(matched, middles):
            loss = loss + param_match_loss(middle, start, snapshot[i])
        image_optimizer.zero_grad(set_to_none=True)
        lr_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        image_optimizer.step()
        lr_optimizer.step()
        if not (torch.isfinite(loss) and torch.isfinite(lr)):
            raise FloatingPointError(
                f"{method}: the matching diverged at iteration {it} (loss {loss.item():.4g}, lr {lr.item():.4g}); "
                f"lower lr_teacher, lr_lr or lr_img (student momentum makes each inner step ~1 / (1 - momentum) "
                f"times longer)")
        return loss.item()

    common.run_loop(state, config.iterations, step, config=recorded or config, method=method, checkpoint=checkpoint,
                    progress=progress, callback=callback, ctx=ctx)
    return state, lr


def distill(data, config: MTTConfig, buffer, *, device=None, checkpoint=None, progress=True, callback=None,
            ctx=None):
    """Distil ``data`` (a :class:`ddfast.data.Dataset`) with MTT against the expert trajectories in
    ``buffer`` (see :func:`load_experts`); returns a :class:`ddfast.SyntheticSet` carrying the learned lr.
    ``ctx``: see :func:`match_trajectories` (several ranks split every inner minibatch)."""
    trajectories = load_experts(buffer)
    real = common.RealData.of(data, device)
    images = common.initial_images(real.images, real.sampler, config.ipc, config.init, config.seed)
    images.requires_grad_(True)
    labels = common.class_labels(real.num_classes, config.ipc, real.device)
    state, lr = match_trajectories(real, config, trajectories, images, labels, method="mtt", checkpoint=checkpoint,
                                   progress=progress, callback=callback, ctx=ctx)
    return common.result_set("mtt", data, config, images, labels, state, lr=lr)
