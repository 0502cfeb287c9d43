"""SRe2L, squeeze - recover - relabel (Yin, Xing & Shen, NeurIPS 2023; VILA-Lab/SRe2L).

* squeeze (:func:`squeeze`): a teacher trained on the real data (SRe2L's ``squeeze_cifar.py``: the CIFAR-stem
  ResNet-18, SGD lr 0.1, momentum 0.9, weight decay 5e-4, cosine per epoch, batch 128, random crop + flip).
* recover (:func:`distill`): synthetic images optimised against the frozen teacher in eval mode,
  ``CE(teacher(aug(x)), y) + r_bn * sum_l w_l (||mu_l(x) - mu_l^BN||_2 + ||var_l(x) - var_l^BN||_2)`` with
  w_1 = ``first_bn_multiplier`` (10), through :class:`ddfast.BNStatHooks` (one fused
  :func:`ddfast.bn_stat_loss` call for every BatchNorm layer instead of SRe2L's per-layer hook graphs);
  Adam(betas (0.5, 0.9)), lr cosine over the iterations (``lr_cosine_policy`` without warm-up), pixels
  clipped to the valid range after every step, the final image kept (SRe2L's "best" image is the last
  one). ``aug``: one random-resized crop + flip for the whole batch, then a roll by randint(0, jitter)
  (``data_synthesis.py``; :mod:`ddfast.crops`). The set is recovered in batches that hold
  ``batch_size // num_classes`` images of every class (SRe2L: one image of each of 100 classes per batch),
  each batch with a fresh optimiser.
* relabel: the teacher's soft labels, computed online by the KD evaluation protocol
  (:func:`ddfast.evaluate` with ``protocol="kd"``), so the set stores hard labels and the runner evaluates
  it with the teacher.

:func:`recover` is the loop DELT shares: it takes the iteration at which each image joins (all 0 here). Under
torch.distributed (``ctx``) the ranks recover different batches, round robin, and all end with the set one process
recovers; checkpoints resume on any world size (see :func:`recover`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .._io import load_checked, save_checked
from ..distributed import resolve
from ..ops.bn_stat_loss import BNStatHooks
from ..ops.dsa import dsa_augment
from . import _common as common
from ..crops import batch_crop
from .dc import train_network_epoch

INITS = ("noise", "real")


@dataclass
class TeacherRecipe:
    """How :func:`squeeze` trains a teacher (SRe2L's ``squeeze_cifar.sh``: ResNet-18, 200 epochs). The
    augmentation is DSA's crop (a random translation by up to 1/8 of the side, as RandomCrop with padding
    does) and flip, per image."""

    model: str = "ResNet18"
    epochs: int = 200
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: str = "crop_flip"  # DSA families; "" or "none": none


@dataclass
class SRe2LConfig:
    """SRe2L's recover settings (``recover_cifar.sh`` / ``recover.sh``): lr 0.25, 1000 iterations per batch,
    r_bn 0.01, first BN multiplier 10, batch 100, noise init, Adam betas (0.5, 0.9); crop scale (0.08, 1),
    flip, jitter 4 (its CIFAR value). ``temperature``: the KD protocol's (SRe2L's ``train_KD``/FKD: 20)."""

    ipc: int = 50
    iterations: int = 1000
    lr: float = 0.25
    beta1: float = 0.5
    beta2: float = 0.9
    r_bn: float = 0.01
    first_bn_multiplier: float = 10.0
    batch_size: int = 100
    init: str = "noise"
    min_crop: float = 0.08
    max_crop: float = 1.0
    flip: bool = True
    jitter: int = 4
    temperature: float = 20.0
    seed: int = 0


# ------------------------------------------------------------------------------------------ squeeze

def squeeze(data, recipe: TeacherRecipe = TeacherRecipe(), *, seed: int = 0, device=None,
            progress: bool = True) -> nn.Module:
    """Train a teacher on ``data``'s training split with ``recipe``; returns it in eval mode."""
    for name in ("epochs", "batch_size"):
        value = getattr(recipe, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"teacher {name} must be a positive integer, got {value!r}")
    if not recipe.lr > 0:
        raise ValueError(f"teacher lr must be > 0, got {recipe.lr!r}")
    real = common.RealData.of(data, device)
    net = common.seeded_network(recipe.model, real.channels, real.num_classes, real.im_size,
                                common.derive_seed(seed, "teacher", "init"), real.device)
    if not common.has_batchnorm(net):
        raise ValueError(f"teacher model {recipe.model!r} has no BatchNorm layers; SRe2L's recover matches BN "
                         f"statistics (use ResNet18 or ConvNetBN)")
    opt = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    augment = dsa_augment(recipe.augment, mode="M") if recipe.augment not in ("", "none") else None
    gen = common.generator(seed, "teacher", "order")
    bar = common._bar(recipe.epochs, 0, progress, f"teacher {recipe.model}")
    try:
        for epoch in range(recipe.epochs):
            for group in opt.param_groups:  # CosineAnnealingLR(T_max=epochs), stepped per epoch
                group["lr"] = 0.5 * recipe.lr * (1 + math.cos(math.pi * epoch / recipe.epochs))
            train_network_epoch(net, opt, real.images, real.labels, recipe.batch_size, augment, gen)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return net.eval()


