"""SeqMatch, sequential subset matching (Du et al., NeurIPS 2023; shqii1j/seqmatch, ``seqmatch-mtt``;
docs/methods.md#seqmatch).

Each class's IPC budget is split into K subsets S1..SK (IPC 50, K 3: 17/17/16). S1 is distilled by MTT
against the given expert buffer. For k > 1, new experts are trained: each fresh network first learns on
S1, then S1+S2, ..., S1..S(k-1) with each stage's learned lr (the sequential protocol,
:func:`ddfast.eval.train_sequentially`), then on the real data, and only that real-data part is recorded
as the trajectory (snapshot 0 = after the synthetic stages, seqmatch-mtt buffer.py). S_k is distilled with
MTT's loop (:func:`ddfast.methods.mtt.match_trajectories`) while the frozen S1..S(k-1) join the set: every
inner minibatch is drawn from the concatenation and only S_k and its fresh lr learn. Start epochs come
from per-subset intervals (lo, hi): t ~ U{lo..hi - expert_epochs - 1}, as seqmatch-mtt's
``randint(lo, hi - expert_epochs)``. The returned set stores the subsets in order; ``metadata["sequential"]``
makes :func:`ddfast.evaluate` use the sequential protocol.

Under torch.distributed (docs/DESIGN.md#scale-out-with-torchdistributed, mode (c)) each subset's loop splits every
inner minibatch over the ranks (:func:`ddfast.methods.mtt.match_trajectories`), and the ranks share the training of
a subset's experts: expert e draws from its own seed (seed, "experts", k, e), rank r trains experts r, r + W, ...
and the ranks exchange them, so every rank holds the experts one process trains.

Departures (named): the released buffer.py's synthetic-stage length reads an option its parser lacks
(``epoch_eval_train``); ``pretrain_epochs`` defaults to that option's value in distillation (1000). Each
subset keeps the lr of its last iteration (the released code keeps the one of its best evaluation, which
needs test data during distillation).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist

from .._io import load_checked, save_checked
from ..distributed import resolve
from ..eval import train_sequentially
from ..experts import train_experts
from ..models import get_network
from . import _common as common
from ._augment import DEFAULT_STRATEGY, per_sample
from .mtt import MTTConfig, Student, load_experts, match_trajectories


@dataclass
class SeqMatchConfig:
    """seqmatch-mtt's CIFAR-10 IPC 50 run (run.sh): K = 3 subsets, ``intervals`` 0-20 / 0-20 / 0-10, ``syn_steps``
    30, ``expert_epochs`` 2, ``lr_img`` 100, ``lr_lr`` 1e-5, ``lr_teacher`` 0.001 for S1 and
    ``lr_teacher_later`` 0.01 for the others, ``batch_syn`` None (= the rows of the subset being learned,
    drawn from the whole concatenation; S1 alone is the whole set, MTT's None), ``iterations`` 5000 per subset;
    later subsets' experts: ``experts`` 100, ``buffer_epochs`` 20 real-data epochs (SGD ``expert_lr`` 0.01,
    batch 256, DSA) after ``pretrain_epochs`` 1000 per synthetic stage. ``mode`` and ``memory_budget``: the unroll's, as MTT's."""

    ipc: int = 50
    num_subsets: int = 3
    iterations: int = 5000
    intervals: tuple = ((0, 20), (0, 20), (0, 10))
    syn_steps: int = 30
    expert_epochs: int = 2
    lr_img: float = 100.0
    lr_lr: float = 1e-5
    lr_teacher: float = 0.001
    lr_teacher_later: float = 0.01
    batch_syn: int | None = None
    momentum: float = 0.5
    experts: int = 100
    buffer_epochs: int = 20
    pretrain_epochs: int = 1000
    expert_lr: float = 0.01
    model: str = "ConvNet"
    init: str = "real"
    dsa_strategy: str = DEFAULT_STRATEGY
    mode: str = "adjoint"
    memory_budget: float | int | None = None
    seed: int = 0


def subset_sizes(ipc: int, k: int) -> list[int]:
    """Per-class sizes of the K subsets, the remainder spread over the first ones (50, 3 -> 17, 17, 16)."""
    if not 1 <= k <= ipc:
        raise ValueError(f"num_subsets must be in [1, ipc={ipc}] (every subset needs an image per class), got {k}; "
                         f"set num_subsets and one start interval per subset (intervals)")
    return [ipc // k + (j < ipc % k) for j in range(k)]


def stage_config(config: SeqMatchConfig, k: int, size: int, rows: int, total: int) -> MTTConfig:
    """The MTT settings that distil subset k (0-based) of ``size`` images per class (``rows`` learnable rows,
    ``total`` with the frozen ones); subset 0 keeps the run's seed, so K = 1 is MTT with the interval's start
    epochs. A ``batch_syn`` above ``total`` is one whole-set minibatch, as the reference's ``torch.split`` gives."""
    lo, hi = config.intervals[k]
    batch = rows if k > 0 else None
    if config.batch_syn is not None:
        batch = min(config.batch_syn, total)
    return MTTConfig(ipc=size, iterations=config.iterations, syn_steps=config.syn_steps,
                     expert_epochs=config.expert_epochs, max_start_epoch=hi - config.expert_epochs,
                     lr_img=config.lr_img, lr_lr=config.lr_lr,
                     lr_teacher=config.lr_teacher if k == 0 else config.lr_teacher_later,
                     batch_syn=batch, momentum=config.momentum, model=config.model, init=config.init,
                     dsa_strategy=config.dsa_strategy, mode=config.mode,
                     memory_budget=config.memory_budget, seed=config.seed if k == 0 else common.derive_seed(config.seed, "subset", k))


