"""Label-cycle-shifting gradient matching (Neural Networks 191:107819, 2025).

Only the abstract is public, so this is a reading of it with every choice a named option
(docs/methods.md#lcs-gm): a network pre-trained on real data computes the cross-entropy gradients of a
real batch and of the synthetic images under cyclically shifted labels y' = (y + s) mod K, the shift s
cycling over 1..K-1 from round to round (s = 0 is plain gradient matching); the mismatched labels give
larger, more varied gradients to match. The loss adds lambda times DM's class-mean distance of the same
network's embeddings. An exponential moving average of the synthetic set across rounds is the output,
and the run may stop early when the gradient-matching loss stops improving.

Each round: per-class Siamese DSA on both batches, :func:`ddfast.per_class_gradients` for all classes,
one :func:`ddfast.grad_distance` call and one :func:`ddfast.class_mean_distance` call, one SGD step on
the images, then the EMA update.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ..compiled import CompiledCall, embed, forward
from ..distributed import resolve
from ..ops.class_mean_distance import class_mean_distance
from ..ops.grad_distance import grad_distance
from ..ops.per_class_gradients import class_loss, per_class_gradients
from . import _common as common
from ._augment import DEFAULT_STRATEGY, ClassSiamese, per_sample
from .dc import train_network_epoch

SHIFTS = ("cycle", "none")
NETWORKS = ("fixed", "fresh")


@dataclass
class LCSGMConfig:
    """Options (defaults are this implementation's reading of the abstract):

    * ``shift``: ``"cycle"`` uses s = 1 + (round mod (K - 1)) in round ``round``; ``"none"`` keeps s = 0
      (plain gradient matching, the ablation).
    * ``dm_weight``: lambda of the added class-mean (DM) term; 0 drops it.
    * ``ema``: beta of S_ema <- beta S_ema + (1 - beta) S after every round (the EMA set is returned);
      0 returns the last set.
    * ``network``: ``"fixed"`` pre-trains one network (``pretrain_epochs`` on the real data, SGD
      ``pretrain_lr`` momentum 0.9, per-image DSA) and matches on it every round; ``"fresh"``
      initialises and pre-trains a new one every round (more varied gradients, costlier).
    * ``early_exit_window`` W > 0: stop when the mean gradient-matching loss of the last W rounds improved
      on the W rounds before by less than ``early_exit_tol`` (relative); the result records the rounds
      used. 0 runs every round. With ``shift="cycle"`` take W a multiple of K - 1 (one shift cycle), so that
      both windows hold the same shifts.
    Image optimiser as DC's: SGD ``lr_img`` 0.1, momentum 0.5; real batch 256 per class; metric ``ours``."""

    ipc: int = 10
    iterations: int = 1000
    lr_img: float = 0.1
    momentum: float = 0.5
    batch_real: int = 256
    metric: str = "ours"
    shift: str = "cycle"
    dm_weight: float = 0.1
    ema: float = 0.9
    network: str = "fixed"
    pretrain_epochs: int = 2
    pretrain_lr: float = 0.01
    early_exit_window: int = 0
    early_exit_tol: float = 1e-3
    model: str = "ConvNet"
    init: str = "real"
    dsa_strategy: str = DEFAULT_STRATEGY
    strategy: str = "auto"  # per_class_gradients strategy
    seed: int = 0


def label_shift(config: LCSGMConfig, round_: int, num_classes: int) -> int:
    """The shift s of round ``round_``: 0 without shifting (or with one class), else 1..K-1 in turn."""
    if config.shift == "none" or num_classes < 2:
        return 0
    return 1 + round_ % (num_classes - 1)


def pretrained_network(config: LCSGMConfig, real: common.RealData, purpose,
                       train_forward: CompiledCall | None = None) -> torch.nn.Module:
    """A network initialised from ``(seed, "net", purpose)`` and trained ``pretrain_epochs`` on the real
    data (minibatches of 256, per-image DSA, SGD momentum 0.9); ``train_forward``: how it runs in training
    (:func:`ddfast.methods.dc.train_network_epoch`)."""
    net = common.seeded_network(config.model, real.channels, real.num_classes, real.im_size,
                                common.derive_seed(config.seed, "net", purpose), real.device)
    optimizer = torch.optim.SGD(net.parameters(), lr=config.pretrain_lr, momentum=0.9)
    augment = per_sample(config.dsa_strategy)
    gen = common.generator(config.seed, "pretrain", purpose)
    for _ in range(config.pretrain_epochs):
        train_network_epoch(net, optimizer, real.images, real.labels, 256, augment, gen, train_forward)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def plateaued(gm: list[float], window: int, tol: float) -> bool:
    """The early-exit criterion: the mean of the last ``window`` values improved on the mean of the
    ``window`` before them by less than ``tol`` (relative); False while fewer than 2 windows exist."""
    if len(gm) < 2 * window:
        return False
    before, recent = sum(gm[-2 * window:-window]) / window, sum(gm[-window:]) / window
    return (before - recent) < tol * abs(before)


def early_exit(config: LCSGMConfig):
    """The stopping rule on the gradient-matching loss series, or None when disabled."""
    if config.early_exit_window <= 0:
        return None
    return lambda state: plateaued(state.series.get("gm", []), config.early_exit_window, config.early_exit_tol)


def distill(data, config: LCSGMConfig, *, device=None, checkpoint=None, progress=True, callback=None, ctx=None):
    """Distil ``data`` with label-cycle-shifting GM; returns the EMA set (or the last set with ``ema=0``)
    as a :class:`ddfast.SyntheticSet` whose metadata records the rounds run and whether it stopped early.
    The seconds recorded include the pre-training of the fixed network.

    ``ctx`` (:mod:`ddfast.distributed`, default the job's): with several ranks each matches its classes
    (:class:`~ddfast.methods._common.ClassShard`; class c's gradients under its shifted label (c + s) mod K); the
    pre-training and the EMA run on every rank from the shared seed, and the early-exit rule reads the loss summed
    over the ranks, so every rank stops at the same round."""
    if config.shift not in SHIFTS:
        raise ValueError(f"shift must be one of {SHIFTS}, got {config.shift!r}")
    if config.network not in NETWORKS:
        raise ValueError(f"network must be one of {NETWORKS}, got {config.network!r}")
    if not 0.0 <= config.ema < 1.0:
        raise ValueError(f"ema must be in [0, 1), got {config.ema!r}")
    ctx = resolve(ctx)
    real = common.RealData.of(data, device)
    K = real.num_classes
    shard = common.ClassShard(ctx, K)
    if ctx.distributed and config.dm_weight:  # the class-mean term embeds in training mode
        shard.check_network(common.seeded_network(config.model, real.channels, K, real.im_size, 0, "cpu"), "lcs_gm",
                            config.model)
    images = common.initial_images(real.images, real.sampler, config.ipc, config.init, config.seed)
    images.requires_grad_(True)
    ema = images.detach().clone()
    labels = common.class_labels(K, config.ipc, real.device)
    real.sampler.warn_if_short(config.batch_real, "batch_real")
    optimizer = torch.optim.SGD([images], lr=config.lr_img, momentum=config.momentum)
    siamese = ClassSiamese.from_strategy(config.dsa_strategy, K)
    state = common.LoopState({"images": images, "ema": ema}, {"images": optimizer},
                             output=lambda: (ema if config.ema > 0 else images, labels))
    nets = 1 if config.network == "fixed" else config.iterations
    train_forward = CompiledCall(forward, "train_step",
                                 nets * config.pretrain_epochs * math.ceil(real.images.shape[0] / 256))
    embed_real = CompiledCall(embed, "embed", config.iterations)
    embed_syn = CompiledCall(embed, "embed_grad", config.iterations)
    real_loss = CompiledCall(class_loss, "class_gradients", config.iterations * K)
    fixed = None
    if config.network == "fixed":  # pre-trained once; its weights go into the checkpoint (a resume loads them)
        start = time.perf_counter()
        fixed = pretrained_network(config, real, "fixed", train_forward)
        state.seconds = time.perf_counter() - start
        state.tensors.update({f"net.{name}": t for name, t in [*fixed.named_parameters(), *fixed.named_buffers()]})

    def step(it: int) -> dict:
        net = fixed if fixed is not None else pretrained_network(config, real, it, train_forward)
        s = label_shift(config, it, K)
        x_real, y_real = real.sampler.batch(real.images, config.batch_real, config.seed, "real", it,
                                            classes=shard.classes)
        x_syn, y_syn = shard.take(images, labels)
        if siamese is not None:
            params = siamese.sample(config.seed, it, real.device)
            x_real, x_syn = siamese(x_real, y_real, params), siamese(x_syn, y_syn, params)
        shifted = sorted((c + s) % K for c in shard.classes)  # one process: range(K), the classes' usual order
        g_real = per_class_gradients(net, None, x_real, (y_real + s) % K, K, create_graph=False,
                                     strategy=config.strategy, classes=shifted, compiled=real_loss)
        g_syn = per_class_gradients(net, None, x_syn, (y_syn + s) % K, K, strategy=config.strategy, classes=shifted)
        gm = grad_distance(g_syn, [g.detach() for g in g_real], config.metric, batched=True).sum()
        loss = gm
        if config.dm_weight:
            with torch.no_grad():
                f_real = embed_real(net, x_real)
            loss = loss + config.dm_weight * class_mean_distance(embed_syn(net, x_syn), y_syn, f_real, y_real, K)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        total, gm_total = shard.reduce(images.grad, loss.detach(), gm.detach())
        optimizer.step()
        with torch.no_grad():
            ema.mul_(config.ema).add_(images.detach(), alpha=1.0 - config.ema)
        return {"loss": total, "gm": gm_total, "shift": s}

    common.run_loop(state, config.iterations, step, config=config, method="lcs_gm", checkpoint=checkpoint,
                    progress=progress, callback=callback, stop=early_exit(config), ctx=ctx)
    output = ema if config.ema > 0 else images
    return common.result_set("lcs_gm", data, config, output, labels, state,
                             extra={"stopped_early": state.iteration < config.iterations})
