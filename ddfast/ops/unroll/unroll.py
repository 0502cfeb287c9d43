"""``ddfast.unroll``: N functional SGD steps of a student on the synthetic set, differentiable w.r.t.
the images, the learnable lr and soft labels (docs/semantics.md#unroll).

Three gradient modes with the same forward:

* ``autograd``: MTT's way (GeorgeCazenavette/mtt-distillation, distill.py): every step's gradient
  with create_graph=True, the whole graph kept alive; memory grows with N x batch.
* ``adjoint``: exact. With ``memory_budget=0`` memory is constant in N apart from the stored parameter
  vectors: the forward keeps only theta_n (and v_n with momentum); the backward walks n = N-1..0,
  recomputes g_n at theta_n with create_graph and takes ONE vector-Jacobian product of g_n with u
  (u = -lr lambda_{n+1} for SGD, u = nu_{n+1} - lr lambda_{n+1} with momentum), which gives H_n u (for
  lambda_n), and the gradients of the images and soft labels of that step. By default it keeps the
  graphs of the last steps that ``memory_budget`` holds (below) and replays only the others.
* ``tesla``: the first-order formula of TESLA's released code (Cui et al., ICML 2023): the same reverse
  walk with lambda held at lambda_N (the Hessian chain through later steps dropped). Approximate.

With a ``process_group`` of W ranks (docs/DESIGN.md#scale-out-with-torchdistributed, mode (c)) one unroll spans W
processes, as MTT's distill.py spans the GPUs with ``DataParallel`` (the whole minibatch augmented, then split):
every rank augments the whole minibatch b_n, takes its rows r, r + W, ... and computes g_n^r = grad of loss_scale *
(sum of its rows' CE) / |b_n|; g_n = sum_r g_n^r (one all-reduce per forward step). The reverse sweep recomputes
g_n^r and takes its vector-Jacobian product with u (the same on every rank); H_n u is summed over the ranks at
every step, so lambda stays the same everywhere, and the image, label and (plain SGD) lr gradients are summed once
at the end. Every rank returns the same tensors, equal to one process's up to the order of the sums.

Memory budget (adjoint and tesla, ``memory_budget``): a replayed step costs a forward and a first backward
more than the create_graph unroll pays, so the reverse walk is slower than autograd by about that. Under a
budget the forward computes the LAST k steps' g_n with create_graph and keeps their graphs (attached to a
theta_n leaf and to the image and label leaves); the backward takes the vector-Jacobian product on a kept
graph instead of replaying that step, and replays the others as above. The gradient is the same: the same
ops on the same values, only where they run changes. The last steps are the first the reverse walk
consumes, so every kept graph is freed before the first replay builds one: the peak holds k graphs, where
keeping the first k would hold k + 1. k: a float f keeps floor(f N) steps (f = 1: all, autograd's memory);
an int B of bytes keeps the longest run of last steps whose graphs fit in B. A step's bytes are those of the
distinct storages autograd saved for its create_graph gradient that its graph still holds, the parameter
vector, images and labels left out (held anyway); under an int budget step 0 is computed with create_graph
to measure them, the other steps are estimated from it by their minibatch rows, and every kept graph is
measured as it is made: should the kept graphs pass B, the earliest are dropped (replayed instead). Under a
``process_group`` a kept graph is this rank's term g_n^r, and H_n u is summed over the ranks at every step
as on a replay.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from .._validate import finite_number, real_number
from ..adjoint_step import adjoint_step
from ..sgd_step import sgd_step
from .flat_model import FlatModel
from .plan import StepPlan, plan_steps

MODES = ("autograd", "adjoint", "tesla")
# memory_budget=None in the adjoint and tesla modes: the graphs of the last fifth of the steps. Measured by
# bench/bench_unroll.py at N = 40 (ConvNet-3, CIFAR-10 shapes, IPC 10, batch 50, one CPU thread): peak memory 0.20 of
# the create_graph unroll's (0.087 with nothing kept, 0.227 at 0.25, 0.30 at 0.3) and time 1.03x its (1.08x with
# nothing kept; 0.25 and 0.3 no faster within the noise): the most time saved within a quarter of its memory.
DEFAULT_MEMORY_BUDGET = 0.2


@dataclass(frozen=True)
class _Split:
    """This rank's share of every inner minibatch under a process group of ``world`` > 1 ranks."""

    group: object
    rank: int
    world: int

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over the ranks, in place."""
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return t


def inner_loss(fm: FlatModel, theta, images, labels, batch, augment, generator, loss_scale: float,
               split: _Split | None = None):
    """loss_scale x cross-entropy of one step's minibatch (soft labels: CE against softmax(labels)). With a
    ``split``, this rank's term of it: the augmented minibatch's rows rank, rank + world, ..., their CE summed
    and divided by the minibatch's size (so the terms of all ranks add up to the mean)."""
    x = images if batch is None else images[batch.to(images.device)]
    y = labels if batch is None else labels[batch.to(labels.device)]
    if augment is not None:
        x = augment(x, generator)  # the whole minibatch: the per-image draws are one process's
        if x.shape[0] != y.shape[0]:  # k augmented copies of the minibatch, copy after copy (MTT's texture mode)
            copies = x.shape[0] // y.shape[0]
            if copies * y.shape[0] != x.shape[0]:
                raise ValueError(f"augment returned {x.shape[0]} rows for a minibatch of {y.shape[0]}: it must return "
                                 f"the minibatch or whole copies of it")
            y = y.repeat(copies, *([1] * (y.dim() - 1)))
    rows = x.shape[0]
    if split is not None:
        x, y = x[split.rank::split.world], y[split.rank::split.world]
    logits = fm(theta, x)
    target = y if y.dtype == torch.long else torch.softmax(y, dim=-1)
    if split is None:
        return loss_scale * F.cross_entropy(logits, target)
    return loss_scale * F.cross_entropy(logits, target, reduction="sum") / rows