def subset_experts(real: common.RealData, images: torch.Tensor, labels: torch.Tensor, stages: list, config, k: int,
                   progress: bool, ctx=None) -> list:
    """Trajectories for subset k: fresh networks trained by the sequential protocol on the earlier subsets
    (``stages``: (rows, lr) per stage over ``images``), then on the real data with snapshots. Expert e draws
    from the generator (seed, "experts", k, e) alone; with several ranks (``ctx``, default the job's) rank r
    trains experts r, r + W, ... and broadcasts them, so every rank returns the one-process list."""
    ctx = resolve(ctx)
    augment = per_sample(config.dsa_strategy)

    def pretrained():
        net = get_network(config.model, real.channels, real.num_classes, real.im_size).to(real.device)
        gen = torch.Generator().manual_seed(int(torch.randint(2 ** 62, (1,))))  # seeded by train_experts' fork
        return train_sequentially(net, images, labels, stages, epochs=config.pretrain_epochs, augment=augment,
                                  generator=gen)

    mine = {e: train_experts(pretrained, real.images, real.labels, 1, config.buffer_epochs, lr=config.expert_lr,
                             augment=augment, device=real.device, progress=progress and ctx.is_main,
                             generator=common.generator(config.seed, "experts", k, e))[0]
            for e in ctx.shard(config.experts)}
    if not ctx.distributed:
        return [mine[e] for e in range(config.experts)]
    trajectories = []
    for e in range(config.experts):
        box = [mine.get(e)]
        dist.broadcast_object_list(box, src=e % ctx.world, group=ctx.group, device=ctx.device)  # rank e % W trained it (shard)
        trajectories.append(box[0])
    return trajectories