def save_teacher(path, teacher: nn.Module, data, recipe: TeacherRecipe, *, seed: int, accuracy: float) -> None:
    """Write a teacher with what :func:`load_teacher` needs to rebuild it (with its checksum)."""
    save_checked({"model": recipe.model, "state_dict": {k: v.cpu() for k, v in teacher.state_dict().items()},
                  "dataset": data.metadata(), "recipe": asdict(recipe), "seed": seed, "accuracy": accuracy}, path)


def load_teacher(path, data, device=None) -> tuple[nn.Module, dict]:
    """A teacher written by :func:`save_teacher` (``ddfast teacher``), checked against ``data``; returns it in
    eval mode with its record (model, recipe, seed, accuracy)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"teacher {path!r} not found; make one with `ddfast teacher --out {path}`")
    saved = load_checked(path, "a ddfast teacher (written by `ddfast teacher`)", required=("model", "state_dict"))
    meta, want = saved["dataset"], data.metadata()
    for key in ("dataset", "num_classes", "channels", "im_size", "zca"):
        if meta.get(key) != want.get(key):
            raise ValueError(f"teacher {path!r} was trained on {meta.get('dataset')} with {key}={meta.get(key)!r}, "
                             f"but the data has {key}={want.get(key)!r}")
    from ..models import get_network

    net = get_network(saved["model"], data.channels, data.num_classes, tuple(data.im_size))
    net.load_state_dict(saved["state_dict"])
    device = torch.device(device) if device is not None else data.train_labels.device
    record = {k: v for k, v in saved.items() if k != "state_dict"}
    return frozen(net.to(device)), record


def frozen(teacher: nn.Module) -> nn.Module:
    """``teacher`` in eval mode with gradients off for its parameters (the recover and KD teacher)."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


# ------------------------------------------------------------------------------------------ recover

