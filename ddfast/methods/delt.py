"""DELT, diversity-driven EarlyLate training (Shen et al., CVPR 2025; VILA-Lab/DELT ``recover/recover.py``,
``data_selection.py``), on SRe2L's recover (:mod:`ddfast.methods.sre2l`).

* Initialisation from real images ranked by the teacher's softmax probability of their true class over the
  class's whole training pool, without augmentation (``data_selection.py``): ``"medium"`` (DELT's default)
  walks out from the median of the ascending order (positions ceil(N/2), +1, -1, +2, -2, ...), ``"top"``
  takes the most confident, ``"min"`` the least; ``"real"`` (random real) and ``"noise"`` remain. Image k of
  a class is the k-th selected.
* EarlyLate: with M = iterations // round_iterations rounds, each class's images in a recover batch are split
  into M chunks (n // M each, the first n % M chunks one more); chunk j joins at iteration j * round_iterations
  and is optimised until the end, so chunk j gets (M - j) * round_iterations steps. Every step forwards only
  the images that have joined; with equal chunks that uses (M + 1) / (2M) of SRe2L's image-iterations, i.e.
  (M - 1) / (2M) less. As in DELT, one Adam runs over the whole batch with a global step count and the lr
  cosine runs over all iterations (its ``--round-lr-reset`` has no effect there).
* Crop curriculum (DELT's ``--easy2hard-mode cosine --milestone 1``, from CDA): the crop scale's lower bound
  at iteration t is ``min_crop + (1 - min_crop) * (1 + cos(pi * t / (milestone * iterations))) / 2`` while
  t < milestone * iterations, then ``min_crop``: whole images first, small crops last.

DELT batches whole classes (2 x 50 images at IPC 50 with batch 100); ddfast keeps SRe2L's class-balanced
batches (``batch_size // num_classes`` slots of every class) for both methods, so the two differ only in the
schedule, initialisation and crops. Where a batch holds a class's whole IPC (IPC <= 10 with 10 classes and
batch 100) the chunks are DELT's exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import _common as common
from . import sre2l
from .sre2l import SRe2LConfig, batches, finish, frozen

SELECTIONS = ("medium", "top", "min")
INITS = SELECTIONS + ("real", "noise")


@dataclass
class DELTConfig(SRe2LConfig):
    """DELT's ImageNet script (``run_delt.sh``): 4000 iterations, rounds of 500 (8 rounds), lr 0.25, r_bn
    0.01, jitter 0, cosine crop curriculum with milestone 1, medium-confidence real initialisation; the other
    settings are SRe2L's. ``round_iterations = 0`` switches EarlyLate off (every image joins at 0)."""

    iterations: int = 4000
    round_iterations: int = 500
    init: str = "medium"
    jitter: int = 0
    crop_curriculum: bool = True
    milestone: float = 1.0


def confidence_order(teacher, images: torch.Tensor, mode: str, label: int, batch_size: int = 256) -> torch.Tensor:
    """Indices of ``images`` (all of class ``label``) in DELT's selection order for ``mode``."""
    if mode not in SELECTIONS:
        raise ValueError(f"selection mode must be one of {SELECTIONS}, got {mode!r}")
    with torch.no_grad():
        prob = torch.cat([F.softmax(teacher(x), dim=1)[:, label] for x in torch.split(images, batch_size)])
    ascending = torch.sort(prob.double().cpu(), stable=True).indices
    if mode == "top":
        return ascending.flip(0)
    if mode == "min":
        return ascending
    n = len(ascending)
    mid = math.ceil(n / 2)
    walk = [mid] + [p for d in range(1, n) for p in (mid + d, mid - d)]
    return ascending[torch.tensor([p for p in walk if 0 <= p < n][:n], dtype=torch.long)]


def initial_images(real: common.RealData, teacher, config: DELTConfig) -> torch.Tensor:
    """The starting set: ranked real images (``config.init`` in :data:`SELECTIONS`, repeating the order when a
    class has fewer images than ``ipc``), or SRe2L's random real / noise."""
    if config.init in ("real", "noise"):
        return common.initial_images(real.images, real.sampler, config.ipc, config.init, config.seed)
    rows = []
    for c in range(real.num_classes):
        pool = real.sampler.data.indices_per_class[c]
        order = confidence_order(teacher, real.images[pool.to(real.device)], config.init, c)
        rows.append(pool[order[torch.arange(config.ipc) % len(order)]])
    return real.images[torch.cat(rows).to(real.device)].detach().clone()


def chunk_sizes(n: int, rounds: int) -> list[int]:
    """DELT's split of n images into ``rounds`` chunks: n // rounds each, the first n % rounds one more."""
    return [n // rounds + (1 if j < n % rounds else 0) for j in range(rounds)]


def join_iterations(num_classes: int, config: DELTConfig) -> torch.Tensor:
    """The iteration at which each image of the class-major set joins its batch's optimisation."""
    join = torch.zeros(num_classes * config.ipc, dtype=torch.long)
    if not config.round_iterations:
        return join
    rounds = config.iterations // config.round_iterations
    for rows in batches(num_classes, config.ipc, config.batch_size):
        per_class = len(rows) // num_classes
        starts = torch.repeat_interleave(torch.arange(rounds) * config.round_iterations,
                                         torch.tensor(chunk_sizes(per_class, rounds)))
        join[rows] = starts.repeat(num_classes)
    return join


def min_crop_schedule(config: DELTConfig):
    """The crop curriculum's lower bound per iteration (see the module docstring), or None when off."""
    if not config.crop_curriculum:
        return None
    end = config.milestone * config.iterations

    def at(it: int) -> float:
        if it >= end:
            return config.min_crop
        return config.min_crop + (1 - config.min_crop) * (1 + math.cos(math.pi * it / end)) / 2

    return at


def check_settings(config: DELTConfig, data) -> None:
    """Every error of ``config`` on ``data`` that :func:`distill` would raise, before a teacher is trained."""
    sre2l.check_settings(config, data, INITS)
    if isinstance(config.round_iterations, bool) or not isinstance(config.round_iterations, int) \
            or config.round_iterations < 0:
        raise ValueError(f"round_iterations must be an integer >= 0, got {config.round_iterations!r}")
    if config.round_iterations > config.iterations:
        raise ValueError(f"round_iterations ({config.round_iterations}) must not exceed iterations "
                         f"({config.iterations})")
    if not config.milestone > 0:
        raise ValueError(f"milestone must be > 0, got {config.milestone}")


def distill(data, config: DELTConfig, teacher, *, device=None, checkpoint=None, progress=True, callback=None,
            ctx=None):
    """DELT's recover of ``config.ipc`` images per class from ``teacher`` (see the module docstring); returns a
    :class:`ddfast.SyntheticSet` whose metadata ``compute`` records the image-iterations used and SRe2L's.
    ``ctx`` (:mod:`ddfast.distributed`, default the job's): with several ranks each recovers its share of the
    batches, each with its own EarlyLate joins and the crop curriculum of its steps, and every rank returns the
    whole set (:func:`ddfast.methods.sre2l.recover`)."""
    check_settings(config, data)
    real = common.RealData.of(data, device)
    teacher = frozen(teacher.to(real.device))
    images = initial_images(real, teacher, config)
    join = join_iterations(real.num_classes, config)
    return finish("delt", data, config, teacher, images, join, min_crop_at=min_crop_schedule(config),
                  checkpoint=checkpoint, progress=progress, callback=callback, ctx=ctx)