def distill(data, config: SeqMatchConfig, buffer, *, device=None, checkpoint=None, progress=True, callback=None,
            ctx=None):
    """Distil ``data`` with SeqMatch: S1 against the trajectories in ``buffer``, later subsets against experts
    trained here; returns a :class:`ddfast.SyntheticSet` stored subset by subset, with the last subset's lr and
    ``metadata["sequential"]`` (cumulative rows and the lr of every subset). ``ctx`` (default the job's): several
    ranks split every inner minibatch and share the expert training (module docstring); rank 0 writes the
    checkpoints and the experts' files."""
    ctx = resolve(ctx)
    sizes = subset_sizes(config.ipc, config.num_subsets)
    if len(config.intervals) != config.num_subsets:
        raise ValueError(f"intervals must hold one (lo, hi) per subset ({config.num_subsets}), got "
                         f"{config.intervals!r}")
    real = common.RealData.of(data, device)
    images = torch.empty((0, real.channels, *real.im_size), dtype=real.images.dtype, device=real.device)
    labels = torch.empty((0,), dtype=torch.long, device=real.device)
    stages, seconds, earlier_ran = [], 0.0, False
    for k, size in enumerate(sizes):
        rows = size * real.num_classes
        stage = stage_config(config, k, size, rows, images.shape[0] + rows)
        stage_checkpoint = _stage_checkpoint(checkpoint, k, len(sizes), earlier_ran)
        trajectories = load_experts(buffer) if k == 0 else _subset_trajectories(real, images, labels, stages, config,
                                                                                k, stage_checkpoint, progress, ctx)
        learn = common.initial_images(real.images, real.sampler, size, config.init, stage.seed).requires_grad_(True)
        new_labels = common.class_labels(real.num_classes, size, real.device)
        state, lr = match_trajectories(
            real, stage, trajectories, learn, new_labels, method=f"seqmatch-s{k + 1}",
            student=Student(start_range=(config.intervals[k][0], stage.max_start_epoch)),
            frozen=(images, labels) if k else None, checkpoint=stage_checkpoint, recorded=config, progress=progress,
            callback=_observed(callback, k * config.iterations, stages), ctx=ctx)
        earlier_ran = earlier_ran or state.iteration > state.start
        images = torch.cat([images, learn.detach()])
        labels = torch.cat([labels, new_labels])
        stages.append((images.shape[0], float(lr.detach())))
        seconds += state.seconds
    state.seconds = seconds
    sequential = {"rows": [rows for rows, _ in stages], "lrs": [lr for _, lr in stages], "sizes": sizes}
    return common.result_set("seqmatch", data, config, images, labels, state, lr=lr,
                             extra={"sequential": sequential, "iterations": config.iterations * len(sizes)})


def _subset_trajectories(real, images, labels, stages, config, k: int, checkpoint, progress: bool, ctx) -> list:
    """Subset k's experts: with a checkpoint they are saved beside it (``<name>_experts.pt``, with the run's
    settings; by rank 0) and a resume loads them instead of training them again (on a GPU retraining need not give
    the same trajectories)."""
    if checkpoint is None:
        return subset_experts(real, images, labels, stages, config, k, progress, ctx)
    path = Path(checkpoint.path)
    path = path.with_name(f"{path.stem}_experts{path.suffix}")
    settings = common.resumable_settings(config)
    if checkpoint.resume and path.exists():
        saved = load_checked(path, "SeqMatch's saved experts", required=("settings", "trajectories"))
        if saved.get("settings") == settings:
            return saved["trajectories"]
    trajectories = subset_experts(real, images, labels, stages, config, k, progress, ctx)
    if ctx.is_main:
        save_checked({"settings": settings, "trajectories": trajectories}, path)
    return trajectories


def _stage_checkpoint(checkpoint, k: int, count: int, earlier_ran: bool):
    """The last subset writes the run's checkpoint; earlier ones write ``<name>_s<k>.pt`` beside it. Once an
    earlier subset has run iterations in this call (a resume with more iterations), a later subset's checkpoint
    belongs to another S1..S(k-1) and is not resumed."""
    if checkpoint is None:
        return None
    if k < count - 1:
        path = Path(checkpoint.path)
        checkpoint = replace(checkpoint, path=path.with_name(f"{path.stem}_s{k + 1}{path.suffix}"))
    return replace(checkpoint, resume=False) if earlier_ran else checkpoint


def _observed(callback, first: int, stages: list):
    """A loop callback that records on the state the metadata of the set so far (the sequential stages, the current
    subset's with its current lr) and calls ``callback`` with iterations counted over all subsets."""
    def observe(it, state):
        rows = state.output()[0].shape[0]
        done = [(r, lr) for r, lr in stages] + [(rows, float(state.tensors["lr"].detach()))]
        state.metadata["sequential"] = {"rows": [r for r, _ in done], "lrs": [lr for _, lr in done]}
        if callback is not None:
            callback(first + it, state)
    return observe