def _step_gradient(fm, theta, images, labels, plan: StepPlan, n: int, augment, loss_scale, create_graph: bool,
                   split: _Split | None = None):
    """g_n at ``theta``, or with a ``split`` this rank's term g_n^r of it."""
    loss = inner_loss(fm, theta, images, labels, plan.batches[n], augment, plan.generator(n, images.device),
                      loss_scale, split)
    return torch.autograd.grad(loss, theta, create_graph=create_graph)[0]


class _SavedBytes:
    """Counts the bytes of the distinct storages that autograd saved while it was active and that a graph still
    holds (a saved tensor whose node died since does not count), leaving out the storages of ``kept`` (tensors
    alive anyway: the parameter vector, images, labels)."""

    def __init__(self, *kept: torch.Tensor):
        self.skip = {_storage_key(t)[0] for t in kept}
        self.saved: list = []  # (weak reference to what the graph holds, storage key, bytes)
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key, nbytes = _storage_key(t)
        held = t.detach()  # not t itself: a saved output holding itself would be a reference cycle (a leak)
        if key not in self.skip:
            self.saved.append((weakref.ref(held), key, nbytes))
        return held

    @property
    def bytes(self) -> int:
        return sum(dict((key, nbytes) for ref, key, nbytes in self.saved if ref() is not None).values())

    def __enter__(self):
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        return self._hooks.__exit__(*exc)


def _storage_key(t: torch.Tensor):
    try:
        storage = t.untyped_storage()
        return (t.device, storage.data_ptr()), storage.nbytes()
    except (RuntimeError, NotImplementedError, TypeError):  # a tensor without one storage (sparse, subclasses)
        return ("tensor", id(t)), t.numel() * t.element_size()


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


