"""DM, distribution matching (Zhao & Bilen, WACV 2023; VICO-UoE/DatasetCondensation ``main_DM.py``).

Each iteration draws a fresh randomly initialised network (not trained), embeds a real batch of every
class and the synthetic set (both through the same per-class Siamese DSA parameters), and moves the
synthetic images to match the per-class feature means: one :func:`ddfast.class_mean_distance` call
for all classes instead of DM's per-class loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..compiled import CompiledCall, embed
from ..distributed import resolve
from ..ops.class_mean_distance import class_mean_distance
from . import _common as common
from ._augment import DEFAULT_STRATEGY, ClassSiamese

FORWARDS = ("auto", "batched", "per_class")


@dataclass
class DMConfig:
    """DM's defaults (main_DM.py): ``--Iteration 20000``, ``--lr_img 1.0`` (SGD momentum 0.5),
    ``--batch_real 256``, ``--init real``, DSA on with the default strategy, ConvNet."""

    ipc: int = 10
    iterations: int = 20000
    lr_img: float = 1.0
    momentum: float = 0.5
    batch_real: int = 256
    model: str = "ConvNet"
    init: str = "real"
    dsa_strategy: str = DEFAULT_STRATEGY  # "" or "none": no augmentation
    forward: str = "auto"  # how features are computed, see distill()
    seed: int = 0


def distill(data, config: DMConfig, *, device=None, checkpoint=None, progress=True, callback=None, ctx=None):
    """Distil ``data`` (a :class:`ddfast.data.Dataset`) with DM; returns a :class:`ddfast.SyntheticSet`.

    ``config.forward``: ``"batched"`` embeds all real images in one forward and the synthetic set in
    another; ``"per_class"`` embeds class by class as DM does; ``"auto"`` picks per device from
    bench/bench_methods.py (per-class on CPU, where the convolutions dominate and one big batch was
    slower; batched on CUDA); with a BatchNorm network always batched, as main_DM.py concatenates all
    classes for BN models so the batch statistics span every class.

    ``ctx`` (:mod:`ddfast.distributed`, default the job's): with several ranks each embeds and matches its
    classes (:class:`~ddfast.methods._common.ClassShard`). Not with a BatchNorm network, whose statistics span
    every class's images.
    """
    if config.forward not in FORWARDS:
        raise ValueError(f"forward must be one of {FORWARDS}, got {config.forward!r}")
    ctx = resolve(ctx)
    real = common.RealData.of(data, device)
    images = common.initial_images(real.images, real.sampler, config.ipc, config.init, config.seed)
    images.requires_grad_(True)
    labels = common.class_labels(real.num_classes, config.ipc, real.device)
    real.sampler.warn_if_short(config.batch_real, "batch_real")
    optimizer = torch.optim.SGD([images], lr=config.lr_img, momentum=config.momentum)
    augment = ClassSiamese.from_strategy(config.dsa_strategy, real.num_classes)
    state = common.LoopState({"images": images}, {"images": optimizer})
    shard = common.ClassShard(ctx, real.num_classes)
    calls = config.iterations * real.num_classes  # per-class embedding calls in a run (auto weighs compiling)
    embed_real, embed_syn = CompiledCall(embed, "embed", calls), CompiledCall(embed, "embed_grad", calls)

    def step(it: int) -> float:
        net = common.seeded_network(config.model, real.channels, real.num_classes, real.im_size,
                                    common.derive_seed(config.seed, "net", it), real.device)
        net.train()
        for p in net.parameters():
            p.requires_grad_(False)
        shard.check_network(net, "dm", config.model)
        batchnorm = common.has_batchnorm(net)
        x_real, y_real = real.sampler.batch(real.images, config.batch_real, config.seed, "real", it,
                                            classes=shard.classes)
        x_syn, y_syn = shard.take(images, labels)
        if augment is not None:
            params = augment.sample(config.seed, it, real.device)
            x_real, x_syn = augment(x_real, y_real, params), augment(x_syn, y_syn, params)
        per_class = not batchnorm and (
            config.forward == "per_class" or (config.forward == "auto" and real.device.type == "cpu"))
        if per_class:
            real_counts = [n for n in torch.bincount(y_real, minlength=real.num_classes).tolist() if n]
            with torch.no_grad():
                f_real = torch.cat([embed_real(net, x) for x in torch.split(x_real, real_counts)])
            f_syn = torch.cat([embed_syn(net, x) for x in torch.split(x_syn, config.ipc)])
        else:
            with torch.no_grad():
                f_real = embed_real(net, x_real)
            f_syn = embed_syn(net, x_syn)
        loss = class_mean_distance(f_syn, y_syn, f_real, y_real, real.num_classes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        (value,) = shard.reduce(images.grad, loss.detach())
        optimizer.step()
        return value

    common.run_loop(state, config.iterations, step, config=config, method="dm", checkpoint=checkpoint,
                    progress=progress, callback=callback, ctx=ctx)
    return common.result_set("dm", data, config, images, labels, state)