def pixel_bounds(data, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel bounds of valid pixels [0, 1] in the data's normalised space (SRe2L's ``clip``)."""
    if data.zca is not None or not data.normalized:
        raise ValueError(f"SRe2L/DELT recover clips pixels in mean/std-normalised space; {data.name} was loaded "
                         f"without it (ZCA whitening): load it without zca")
    mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
    return -mean / std, (1 - mean) / std


def batches(num_classes: int, ipc: int, batch_size: int) -> list[torch.Tensor]:
    """Rows of each recover batch in a class-major set (class c in rows c*ipc..(c+1)*ipc-1): batch b holds
    slots b*k..(b+1)*k-1 of every class, k = max(1, batch_size // num_classes)."""
    per_class = max(1, batch_size // num_classes)
    return [torch.tensor([c * ipc + s for c in range(num_classes) for s in range(lo, min(lo + per_class, ipc))])
            for lo in range(0, ipc, per_class)]


def image_iterations(join: torch.Tensor, iterations: int) -> int:
    """Image-iterations a schedule uses: sum over images of the steps it is optimised (``iterations - join``)."""
    return int((iterations - join).clamp(min=0).sum())


def check_config(config: SRe2LConfig) -> None:
    for name in ("ipc", "iterations", "batch_size"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0 < config.min_crop <= config.max_crop <= 1:
        raise ValueError(f"min_crop and max_crop must satisfy 0 < min_crop <= max_crop <= 1, got "
                         f"{config.min_crop}, {config.max_crop}")
    if config.jitter < 0:
        raise ValueError(f"jitter must be >= 0, got {config.jitter}")
    if config.lr <= 0 or config.r_bn < 0 or config.first_bn_multiplier < 0:
        raise ValueError(f"lr must be > 0 and r_bn, first_bn_multiplier >= 0, got {config.lr}, {config.r_bn}, "
                         f"{config.first_bn_multiplier}")


def check_settings(config: SRe2LConfig, data, inits=INITS) -> None:
    """Every error of ``config`` on ``data`` that :func:`distill` would raise, before a teacher is trained
    (``inits``: the method's initialisations)."""
    check_config(config)
    if config.init not in inits:
        raise ValueError(f"init must be one of {inits}, got {config.init!r}")
    pixel_bounds(data, "cpu")


def fingerprint(teacher: nn.Module) -> int:
    """A 63-bit hash of the teacher's parameters and buffers (a resumed recover must use the same teacher)."""
    import hashlib

    digest = hashlib.sha256()
    for name, value in sorted(teacher.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(digest.digest()[:8], "little") >> 1


def cosine_lr(base: float, it: int, iterations: int) -> float:
    """SRe2L's ``lr_cosine_policy(base, 0, iterations)`` at iteration ``it``."""
    return 0.5 * (1 + math.cos(math.pi * it / iterations)) * base


SERIES = ("ce", "bn", "active")  # what a recover step records besides its loss


def recover(teacher: nn.Module, images: torch.Tensor, labels: torch.Tensor, join: torch.Tensor, data, config, *,
            method: str, min_crop_at=None, checkpoint=None, progress=True, callback=None, ctx=None) -> common.LoopState:
    """Optimise ``images`` (class-major, ``config.ipc`` per class, modified in place) batch by batch
    (:func:`batches`), ``config.iterations`` steps per batch; image i takes part from step ``join[i]`` on
    (the forward sees only the images that have joined; the rest get no gradient, and Adam leaves them where
    they are). ``min_crop_at(it)``: the crop scale's lower bound at step ``it`` (default ``config.min_crop``).
    Returns the loop state, with ``series`` ce, bn and active (images forwarded per step).

    Step i of batch b is loop iteration ``it = b * iterations + i`` and draws its crop from ``(seed, "aug", it)``;
    a batch starts from its initial rows with a fresh Adam, so its result depends on the seed and b alone.
    ``ctx`` (:mod:`ddfast.distributed`, default the job's): one process runs the batches in order through
    :func:`ddfast.methods._common.run_loop` (checkpoints every ``checkpoint.every`` iterations, mid-batch ones
    too; ``callback`` after every iteration). With W ranks the batches go round by round (:func:`_rounds`): every
    rank ends with the single process's images, loss history and series (bit for bit at the same CPU thread
    count), ``state.iteration`` counts the iterations of all ranks, and rank 0 writes checkpoints at round ends
    and calls ``callback`` after each round. A checkpoint is always the single-process state at some iteration,
    so it resumes on any number of ranks (:func:`_resume`)."""
    check_config(config)
    ctx = resolve(ctx)
    if ctx.backend == "nccl" and images.device != ctx.device:
        raise ValueError(f"device: rank {ctx.rank} runs nccl on {ctx.device} but the images are on {images.device}; "
                         f"pass device={str(ctx.device)!r} (this rank's GPU)")
    teacher = frozen(teacher)
    low, high = pixel_bounds(data, images.device)
    groups = batches(data.num_classes, config.ipc, config.batch_size)
    # one tensor as large as the largest batch; a smaller last batch uses its head, the tail gets no gradient
    current = images[groups[0]].detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([current], lr=config.lr, betas=(config.beta1, config.beta2), eps=1e-8)
    # what a resume must share beyond the config's settings: the steps per batch (the config's iterations, which
    # the settings check leaves out) and the teacher
    identity = torch.tensor([config.iterations, fingerprint(teacher)], dtype=torch.long)
    state = common.LoopState({"images": images, "current": current, "identity": identity},
                             {"current": optimizer})
    bn = BNStatHooks(teacher, first_weight=config.first_bn_multiplier)

    def step(it: int) -> dict:
        b, i = divmod(it, config.iterations)
        rows = groups[b]
        batch = current[:len(rows)]
        if i == 0:  # a fresh batch: its initial images and a fresh optimiser
            with torch.no_grad():
                batch.copy_(images[rows])
            optimizer.state.clear()
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(config.lr, i, config.iterations)
        active = torch.nonzero(join[rows] <= i).flatten()
        x = batch if len(active) == len(rows) else batch[active.to(current.device)]
        low_crop = min_crop_at(i) if min_crop_at is not None else config.min_crop
        scale = (min(low_crop, config.max_crop), config.max_crop)
        x = batch_crop(x, common.generator(config.seed, "aug", it), scale, config.flip, config.jitter)
        ce = F.cross_entropy(teacher(x), labels[rows][active.to(labels.device)])
        bn_loss = bn.loss()
        loss = ce + config.r_bn * bn_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            current.copy_(torch.maximum(torch.minimum(current, high), low))
            if i == config.iterations - 1:
                images[rows] = batch
        return {"loss": loss.item(), "ce": ce.item(), "bn": bn_loss.item(), "active": len(active)}

    state.output = lambda: (images, labels)
    try:
        _resume(state, checkpoint, config, method, ctx)
        if checkpoint is not None and checkpoint.resume:
            ctx.check_same(state.iteration, "the iteration this resume starts from")
        if ctx.distributed:
            _rounds(state, step, groups, config, method=method, checkpoint=checkpoint, progress=progress,
                    callback=callback, ctx=ctx)
        else:
            common.run_loop(state, len(groups) * config.iterations, step, config=config, method=method,
                            checkpoint=None if checkpoint is None else replace(checkpoint, resume=False),
                            progress=progress, callback=callback)
    finally:
        bn.remove()
    return state


def _resume(state: common.LoopState, checkpoint, config, method: str, ctx) -> None:
    """Load ``checkpoint`` into ``state`` when it resumes and exists (every rank reads it: the folder must be
    shared), after checking that it was written by ``method`` with the same settings, steps per batch and teacher
    (``state.tensors["identity"]``). Every checkpoint, whatever world size wrote it, is the single-process state
    at its iteration (the batches before it done, in order), so the batches left are shared among this job's
    ranks. Several ranks restart a batch that one process left unfinished and drop its steps from the history:
    its rows still hold their initial images and a batch depends only on the seed and its index, so the result is
    the same."""
    saved = common.read_checkpoint(checkpoint, method, config)
    if saved is None:
        return
    steps, teacher_hash = saved["state"]["tensors"]["identity"].tolist()
    if steps != config.iterations:
        raise ValueError(f"the checkpoint recovered {steps} iterations per batch, this run asks for "
                         f"{config.iterations}: a recover cannot be resumed with another iteration count")
    if teacher_hash != int(state.tensors["identity"][1]):
        raise ValueError("the checkpoint was recovered from another teacher; resume with the same teacher file")
    state.load_state_dict(saved["state"])
    if ctx.distributed:
        done = state.iteration - state.iteration % config.iterations
        state.iteration, state.history = done, state.history[:done]
        state.series = {name: values[:done] for name, values in state.series.items()}


def _rounds(state: common.LoopState, step, groups: list[torch.Tensor], config, *, method: str, checkpoint,
            progress: bool, callback, ctx) -> None:
    """The distributed recover from ``state.iteration`` (a batch boundary): round after round, the next W batches
    not done (W = ``ctx.world``; the last round may have fewer, and the ranks past them only take part in the
    collectives) go to the ranks in order, rank r running ``step`` over its batch through
    :func:`ddfast.methods._common.run_loop`; then every rank sums the round's rows and per-step values (loss and
    :data:`SERIES`) over the ranks, each coming from exactly one rank and zeros from the others, and appends the
    values batch by batch: the single-process images (bit for bit; a pixel of -0.0 would come back as 0.0, equal
    under ==) and series in the single-process order. ``state.seconds`` adds each round's wall time. Rank 0
    writes ``checkpoint`` at the end of the first round that reaches each multiple of ``checkpoint.every``
    iterations and of the last one (before any rank returns), and calls ``callback(state.iteration, state)`` after
    every round."""
    steps, images = config.iterations, state.tensors["images"]
    total = len(groups) * steps
    bar = common._bar(total, state.iteration, progress and ctx.is_main, method)
    try:
        while state.iteration < total:
            start, before = time.perf_counter(), state.iteration
            first = state.iteration // steps
            round_groups = groups[first:first + ctx.world]
            mine = common.LoopState(state.tensors, state.optimizers, iteration=(first + ctx.rank) * steps)
            if ctx.rank < len(round_groups):
                common.run_loop(mine, mine.iteration + steps, step, config=config, method=method, progress=False,
                                ctx=ctx)
            finished = torch.zeros((sum(len(g) for g in round_groups), *images.shape[1:]), dtype=images.dtype,
                                   device=images.device)
            values = torch.zeros((len(round_groups), 1 + len(SERIES), steps), dtype=torch.float64,
                                 device=images.device)
            if ctx.rank < len(round_groups):
                offset = sum(len(g) for g in round_groups[:ctx.rank])
                finished[offset:offset + len(round_groups[ctx.rank])] = images[round_groups[ctx.rank]]
                values[ctx.rank] = torch.tensor([mine.history, *(mine.series[name] for name in SERIES)],
                                                dtype=torch.float64)
            ctx.all_reduce_(finished)
            ctx.all_reduce_(values)
            images[torch.cat(round_groups)] = finished
            for loss, *series in values.tolist():
                state.history.extend(loss)
                for name, per_step in zip(SERIES, series):
                    state.series.setdefault(name, []).extend(per_step)
            state.iteration = (first + len(round_groups)) * steps
            state.seconds += time.perf_counter() - start
            if bar is not None:
                bar.update(state.iteration - before)
            if ctx.is_main and callback is not None:
                callback(state.iteration, state)
            if ctx.is_main and checkpoint is not None and (
                    state.iteration // checkpoint.every > before // checkpoint.every or state.iteration == total):
                checkpoint.save(method, config, state)
        ctx.barrier()  # rank 0's last checkpoint is written when any rank returns
    finally:
        if bar is not None:
            bar.close()


def initial_images(real: common.RealData, config) -> torch.Tensor:
    return common.initial_images(real.images, real.sampler, config.ipc, config.init, config.seed)


def distill(data, config: SRe2LConfig, teacher: nn.Module, *, device=None, checkpoint=None, progress=True,
            callback=None, ctx=None):
    """SRe2L's recover of ``config.ipc`` images per class from ``teacher`` (see the module docstring); returns a
    :class:`ddfast.SyntheticSet` with hard labels, to be evaluated with the teacher's soft labels (KD protocol).
    ``ctx`` (:mod:`ddfast.distributed`, default the job's): with several ranks each recovers its share of the
    batches and every rank returns the whole set (:func:`recover`)."""
    check_settings(config, data)
    real = common.RealData.of(data, device)
    images = initial_images(real, config)
    return finish("sre2l", data, config, teacher.to(real.device), images, torch.zeros(len(images), dtype=torch.long),
                  checkpoint=checkpoint, progress=progress, callback=callback, ctx=ctx)


def finish(method, data, config, teacher, images, join, *, min_crop_at=None, checkpoint, progress, callback, ctx):
    """Run :func:`recover` and package the set with its compute (image-iterations, and SRe2L's for the same set)."""
    labels = common.class_labels(data.num_classes, config.ipc, images.device)
    state = recover(teacher, images, labels, join, data, config, method=method, min_crop_at=min_crop_at,
                    checkpoint=checkpoint, progress=progress, callback=callback, ctx=ctx)
    used = image_iterations(join, config.iterations)
    compute = {"image_iterations": used, "sre2l_image_iterations": len(images) * config.iterations,
               "forwarded_images": int(sum(state.series.get("active", [])))}
    return common.result_set(method, data, config, images.detach(), labels, state, extra={"compute": compute})