def steps_kept(memory_budget: int | float, step_bytes: Sequence[int]) -> int:
    """How many of the N = len(step_bytes) inner steps ``memory_budget`` keeps the create_graph graph of (the
    last ones), step n's graph holding ``step_bytes[n]`` bytes: a float fraction f of the N steps' graphs keeps
    floor(f N) steps (the bytes do not matter); an int number of bytes B keeps the longest run of last steps
    whose bytes add up to at most B. A budget below the last step's bytes keeps none."""
    steps = len(step_bytes)
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, Integral):
        return min(steps, math.floor(float(memory_budget) * steps + 1e-9))  # 0.1 * 30 is 3.0000000000000004
    kept, total = 0, 0
    for nbytes in reversed(step_bytes):
        total += nbytes
        if total > memory_budget:
            break
        kept += 1
    return kept


def _memory_budget(memory_budget, mode: str):
    """The validated budget (an int of bytes or a float fraction), the default for None, or None (autograd)."""
    if memory_budget is None:
        return None if mode == "autograd" else DEFAULT_MEMORY_BUDGET
    if mode == "autograd":
        raise ValueError(f"memory_budget applies to the steps that mode='adjoint' and 'tesla' replay; mode='autograd' "
                         f"keeps every step's graph anyway: pass memory_budget=None, got {memory_budget!r}")
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, Real):
        raise TypeError(f"memory_budget must be None, an int number of bytes >= 0 or a float fraction in [0, 1] of "
                        f"all steps' graphs, got {type(memory_budget).__name__} {memory_budget!r}")
    if isinstance(memory_budget, Integral):
        if memory_budget < 0:
            raise ValueError(f"memory_budget as a number of bytes must be >= 0, got {memory_budget!r}")
        return int(memory_budget)
    value = float(memory_budget)
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ValueError(f"memory_budget as a float is a fraction in [0, 1] of all steps' graphs (an int is a number "
                         f"of bytes), got {memory_budget!r}")
    return value


def _unroll_autograd(fm, theta0, images, labels, lr, plan, momentum, augment, loss_scale, keep):
    theta = theta0.detach().requires_grad_()
    velocity = torch.zeros_like(theta) if momentum else None
    kept = {0: theta0.detach()} if 0 in keep else {}
    for n in range(len(plan.seeds)):
        g = _step_gradient(fm, theta, images, labels, plan, n, augment, loss_scale, create_graph=True)
        if velocity is None:
            theta = sgd_step(theta, g, lr)
        else:
            theta, velocity = sgd_step(theta, g, lr, velocity, momentum)
        if n + 1 in keep:
            kept[n + 1] = theta
    return theta, kept


