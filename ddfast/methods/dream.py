"""DREAM / DREAM+: representative matching (Liu et al., ICCV 2023 and arXiv 2310.15052;
lyq312318224/DREAM, built on IDC's gradient matching).

Each outer iteration re-initialises the network (DREAM+ then trains it ``pretrain_epochs`` on real data)
and runs ``inner_steps`` matching steps. Every ``interval`` steps the real batch of every class is
re-chosen as the samples nearest to the centroids of a k-means (k = ``batch_real``) of the class's real
embeddings under the current network: one class-batched :func:`ddfast.kmeans` and one
:func:`ddfast.nearest_to_centroids` call for all classes. The loss is bidirectional: DM's class-mean
distance of the embeddings plus the 'mse' gradient distance over the convolution weights only (biases,
norms and the classifier left out), both on DSA 'color_crop_cutout' views shared by the real and the
synthetic images of a class. After each step the network trains on ``net_samples`` real samples.
``plain=True`` replaces the k-means sampling by IDC's random sampling, a fresh random real batch per class
at every inner step (the ablation of the iteration-count claim). ``factor`` > 1 is IDC's multi-formation: each stored image holds factor x factor downsampled
images, decoded by upsampling its tiles.

As in IDC/DREAM, the learnable images are pixels in [0, 1] (normalised by the dataset's mean/std before
the network, clamped to [0, 1] after every outer iteration), so ``lr_img`` is on IDC's pixel scale; and
the DSA families 'color_crop_cutout' are all applied in order (IDC's DiffAug), not one per call.
Departures: one image step per inner step on the loss summed over classes (IDC steps once per class;
each class's loss touches only its own images, so only the momentum timing differs); initialisation from
random real images (IDC's 'kmean'/'mix' initialisations and its CutMix network training are not
implemented: the network trains with per-image DSA 'color_crop_cutout', where DREAM's default CutMix
training drops cutout); the k-means embeds the normalised images the network sees (DREAM embeds the
[0, 1] tensors); every decoded synthetic image joins each step (DREAM subsamples at most
``batch_syn_max`` 128 per class, which only binds with multi-formation at IPC > 32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..compiled import CompiledCall, embed, forward
from ..distributed import resolve
from ..ops.class_mean_distance import class_mean_distance
from ..ops.grad_distance import grad_distance
from ..ops.kmeans import kmeans, nearest_to_centroids
from ..ops.per_class_gradients import class_loss, per_class_gradients
from . import _common as common
from ._augment import ClassSiamese, per_sample
from .dc import train_network_epoch


@dataclass
class DREAMConfig:
    """DREAM's defaults (IDC-based, CIFAR-10): ``batch_real`` 128 (= k of the k-means), k-means every
    ``interval`` 10 steps (DREAM's query: at most 100 Lloyd iterations, stop at a squared centroid shift
    of 1e-4), ``inner_steps`` 100 per outer iteration, SGD on the images ``lr_img`` 0.005 momentum 0.5,
    network SGD lr 0.01 momentum 0.9 weight decay 5e-4 trained on ``net_samples`` 2000 real samples after
    each step, DSA 'color_crop_cutout' (Siamese per class), ``pretrain_epochs`` 1 (DREAM+; 0 = DREAM),
    ``factor`` 1 (2 = IDC's multi-formation), ``plain`` False; 2000 outer iterations (DREAM's
    ``--reproduce`` CIFAR-10 setting: 2000 x 100 inner steps)."""

    ipc: int = 10
    iterations: int = 2000
    inner_steps: int = 100
    interval: int = 10
    batch_real: int = 128
    kmeans_iters: int = 100
    kmeans_tol: float = 1e-4
    lr_img: float = 0.005
    momentum: float = 0.5
    lr_net: float = 0.01
    net_samples: int = 2000
    net_batch: int = 128
    pretrain_epochs: int = 1
    factor: int = 1
    plain: bool = False
    model: str = "ConvNet"
    init: str = "real"
    dsa_strategy: str = "color_crop_cutout"
    strategy: str = "auto"  # per_class_gradients strategy
    seed: int = 0


def decode(images: torch.Tensor, factor: int) -> torch.Tensor:
    """IDC's multi-formation: every image -> factor^2 images, its tiles upsampled (bilinear) to full size,
    in row-major tile order (labels repeat each image's label factor^2 times)."""
    if factor == 1:
        return images
    n, c, h, w = images.shape
    th, tw = h // factor, w // factor
    tiles = images[:, :, :th * factor, :tw * factor].reshape(n, c, factor, th, factor, tw)
    tiles = tiles.permute(0, 2, 4, 1, 3, 5).reshape(n * factor * factor, c, th, tw)
    return F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)


def conv_indices(net) -> list[int]:
    """Positions (in ``net.parameters()`` order) of the gradient term's tensors: the convolution weights (4-D).
    Biases, norms and the classifier are left out of the loss altogether (not weighted 0), so the backward
    pass does not differentiate their gradients (DREAM's match loss skips them the same way)."""
    return [i for i, p in enumerate(net.parameters()) if p.dim() == 4]


def representative_batch(net, real: common.RealData, k: int, config: DREAMConfig, gen: torch.Generator):
    """Per class, the real samples nearest the centroids of a k-means of the class's embeddings (k clamped to
    the smallest class, with a warning from :func:`distill`), as (images, labels) with class c's rows
    contiguous."""
    k = min(k, min(real.sampler.counts))
    with torch.no_grad():
        feats = torch.cat([net.embed(x) for x in torch.split(real.images, 1024)])
    result = kmeans(feats, k, iters=config.kmeans_iters, init="random", generator=gen, labels=real.labels,
                    num_classes=real.num_classes, tol=config.kmeans_tol)
    index = nearest_to_centroids(feats, result.centroids, labels=real.labels).reshape(-1)
    return real.images[index], real.labels[index]


