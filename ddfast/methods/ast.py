"""AST, alignment with smooth and high-quality expert trajectories (Shen et al., arXiv 2310.10541;
shenjiyuan123/AST-Alignment-with-Smooth-Expert, ``buffer.py`` and ``distill.py``; docs/methods.md#ast).

AST is MTT with five changes, each a switch of :class:`ASTConfig` so ablations run from the CLI
(``--set balanced=False``):

* smooth experts (:func:`smooth_expert_hooks`, used by ``ddfast buffer --recipe ast``): SGD momentum 0.9,
  weight decay 1e-3, lr 0.003, x 0.6 (with a fresh optimiser) after epoch epochs // 2 + 1 (epoch 26 of 50,
  buffer.py's ``lr_schedule``); the "clipping loss" multiplies the cross-entropy by
  0.5, 0.55, ..., 0.95 in epochs 0-9; a gradient penalty lambda * mean((||d sum(logits) / dx|| - 1)^2),
  lambda = 2, on the un-augmented batch (double backward). The released ``epoch_gp`` takes the norm over
  the channel axis only (one norm per pixel) and averages over batch and pixels: so does this.
* ``init="representative"``: per class, k-means (ipc clusters, :func:`ddfast.kmeans`) of one expert's final
  logits of the class's real images; the image nearest each centroid starts the set (the released code's
  first version; its later one keeps 10 clusters and int(ipc / 10) images each, which selects nothing at
  IPC 1).
* ``student_momentum`` (0.9), ``balanced`` inner loss, ``intermediate`` matching and ``perturb`` (weight
  perturbation): see :class:`ddfast.methods.mtt.Student`, which runs them inside MTT's loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..experts import ExpertHooks, flatten_snapshot
from ..ops.kmeans import kmeans, nearest_to_centroids
from ..ops.unroll import FlatModel
from . import _common as common
from .mtt import MTTConfig, Student, load_experts, match_trajectories


@dataclass
class ASTConfig(MTTConfig):
    """MTT's CIFAR-10 IPC 10 settings (:class:`MTTConfig`) with AST's components on: ``init``
    'representative', ``student_momentum`` 0.9, ``balanced``, ``intermediate``, ``perturb`` 1.0 (AST's
    alpha). ``init`` 'real' / 'noise' and the zero / False values switch them off one at a time."""

    init: str = "representative"
    student_momentum: float = 0.9
    balanced: bool = True
    intermediate: bool = True
    perturb: float = 1.0


@dataclass
class SmoothExperts:
    """AST's expert recipe (buffer.py): the optimiser's settings, the lr decay (x ``decay`` after 0-based epoch
    ``decay_epoch``, None: ``epochs // 2 + 1``), the clipping-loss schedule and the gradient penalty's weight."""

    lr: float = 0.003
    momentum: float = 0.9
    weight_decay: float = 1e-3
    decay_epoch: int | None = None
    decay: float = 0.6
    clip_epochs: int = 10
    clip_start: float = 0.5
    penalty: float = 2.0


def clip_factor(epoch: int, recipe: SmoothExperts) -> float:
    """The clipping loss's factor on the cross-entropy in ``epoch`` (0-based): 0.5, 0.55, ... for the first
    ``clip_epochs`` epochs, then 1."""
    if epoch >= recipe.clip_epochs:
        return 1.0
    return recipe.clip_start + (1.0 - recipe.clip_start) * epoch / recipe.clip_epochs


def input_gradient_penalty(model, raw: torch.Tensor) -> torch.Tensor:
    """mean over batch and pixels of (||d sum(model(raw)) / d raw||_channels - 1)^2, differentiable in the
    model's parameters (double backward)."""
    x = raw.detach().requires_grad_(True)
    grad = torch.autograd.grad(model(x).sum(), x, create_graph=True)[0]
    return ((grad.norm(p=2, dim=1) - 1) ** 2).mean()


def smooth_expert_hooks(epochs: int, recipe: SmoothExperts = SmoothExperts()) -> ExpertHooks:
    """:class:`ddfast.ExpertHooks` that make :func:`ddfast.train_experts` train AST's smooth experts for ``epochs``
    epochs (pass ``lr``, ``momentum`` and ``weight_decay`` from ``recipe`` to it): the clipping loss plus the
    gradient penalty, and after epoch ``decay_epoch`` the lr x ``decay`` with the momentum restarted (buffer.py
    builds a new optimiser there)."""
    decay_epoch = epochs // 2 + 1 if recipe.decay_epoch is None else recipe.decay_epoch
    current = {"model": None, "epoch": 0}  # the expert being trained and its epoch

    def loss(model, x, y, logits, raw):
        if model is not current["model"]:  # a new expert starts the schedule at epoch 0
            current.update(model=model, epoch=0)
        ce = clip_factor(current["epoch"], recipe) * F.cross_entropy(logits, y)
        return ce + recipe.penalty * input_gradient_penalty(model, raw) if recipe.penalty else ce

    def epoch_end(expert, finished, model, optimizer, mean_loss):
        current["epoch"] = finished + 1
        if finished == decay_epoch:
            optimizer.state.clear()  # a fresh optimiser's momentum
            for group in optimizer.param_groups:
                group["lr"] *= recipe.decay

    return ExpertHooks(loss=loss, epoch_end=epoch_end)


def representative_images(real: common.RealData, trajectories: list, ipc: int, model: str, seed: int) -> torch.Tensor:
    """Per class, the ``ipc`` real images nearest the centroids of a k-means of the class's logits under the
    final snapshot of one expert (drawn with the run's seed); class c in rows c*ipc..(c+1)*ipc-1."""
    smallest = min(real.sampler.counts)
    if ipc > smallest:
        raise ValueError(f"init='representative' needs ipc <= the smallest class ({smallest} images), got ipc={ipc}")
    g = common.generator(seed, "init", "representative")
    trajectory = trajectories[int(torch.randint(len(trajectories), (1,), generator=g))]
    net = common.seeded_network(model, real.channels, real.num_classes, real.im_size, 0, real.device)
    fm = FlatModel(net)
    theta = flatten_snapshot(trajectory[-1], fm).to(real.device, real.images.dtype)
    with torch.no_grad():
        logits = torch.cat([fm(theta, x) for x in torch.split(real.images, 1024)])
    result = kmeans(logits, ipc, init="kmeans++", generator=g, labels=real.labels, num_classes=real.num_classes)
    index = nearest_to_centroids(logits, result.centroids, labels=real.labels, distinct=True).reshape(-1)
    return real.images[index].detach().clone()


def distill(data, config: ASTConfig, buffer, *, device=None, checkpoint=None, progress=True, callback=None,
            ctx=None):
    """Distil ``data`` with AST against the (smooth) expert trajectories in ``buffer``; returns a
    :class:`ddfast.SyntheticSet` carrying the learned lr. ``ctx``: several ranks split every inner minibatch
    (:func:`ddfast.methods.mtt.match_trajectories`); the representative initialisation runs on every rank and
    rank 0's is used."""
    trajectories = load_experts(buffer)
    real = common.RealData.of(data, device)
    if config.init == "representative":
        images = representative_images(real, trajectories, config.ipc, config.model, config.seed)
    else:
        images = common.initial_images(real.images, real.sampler, config.ipc, config.init, config.seed)
    images.requires_grad_(True)
    labels = common.class_labels(real.num_classes, config.ipc, real.device)
    student = Student(momentum=config.student_momentum, balanced=config.balanced, intermediate=config.intermediate,
                      perturb=config.perturb)
    state, lr = match_trajectories(real, config, trajectories, images, labels, method="ast", student=student,
                                   checkpoint=checkpoint, progress=progress, callback=callback, ctx=ctx)
    return common.result_set("ast", data, config, images, labels, state, lr=lr)