class _Reverse(torch.autograd.Function):
    """The ``adjoint`` and ``tesla`` modes. Inputs that may require grad: lr (a 0-d tensor), images,
    labels; everything else rides in ``config``. Outputs: theta_N, then theta_k for k in ``keep``."""

    @staticmethod
    def forward(ctx, config, lr, images, labels):
        fm, theta0, plan, momentum, augment, loss_scale, keep, mode, split, budget = config
        rate, images_d, labels_d = lr.detach(), images.detach(), labels.detach()
        need_x, need_y = ctx.needs_input_grad[2:4]
        # the leaves every stored graph and every replay differentiates to
        images_leaf, labels_leaf = images.detach().requires_grad_(need_x), labels.detach().requires_grad_(need_y)
        steps = len(plan.seeds)
        # budget None: no gradient will be asked for, or the backward wants nothing a graph gives (tesla, lr only)
        if budget is None or budget == 0 or not (mode == "adjoint" or need_x or need_y):
            first = steps  # the first step whose graph is kept: none
        elif isinstance(budget, float):
            first = steps - steps_kept(budget, [0] * steps)
        else:
            first = None  # an int of bytes: decided at step 0 from its measured graph
        in_bytes = isinstance(budget, int) and first is None
        graphs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # n -> (theta_n leaf, g_n with its graph)
        held, spent = [], 0  # bytes budgets: the kept steps in order and the bytes their graphs hold
        thetas, velocities = [], []
        theta = theta0.detach()
        velocity = torch.zeros_like(theta) if momentum else None
        for n in range(steps):
            thetas.append(theta)
            graph = first is None or n >= first
            with torch.enable_grad():
                leaf = theta.detach().requires_grad_()
                if graph:  # an int budget counts the bytes the graph holds
                    with _SavedBytes(leaf, images, labels) if in_bytes else contextlib.nullcontext() as saved:
                        g = _step_gradient(fm, leaf, images_leaf, labels_leaf, plan, n, augment, loss_scale,
                                           create_graph=True, split=split)
                else:
                    g = _step_gradient(fm, leaf, images_d, labels_d, plan, n, augment, loss_scale,
                                       create_graph=False, split=split)
            if graph:
                nbytes = saved.bytes if in_bytes else 0  # what g_n's graph holds
                if first is None:  # step 0 measures one step's graph for a budget in bytes; the others by rows
                    rows = [images.shape[0] if b is None else len(b) for b in plan.batches]
                    first = steps - steps_kept(budget, [-(-nbytes * r // rows[0]) for r in rows])
                if n >= first:
                    graphs[n] = (leaf, g)
                    if in_bytes:  # the estimate may miss (other rows, augmentation): hold the cap
                        held.append((n, nbytes))
                        spent += nbytes
                        while spent > budget:  # drop the earliest kept graphs: those steps are replayed
                            dropped, nbytes = held.pop(0)
                            del graphs[dropped]
                            spent -= nbytes
                g = g.detach()
                if split is not None:
                    g = g.clone()  # the stored graph's output stays this rank's term
            if split is not None:
                split.sum_(g)  # g_n = sum_r g_n^r
            if velocity is None:
                theta = sgd_step(theta, g, rate)
            else:
                theta, velocity = sgd_step(theta, g, rate, velocity, momentum)
                velocities.append(velocity)  # v_{n+1}: the direction of step n
        ctx.config, ctx.thetas, ctx.velocities = config, thetas, velocities
        ctx.graphs, ctx.leaves = graphs, (images_leaf, labels_leaf)
        ctx.save_for_backward(lr, images, labels)
        kept = [(thetas[k] if k < len(thetas) else theta).clone() for k in keep]
        ctx.mark_non_differentiable(*[t for k, t in zip(keep, kept) if k == 0])
        return (theta, *kept)

    @staticmethod
    def backward(ctx, grad_final, *grad_kept):
        fm, _, plan, momentum, augment, loss_scale, keep, mode, split, _ = ctx.config
        lr, images, labels = ctx.saved_tensors
        rate = lr.detach()
        need_lr, need_x, need_y = ctx.needs_input_grad[1:4]
        steps = len(plan.seeds)
        injected: dict[int, torch.Tensor] = {}
        for k, grad in zip(keep, grad_kept):
            if grad is not None and k > 0:  # theta_0 is a constant start point
                injected[k] = injected[k] + grad if k in injected else grad
        lam = grad_final if grad_final is not None else torch.zeros_like(ctx.thetas[0])
        lam = lam + injected.pop(steps) if steps in injected else lam
        nu = torch.zeros_like(lam) if momentum else None
        d_lr = torch.zeros((), dtype=lam.dtype, device=lam.device)
        images_leaf, labels_leaf = ctx.leaves  # the stored graphs' leaves
        d_x = torch.zeros_like(images, memory_format=torch.contiguous_format) if need_x else None  # all_reduce: dense
        d_y = torch.zeros_like(labels, memory_format=torch.contiguous_format) if need_y else None
        exact = mode == "adjoint"
        for n in range(steps - 1, -1, -1):
            with torch.enable_grad():
                stored = ctx.graphs.pop(n, None)  # consumed once: a second backward replays
                if stored is None:  # replay step n
                    theta = ctx.thetas[n].detach().requires_grad_()
                    g = _step_gradient(fm, theta, images_leaf, labels_leaf, plan, n, augment, loss_scale,
                                       create_graph=True, split=split)  # with a split: this rank's g_n^r
                else:  # kept by the forward under memory_budget
                    theta, g = stored
                    del stored
                if nu is None:  # with a split, d_lr_n is this rank's term -<lambda_{n+1}, g_n^r>
                    u, d_lr_n = adjoint_step(lam, None, g.detach(), rate)
                else:
                    u, d_lr_n, nu_next = adjoint_step(lam, nu, ctx.velocities[n], rate, momentum)
                d_lr = d_lr + d_lr_n
                wanted = [theta] * exact + [images_leaf] * need_x + [labels_leaf] * need_y
                vjp = list(torch.autograd.grad(g, wanted, grad_outputs=u, allow_unused=True)) if wanted else []
                del g, theta  # this step's graph: freed before the next one is built
            if exact:
                h_u = vjp.pop(0) if split is None else split.sum_(vjp.pop(0))  # H_n u = sum_r H_n^r u
                lam = lam + h_u  # lambda_n = lambda_{n+1} + H_n u
                if nu is not None:
                    nu = nu_next  # momentum * u
                if n in injected:
                    lam = lam + injected.pop(n)
            for wanted_grad, acc in ((need_x, d_x), (need_y, d_y)):
                if wanted_grad:
                    got = vjp.pop(0)
                    if got is not None:
                        acc += got
        if split is not None:  # each rank holds its rows' terms; with momentum d_lr came from v_{n+1}, global
            for partial in (d_x, d_y, d_lr if nu is None else None):
                if partial is not None:
                    split.sum_(partial)
        grad_lr = d_lr.reshape(lr.shape).to(lr.dtype) if need_lr else None
        return None, grad_lr, d_x, d_y


def unroll(fm: FlatModel, theta0: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, lr, steps: int, *,
           batch_size: int | None = None, momentum: float = 0.0,
           augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
           generator: torch.Generator | None = None, return_steps: Sequence[int] = (), loss_scale: float = 1.0,
           mode: str = "adjoint", process_group=None, memory_budget: int | float | None = None,
           plan: StepPlan | None = None):
    """N inner SGD steps of a student from ``theta0`` on the synthetic set (docs/semantics.md#unroll).

    For n = 0..N-1: b_n = a minibatch (MTT's order: chunks of a seeded permutation, taken from the end;
    the whole set when ``batch_size`` is None), x_n = augment(images[b_n], generator of step n),
    g_n = grad_theta of loss_scale * CE(fm(theta_n, x_n), labels[b_n]); plain SGD theta_{n+1} = theta_n -
    lr g_n, or with ``momentum`` mu (AST): v_{n+1} = mu v_n + g_n, theta_{n+1} = theta_n - lr v_{n+1}.

    Args:
        fm: a :class:`FlatModel`; theta0: its flat start vector (an expert checkpoint), a constant.
        images: the synthetic set [S, ...]; rows that should stay fixed simply do not require grad (a
            frozen part, SeqMatch: pass the concatenation, only the learnable tensor requires grad).
        labels: int64 class labels [S], or float label logits [S, C] (soft CE against softmax(labels),
            DATM), learnable if they require grad.
        lr: the learnable step size, a 0-d tensor (or a number). steps: N >= 1.
        augment: ``augment(x, generator)``, differentiable in x; each step gets its own seeded generator,
            replayed identically in the backward pass. It may return k whole copies of the minibatch (k B rows,
            copy after copy: MTT's texture mode); the labels are repeated to match. generator: draws the
            minibatches and the per-step seeds (None: a generator seeded with 0, so an unroll is always
            reproducible).
        return_steps: steps k (0..N) whose theta_k is returned too (AST's intermediate matching).
        loss_scale: multiplies the inner cross-entropy (AST's balanced loss).
        mode: ``"adjoint"`` (exact; with ``memory_budget=0`` memory constant in N apart from N stored
            parameter vectors, 2N with momentum), ``"autograd"`` (MTT's create_graph unroll: the reference),
            ``"tesla"`` (TESLA's released first-order formula; plain SGD, no return_steps).
        process_group: a ``torch.distributed`` process group of W ranks that run this same call (same
            arguments, same ``generator`` seed) together, or None (one process). With W > 1 each rank computes
            the inner gradient of its rows r, r + W, ... of every minibatch (augmented whole, then split),
            the ranks sum it (one unroll spans W GPUs) and every rank returns the
            one-process result up to the order of the sums. Needs ``mode`` adjoint or tesla (the autograd
            mode keeps the whole create_graph graph in one process), at least W images in every minibatch
            and a module without BatchNorm normalising over the batch (its statistics would span a rank's
            rows only).
        memory_budget: how much of the create_graph graph the ``adjoint`` and ``tesla`` modes keep to replay
            fewer steps in the backward pass (same gradient, less time, more memory): the forward keeps the
            graphs of the last k steps and the backward differentiates them instead of recomputing them.
            A float f in [0, 1] is a fraction of all N steps' graphs: k = floor(f N) (0.0: replay every step,
            the least memory; 1.0: keep all, as much memory as ``autograd``). An int B >= 0 is bytes: k = the
            number of last steps whose graphs fit in B, measured (the distinct storages autograd saved for a
            step's create_graph gradient and its graph still holds, the parameter vector, images and labels
            left out): step 0's as it runs (then with create_graph), the others' estimated from it by their
            minibatch rows and each kept one's measured again, the earliest dropped if B would be passed, so
            the kept graphs never hold more than B; a B below one step keeps none. Note: 1 is one byte, 1.0
            every step. None (the default) is ``DEFAULT_MEMORY_BUDGET`` = 0.2: at N = 40 about a fifth of
            autograd's peak memory and within a few percent of its time (measured on CPU). Nothing is kept
            when no gradient will be asked for (grad mode off, or no input requiring grad). The tesla mode
            takes the budget as the adjoint does (its replays are the same); mode ``autograd`` needs None.
        plan: the randomness of every step drawn by the caller instead (:class:`StepPlan`: the minibatch
            indices, None for the whole set, and the seed of the generator ``augment`` gets): ddfast.compat.mtt
            draws MTT's minibatches from the global RNG and numbers the steps by their seeds. Takes the place
            of ``batch_size`` and ``generator``, which must then be None.

    Returns theta_N, or (theta_N, [theta_k for k in return_steps]); autograd continues from them to
    images, lr and soft labels.
    """
    if not isinstance(fm, FlatModel):
        raise TypeError(f"fm must be a ddfast.FlatModel, got {type(fm).__name__}")
    fm.check(theta0, "theta0")
    if not isinstance(images, torch.Tensor) or images.dim() < 2 or images.shape[0] < 1:
        raise ValueError("images must be a tensor [S, ...] with at least one image")
    _check_labels(labels, images)
    lr = _learning_rate(lr, theta0)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or not 1 <= batch_size <= images.shape[0]):
        raise ValueError(f"batch_size must be None or an int in [1, {images.shape[0]}] (the set's size), got "
                         f"{batch_size!r}")
    momentum = real_number(momentum, "momentum")
    loss_scale = finite_number(loss_scale, "loss_scale")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    for k in return_steps:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= steps:
            raise ValueError(f"return_steps holds {k!r}; steps to return must be ints in [0, steps={steps}]")
    if mode == "tesla" and (momentum or return_steps):
        raise ValueError("mode='tesla' is TESLA's formula for plain SGD with one final matching loss: it takes "
                         "no momentum and no return_steps")
    budget = _memory_budget(memory_budget, mode)
    split = _rank_split(process_group, fm, mode)
    if plan is None:
        plan = plan_steps(images.shape[0], steps, batch_size, generator)
    else:
        _check_plan(plan, steps, images.shape[0], batch_size, generator)
    if split is not None:
        smallest = min(images.shape[0] if b is None else len(b) for b in plan.batches)
        if smallest < split.world:
            chunks = "" if batch_size is None else f" in chunks of batch_size={batch_size}"
            raise ValueError(f"process_group has {split.world} ranks but the {images.shape[0]} images{chunks} give a "
                             f"minibatch of {smallest}: every rank needs a row of every minibatch; use fewer ranks or "
                             f"a batch_size whose chunks (the last one too) hold at least {split.world} images")
    keep = tuple(sorted(set(return_steps)))
    if mode == "autograd":
        theta, kept = _unroll_autograd(fm, theta0, images, labels, lr, plan, momentum, augment, loss_scale, keep)
    else:
        wanted = torch.is_grad_enabled() and any(t.requires_grad for t in (lr, images, labels))
        config = (fm, theta0, plan, momentum, augment, loss_scale, keep, mode, split, budget if wanted else None)
        theta, *outs = _Reverse.apply(config, lr, images, labels)
        kept = dict(zip(keep, outs))
    return (theta, [kept[k] for k in return_steps]) if return_steps else theta


def _rank_split(process_group, fm: FlatModel, mode: str) -> _Split | None:
    """The rank's share of the minibatches under ``process_group`` (None: one process, or a group of one)."""
    if process_group is None:
        return None
    if not dist.is_available() or not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(f"process_group must be a torch.distributed ProcessGroup (e.g. dist.group.WORLD) or None, "
                        f"got {type(process_group).__name__}")
    rank, world = dist.get_rank(process_group), dist.get_world_size(process_group)
    if rank < 0:
        raise ValueError("this process is not a member of process_group")
    if world == 1:
        return None
    if mode == "autograd":
        raise ValueError(f"mode='autograd' keeps the whole create_graph unroll in one process: with a process_group "
                         f"of {world} ranks use mode='adjoint' (exact) or 'tesla'")
    batch_stats = [name for name, m in fm.module.named_modules()
                   if isinstance(m, _BatchNorm) and (m.training or m.running_mean is None)]
    if batch_stats:
        raise ValueError(f"the module's BatchNorm layers {batch_stats[:3]} normalise over the minibatch: split across "
                         f"the {world} ranks of process_group their statistics would span one rank's rows; run one "
                         f"process or a model without BatchNorm")
    return _Split(process_group, rank, world)


def _check_plan(plan, steps: int, num_images: int, batch_size, generator) -> None:
    if not isinstance(plan, StepPlan):
        raise TypeError(f"plan must be a ddfast.ops.unroll.StepPlan, got {type(plan).__name__}")
    if batch_size is not None or generator is not None:
        raise ValueError("plan gives the minibatches and seeds: batch_size and generator must be None with it")
    if len(plan.batches) != steps or len(plan.seeds) != steps:
        raise ValueError(f"plan has {len(plan.batches)} minibatches and {len(plan.seeds)} seeds for steps={steps}")
    for n, batch in enumerate(plan.batches):
        if batch is None:
            continue
        if not isinstance(batch, torch.Tensor) or batch.dtype != torch.long or batch.dim() != 1 or not len(batch) \
                or int(batch.min()) < 0 or int(batch.max()) >= num_images:
            raise ValueError(f"plan.batches[{n}] must be None or a non-empty int64 vector of indices in "
                             f"[0, {num_images})")


def _check_labels(labels, images) -> None:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} rows but images has {images.shape[0]}")
    if labels.dtype == torch.long:
        if labels.dim() != 1:
            raise ValueError(f"hard labels must be 1-D int64 [S], got shape {tuple(labels.shape)}")
    elif labels.dtype.is_floating_point:
        if labels.dim() != 2:
            raise ValueError(f"soft labels must be float logits [S, C], got shape {tuple(labels.shape)}")
    else:
        raise TypeError(f"labels must be int64 class labels or float label logits, got dtype {labels.dtype}")


def _learning_rate(lr, theta0) -> torch.Tensor:
    if isinstance(lr, torch.Tensor):
        if lr.dim() != 0 or not lr.dtype.is_floating_point:
            raise ValueError(f"lr must be a 0-d floating-point tensor or a number, got shape {tuple(lr.shape)} "
                             f"dtype {lr.dtype}")
        if not torch.compiler.is_compiling() and not math.isfinite(float(lr.detach())):
            raise ValueError(f"lr must be finite, got {float(lr.detach())}")
        return lr
    return torch.tensor(finite_number(lr, "lr"), dtype=theta0.dtype, device=theta0.device)
