"""``ddfast.unroll``: N functional SGD steps of a student on the synthetic set, differentiable w.r.t.
the images, the learnable lr and soft labels (OPS.md section 3).

Three gradient modes with the same forward:

* ``autograd``: MTT's way (GeorgeCazenavette/mtt-distillation, distill.py): every step's gradient
  with create_graph=True, the whole graph kept alive; memory grows with N x batch.
* ``adjoint``: exact, memory constant in N apart from the stored parameter vectors. The forward keeps
  only theta_n (and v_n with momentum); the backward walks n = N-1..0, recomputes g_n at theta_n with
  create_graph and takes ONE vector-Jacobian product of g_n with u (u = -lr lambda_{n+1} for SGD,
  u = nu_{n+1} - lr lambda_{n+1} with momentum), which gives H_n u (for lambda_n), and the gradients
  of the images and soft labels of that step.
* ``tesla``: the first-order formula of TESLA's released code (Cui et al., ICML 2023): the same reverse
  walk with lambda held at lambda_N (the Hessian chain through later steps dropped). Approximate.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .._validate import finite_number, real_number
from ..adjoint_step import adjoint_step
from ..sgd_step import sgd_step
from .flat_model import FlatModel
from .plan import StepPlan, plan_steps

MODES = ("autograd", "adjoint", "tesla")


def inner_loss(fm: FlatModel, theta, images, labels, batch, augment, generator, loss_scale: float):
    """loss_scale x cross-entropy of one step's minibatch (soft labels: CE against softmax(labels))."""
    x = images if batch is None else images[batch.to(images.device)]
    y = labels if batch is None else labels[batch.to(labels.device)]
    if augment is not None:
        x = augment(x, generator)
    logits = fm(theta, x)
    target = y if y.dtype == torch.long else torch.softmax(y, dim=-1)
    return loss_scale * F.cross_entropy(logits, target)


def _step_gradient(fm, theta, images, labels, plan: StepPlan, n: int, augment, loss_scale, create_graph: bool):
    loss = inner_loss(fm, theta, images, labels, plan.batches[n], augment, plan.generator(n, images.device),
                      loss_scale)
    return torch.autograd.grad(loss, theta, create_graph=create_graph)[0]


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
        fm, theta0, plan, momentum, augment, loss_scale, keep, _ = config
        rate, images_d, labels_d = lr.detach(), images.detach(), labels.detach()
        thetas, velocities = [], []
        theta = theta0.detach()
        velocity = torch.zeros_like(theta) if momentum else None
        for n in range(len(plan.seeds)):
            thetas.append(theta)
            with torch.enable_grad():
                g = _step_gradient(fm, theta.detach().requires_grad_(), images_d, labels_d, plan, n, augment,
                                   loss_scale, create_graph=False)
            if velocity is None:
                theta = sgd_step(theta, g, rate)
            else:
                theta, velocity = sgd_step(theta, g, rate, velocity, momentum)
                velocities.append(velocity)  # v_{n+1}: the direction of step n
        ctx.config, ctx.thetas, ctx.velocities = config, thetas, velocities
        ctx.save_for_backward(lr, images, labels)
        kept = [(thetas[k] if k < len(thetas) else theta).clone() for k in keep]
        ctx.mark_non_differentiable(*[t for k, t in zip(keep, kept) if k == 0])
        return (theta, *kept)

    @staticmethod
    def backward(ctx, grad_final, *grad_kept):
        fm, _, plan, momentum, augment, loss_scale, keep, mode = ctx.config
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
        images_leaf = images.detach().requires_grad_(need_x)
        labels_leaf = labels.detach().requires_grad_(need_y)
        d_x = torch.zeros_like(images) if need_x else None
        d_y = torch.zeros_like(labels) if need_y else None
        exact = mode == "adjoint"
        for n in range(steps - 1, -1, -1):
            with torch.enable_grad():
                theta = ctx.thetas[n].detach().requires_grad_()
                g = _step_gradient(fm, theta, images_leaf, labels_leaf, plan, n, augment, loss_scale,
                                   create_graph=True)
                if nu is None:
                    u, d_lr_n = adjoint_step(lam, None, g.detach(), rate)
                else:
                    u, d_lr_n, nu_next = adjoint_step(lam, nu, ctx.velocities[n], rate, momentum)
                d_lr = d_lr + d_lr_n
                wanted = [theta] * exact + [images_leaf] * need_x + [labels_leaf] * need_y
                vjp = list(torch.autograd.grad(g, wanted, grad_outputs=u, allow_unused=True)) if wanted else []
            if exact:
                lam = lam + vjp.pop(0)  # lambda_n = lambda_{n+1} + H_n u
                if nu is not None:
                    nu = nu_next  # momentum * u
                if n in injected:
                    lam = lam + injected.pop(n)
            for wanted_grad, acc in ((need_x, d_x), (need_y, d_y)):
                if wanted_grad:
                    got = vjp.pop(0)
                    if got is not None:
                        acc += got
        grad_lr = d_lr.reshape(lr.shape).to(lr.dtype) if need_lr else None
        return None, grad_lr, d_x, d_y


def unroll(fm: FlatModel, theta0: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, lr, steps: int, *,
           batch_size: int | None = None, momentum: float = 0.0,
           augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
           generator: torch.Generator | None = None, return_steps: Sequence[int] = (), loss_scale: float = 1.0,
           mode: str = "adjoint"):
    """N inner SGD steps of a student from ``theta0`` on the synthetic set (OPS.md section 3).

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
            replayed identically in the backward pass. generator: draws the minibatches and the per-step
            seeds (None: a generator seeded with 0, so an unroll is always reproducible).
        return_steps: steps k (0..N) whose theta_k is returned too (AST's intermediate matching).
        loss_scale: multiplies the inner cross-entropy (AST's balanced loss).
        mode: ``"adjoint"`` (exact, memory constant in N apart from N stored parameter vectors, 2N with
            momentum), ``"autograd"`` (MTT's create_graph unroll: the reference), ``"tesla"`` (TESLA's
            released first-order formula; plain SGD, no return_steps).

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
    plan = plan_steps(images.shape[0], steps, batch_size, generator)
    keep = tuple(sorted(set(return_steps)))
    if mode == "autograd":
        theta, kept = _unroll_autograd(fm, theta0, images, labels, lr, plan, momentum, augment, loss_scale, keep)
    else:
        config = (fm, theta0, plan, momentum, augment, loss_scale, keep, mode)
        theta, *outs = _Reverse.apply(config, lr, images, labels)
        kept = dict(zip(keep, outs))
    return (theta, [kept[k] for k in return_steps]) if return_steps else theta


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