def distill(data, config: DREAMConfig, *, device=None, checkpoint=None, progress=True, callback=None, ctx=None):
    """Distil ``data`` with DREAM+ (or DREAM with ``pretrain_epochs=0``, random sampling with ``plain``);
    returns a :class:`ddfast.SyntheticSet` (multi-formation sets are returned decoded).

    ``ctx`` (:mod:`ddfast.distributed`, default the job's): with several ranks each matches its classes
    (:class:`~ddfast.methods._common.ClassShard`); the network's pre-training and training on real data and the
    k-means (one class-batched call, whose random initialisation is drawn for all classes together) run on every
    rank from the shared seed."""
    if config.factor < 1 or config.interval < 1 or config.inner_steps < 1:
        raise ValueError("factor, interval and inner_steps must be >= 1")
    ctx = resolve(ctx)
    if data.zca is not None:
        raise ValueError("dream optimises pixels in [0, 1] as IDC does; load the data without zca")
    real = common.RealData.of(data, device)
    real.sampler.warn_if_short(config.batch_real, "batch_real (k of the k-means)")
    K = real.num_classes
    mean = torch.tensor(data.mean if data.normalized else (0.0,) * real.channels, device=real.device).view(1, -1, 1, 1)
    std = torch.tensor(data.std if data.normalized else (1.0,) * real.channels, device=real.device).view(1, -1, 1, 1)
    start = common.initial_images(real.images, real.sampler, config.ipc, config.init, config.seed)
    pixels = (start * std + mean).clamp_(0, 1).requires_grad_(True)
    labels = common.class_labels(K, config.ipc, real.device)
    decoded_labels = labels.repeat_interleave(config.factor ** 2)

    def model_images() -> torch.Tensor:
        return decode((pixels - mean) / std, config.factor)

    optimizer = torch.optim.SGD([pixels], lr=config.lr_img, momentum=config.momentum)
    siamese = ClassSiamese.from_strategy(config.dsa_strategy, K, mode="M")
    train_augment = per_sample(config.dsa_strategy, mode="M")
    state = common.LoopState({"pixels": pixels}, {"pixels": optimizer},
                             output=lambda: (model_images().detach(), decoded_labels))
    shard = common.ClassShard(ctx, K)
    batches = (config.pretrain_epochs * math.ceil(real.images.shape[0] / config.net_batch)
               + config.inner_steps * math.ceil(config.net_samples / config.net_batch))
    train_forward = CompiledCall(forward, "train_step", config.iterations * batches)
    embed_real = CompiledCall(embed, "embed", config.iterations * config.inner_steps)
    embed_syn = CompiledCall(embed, "embed_grad", config.iterations * config.inner_steps)
    real_loss = CompiledCall(class_loss, "class_gradients", config.iterations * config.inner_steps * len(shard.classes))

    def step(it: int) -> float:
        net = common.seeded_network(config.model, real.channels, K, real.im_size,
                                    common.derive_seed(config.seed, "net", it), real.device)
        shard.check_network(net, "dream", config.model)  # its class-mean term embeds in training mode
        net_optimizer = torch.optim.SGD(net.parameters(), lr=config.lr_net, momentum=0.9, weight_decay=5e-4)
        gen = common.generator(config.seed, "train", it)
        for _ in range(config.pretrain_epochs):  # DREAM+ trains on its real loader, batches of net_batch (128)
            train_network_epoch(net, net_optimizer, real.images, real.labels, config.net_batch, train_augment, gen,
                                train_forward)
        conv = conv_indices(net)
        total = 0.0
        for inner in range(config.inner_steps):
            if config.plain:  # IDC's random sampling: a fresh batch every step
                x_real, y_real = real.sampler.batch(real.images, config.batch_real, config.seed, "real", it, inner,
                                                    classes=shard.classes)
            elif inner % config.interval == 0:
                x_real, y_real = shard.take(*representative_batch(net, real, config.batch_real, config,
                                                                  common.generator(config.seed, "kmeans", it, inner)))
            x_syn, y_syn = shard.take(model_images(), decoded_labels)
            xr, xs = x_real, x_syn
            if siamese is not None:
                params = siamese.sample(config.seed, (it, inner), real.device)
                xr, xs = siamese(x_real, y_real, params), siamese(x_syn, y_syn, params)
            g_real = per_class_gradients(net, None, xr, y_real, K, create_graph=False, strategy=config.strategy,
                                         classes=shard.classes, compiled=real_loss)
            g_syn = per_class_gradients(net, None, xs, y_syn, K, strategy=config.strategy, classes=shard.classes)
            loss = grad_distance([g_syn[i] for i in conv], [g_real[i].detach() for i in conv], "mse", batched=True).sum()
            with torch.no_grad():
                f_real = embed_real(net, xr)
            loss = loss + class_mean_distance(embed_syn(net, xs), y_syn, f_real, y_real, K)
            (pixels.grad,) = torch.autograd.grad(loss, [pixels])  # not into the network's parameters
            (value,) = shard.reduce(pixels.grad, loss.detach())
            optimizer.step()
            total += value
            index = torch.randperm(real.images.shape[0], generator=gen)[:config.net_samples].to(real.device)
            train_network_epoch(net, net_optimizer, real.images[index], real.labels[index], config.net_batch,
                                train_augment, gen, train_forward)
        with torch.no_grad():
            pixels.clamp_(0, 1)
        return total / config.inner_steps

    common.run_loop(state, config.iterations, step, config=config, method="dream", checkpoint=checkpoint,
                    progress=progress, callback=callback, ctx=ctx)
    return common.result_set("dream", data, config, model_images().detach(), decoded_labels, state,
                             extra={"factor": config.factor})
