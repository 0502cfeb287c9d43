"""DC and DSA, gradient matching (Zhao et al., ICLR 2021; Zhao & Bilen, ICML 2021;
VICO-UoE/DatasetCondensation ``main.py``).

Each outer iteration draws a fresh randomly initialised network. ``outer_loop`` times: the
per-class cross-entropy gradients of a real batch and of the synthetic images are matched layer by
layer (DC's ``match_loss``, metric ``ours``) and the images take one SGD step; between matchings the
network trains ``inner_loop`` epochs on the synthetic set. ddfast computes all classes' gradients with
:func:`ddfast.per_class_gradients` and all distances in one :func:`ddfast.grad_distance` call; with
DSA each class's real and synthetic images share one augmentation parameter set (DC's seeded
``DiffAugment``), and network training augments per image (DC's unseeded calls).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..compiled import CompiledCall, forward
from ..distributed import resolve
from ..ops.grad_distance import grad_distance
from ..ops.per_class_gradients import class_loss, per_class_gradients
from . import _common as common
from ._augment import DEFAULT_STRATEGY, ClassSiamese, per_sample

# DC main.py: (outer_loop, inner_loop) by images per class.
LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
BN_IMAGES_PER_CLASS = 16  # DC's BNSizePC: real images per class that set BatchNorm statistics


@dataclass
class DCConfig:
    """DC's defaults (main.py): ``--Iteration 1000``, ``--lr_img 0.1`` (SGD momentum 0.5), ``--lr_net
    0.01``, ``--batch_real 256``, ``--batch_train 256``, ``--dis_metric ours``, loops from the ipc table
    :data:`LOOPS` when ``outer_loop``/``inner_loop`` are None. ``init`` is ``real`` (DSA's README command
    passes ``--init real``; main.py's parser default, which DC's own Table 1 command keeps, is noise:
    :data:`ddfast.methods.DATASET_DEFAULTS` sets it for the Fashion-MNIST reproduction). ``dsa`` switches DSA on
    (method "dsa")."""

    ipc: int = 10
    iterations: int = 1000
    lr_img: float = 0.1
    momentum: float = 0.5
    lr_net: float = 0.01
    batch_real: int = 256
    batch_train: int = 256
    outer_loop: int | None = None
    inner_loop: int | None = None
    metric: str = "ours"
    model: str = "ConvNet"
    init: str = "real"
    dsa: bool = False
    dsa_strategy: str = DEFAULT_STRATEGY
    strategy: str = "auto"  # per_class_gradients strategy
    seed: int = 0

    def loops(self) -> tuple[int, int]:
        if self.outer_loop is not None and self.inner_loop is not None:
            return self.outer_loop, self.inner_loop
        if self.ipc not in LOOPS:
            raise ValueError(f"DC defines outer/inner loops for ipc in {sorted(LOOPS)}; pass outer_loop and "
                             f"inner_loop for ipc={self.ipc}")
        outer, inner = LOOPS[self.ipc]
        return (self.outer_loop or outer, self.inner_loop or inner)


def _freeze_batchnorm_statistics(net, real: common.RealData, seed: int, it: int, ol: int) -> None:
    """DC's BatchNorm handling: set the running statistics from 16 real images per class, then keep
    them (per_class_gradients runs BatchNorm in eval mode)."""
    x, _ = real.sampler.batch(real.images, BN_IMAGES_PER_CLASS, seed, "bn", it, ol)
    net.train()
    with torch.no_grad():
        net(x)


def train_network_epoch(net, optimizer, images, labels, batch_size: int, augment, gen: torch.Generator,
                        forward: Callable | None = None) -> None:
    """One epoch of DC's ``epoch('train', ...)`` on a tensor set: shuffled minibatches, mean CE, one SGD
    step each; ``augment(x, generator)`` per minibatch when given. ``forward(net, x)``: how the network
    runs (a :class:`ddfast.compiled.CompiledCall` of the ``train_step`` path; None: ``net(x)``)."""
    net.train()
    order = torch.randperm(images.shape[0], generator=gen).to(images.device)
    for index in torch.split(order, batch_size):
        x = images[index]
        if augment is not None:
            x = augment(x, gen)
        loss = F.cross_entropy(net(x) if forward is None else forward(net, x), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def distill(data, config: DCConfig, *, device=None, checkpoint=None, progress=True, callback=None, ctx=None):
    """Distil ``data`` (a :class:`ddfast.data.Dataset`) with DC (``config.dsa`` False) or DSA (True);
    returns a :class:`ddfast.SyntheticSet`. The loss of an iteration is DC's ``loss_avg``: the mean
    over classes and outer loops.

    ``ctx`` (:mod:`ddfast.distributed`, default the job's): with several ranks each matches its classes
    (:class:`~ddfast.methods._common.ClassShard`); the BatchNorm warm-up and the network training on the
    synthetic set run on every rank from the shared seed."""
    ctx = resolve(ctx)
    outer_loop, inner_loop = config.loops()
    real = common.RealData.of(data, device)
    K = real.num_classes
    images = common.initial_images(real.images, real.sampler, config.ipc, config.init, config.seed)
    images.requires_grad_(True)
    labels = common.class_labels(K, config.ipc, real.device)
    real.sampler.warn_if_short(config.batch_real, "batch_real")
    optimizer = torch.optim.SGD([images], lr=config.lr_img, momentum=config.momentum)
    siamese = ClassSiamese.from_strategy(config.dsa_strategy, K) if config.dsa else None
    train_augment = per_sample(config.dsa_strategy) if config.dsa else None
    state = common.LoopState({"images": images}, {"images": optimizer})
    method = "dsa" if config.dsa else "dc"
    shard = common.ClassShard(ctx, K)
    train_steps = config.iterations * (outer_loop - 1) * inner_loop * math.ceil(len(labels) / config.batch_train)
    train_forward = CompiledCall(forward, "train_step", train_steps)
    real_loss = CompiledCall(class_loss, "class_gradients", config.iterations * outer_loop * len(shard.classes))

    def step(it: int) -> float:
        net = common.seeded_network(config.model, real.channels, K, real.im_size,
                                    common.derive_seed(config.seed, "net", it), real.device)
        net_optimizer = torch.optim.SGD(net.parameters(), lr=config.lr_net)
        batchnorm = common.has_batchnorm(net)
        total = 0.0
        for ol in range(outer_loop):
            if batchnorm:
                _freeze_batchnorm_statistics(net, real, config.seed, it, ol)
            x_real, y_real = real.sampler.batch(real.images, config.batch_real, config.seed, "real", it, ol,
                                                classes=shard.classes)
            x_syn, y_syn = shard.take(images, labels)
            if siamese is not None:
                params = siamese.sample(config.seed, (it, ol), real.device)
                x_real, x_syn = siamese(x_real, y_real, params), siamese(x_syn, y_syn, params)
            g_real = per_class_gradients(net, None, x_real, y_real, K, create_graph=False, strategy=config.strategy,
                                         classes=shard.classes, compiled=real_loss)
            g_real = [g.detach() for g in g_real]
            g_syn = per_class_gradients(net, None, x_syn, y_syn, K, create_graph=True, strategy=config.strategy,
                                        classes=shard.classes)
            loss = grad_distance(g_syn, g_real, config.metric, batched=True).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            (value,) = shard.reduce(images.grad, loss.detach())
            optimizer.step()
            total += value
            if ol == outer_loop - 1:
                break
            syn, syn_labels = images.detach().clone(), labels
            gen = common.generator(config.seed, "train", it, ol)
            for _ in range(inner_loop):
                train_network_epoch(net, net_optimizer, syn, syn_labels, config.batch_train, train_augment, gen,
                                    train_forward)
        return total / (K * outer_loop)

    common.run_loop(state, config.iterations, step, config=config, method=method, checkpoint=checkpoint,
                    progress=progress, callback=callback, ctx=ctx)
    return common.result_set(method, data, config, images, labels, state)
