"""MTT's ``ReparamModule`` (GeorgeCazenavette/mtt-distillation, reparam_module.py) on :class:`ddfast.FlatModel`.

``from ddfast.compat.mtt import ReparamModule`` in place of MTT's own: ``net = ReparamModule(module)``,
``net(x, flat_param=theta)`` runs ``module`` with its parameters taken from the flat vector ``theta``
(layout: ``module.named_parameters()`` order, the order of MTT's expert buffers); ``net(x)`` runs it
with its own parameters; ``buffers=`` replaces the module's buffers for the call, in
``module.named_buffers()`` order, as in MTT.

Unlike MTT's class, nothing is deleted from or set on the wrapped module: the call goes through
``torch.func.functional_call`` on views of ``flat_param`` (so it is thread-safe per replica and works
under ``torch.nn.DataParallel``, which MTT's distill.py uses with ``flat_param`` expanded to
``[num_gpus, P]``; a leading dimension of size 1 is squeezed, as MTT does). ``net.parameters()`` are
the wrapped module's own parameters, which hold ``param_numel`` numbers in all, as MTT's single
``flat_param`` does (distill.py divides its losses by that count); ``net.flat_param`` is their
current values as one vector (MTT: the registered flat parameter, which also holds the current
values). MTT's ``trace``, ``clear_views`` and ``unflattened_param`` are not provided (distill.py
does not use them).
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops.dsa import dsa
from ..ops.unroll import FlatModel


class ReparamModule(nn.Module):
    """``ReparamModule(module)``: call with ``flat_param=theta`` (a vector of ``param_numel``
    numbers, or ``[1, param_numel]``) to run ``module`` on those parameters."""

    def __init__(self, module: nn.Module):
        super().__init__()
        flat = FlatModel(module)  # validates: an nn.Module with parameters
        dtypes = {p.dtype for p in module.parameters()}
        if len(dtypes) > 1:
            raise ValueError(f"module's parameters must share one dtype (a flat vector has one), got "
                             f"{sorted(str(d) for d in dtypes)}")
        self.module = module
        self._flat = flat
        self.param_numel = flat.num_params
        self._param_names = tuple(flat.names)
        self._param_numels = tuple(flat.numels)
        self._param_shapes = tuple(torch.Size(s) for s in flat.shapes)
        self._buffer_names = tuple(name for name, _ in module.named_buffers())

    @property
    def flat_param(self) -> torch.Tensor:
        """The wrapped module's current parameters as one vector (in autograd's graph: gradients
        reach the module's parameters)."""
        return torch.cat([p.reshape(-1) for p in self.module.parameters()])

    def unflatten(self, flat_param: torch.Tensor) -> "dict[str, torch.Tensor]":
        """Parameters of ``flat_param`` by name (views)."""
        return dict(self._flat.state_dict(flat_param))

    def _squeezed(self, flat_param) -> torch.Tensor:
        if not isinstance(flat_param, torch.Tensor):
            raise TypeError(f"flat_param must be a torch.Tensor, got {type(flat_param).__name__}")
        while flat_param.dim() > 1 and flat_param.shape[0] == 1:
            flat_param = flat_param[0]
        self._flat.check(flat_param, "flat_param")
        return flat_param

    def _buffer_dict(self, buffers) -> "dict[str, torch.Tensor]":
        if isinstance(buffers, torch.Tensor) or not isinstance(buffers, (list, tuple)):
            raise TypeError(f"buffers must be a list or tuple of tensors, got {type(buffers).__name__}")
        buffers = list(buffers)
        if len(buffers) != len(self._buffer_names):
            raise ValueError(f"buffers has {len(buffers)} tensors but the module has {len(self._buffer_names)} buffers")
        for i, b in enumerate(buffers):
            if not isinstance(b, torch.Tensor):
                raise TypeError(f"buffers[{i}] must be a torch.Tensor, got {type(b).__name__}")
        return dict(zip(self._buffer_names, buffers))

    def forward(self, *inputs, flat_param: torch.Tensor | None = None, buffers=None, **kwinputs):
        if flat_param is None and buffers is None:
            return self.module(*inputs, **kwinputs)
        replaced = {} if flat_param is None else self.unflatten(self._squeezed(flat_param))
        if buffers is not None:
            replaced.update(self._buffer_dict(buffers))
        return torch.func.functional_call(self.module, replaced, inputs, kwinputs, strict=False)


def _flat_vector(flat: FlatModel, params, device, name: str) -> torch.Tensor:
    """A buffer entry (a list of tensors, checked against the module's parameters by :meth:`FlatModel.flatten`) or
    an already flat vector, as one detached vector on ``device``: MTT's ``torch.cat([p.data.to(device)...])``."""
    if isinstance(params, torch.Tensor):
        return params.detach().to(device).reshape(-1)
    if isinstance(params, (list, tuple)):
        return flat.flatten([p.detach() for p in params]).to(device)
    raise TypeError(f"{name} must be an expert checkpoint (a list of tensors) or a flat tensor, got "
                    f"{type(params).__name__}")


class _MTTDraws:
    """MTT's inner loop's random draws, made up front in MTT's order on torch's global RNG: per step, a new
    ``torch.randperm`` of the set when the chunks of the last one are used up (chunks of ``batch_syn`` taken
    from the end), texture mode's two ``torch.randint`` shifts per image and canvas sample, and the unseeded
    DiffAugment's draws (ddfast.compat.dc.dc_draws). Every draw depends on sizes only, not on values, so drawing
    them first leaves the generators where MTT's loop leaves them and the unroll can replay each step exactly."""

    def __init__(self, images: torch.Tensor, args, steps: int):
        from .dc import dc_draws

        count, (height, width) = images.shape[0], images.shape[-2:]
        if args.texture:  # the set is canvases of canvas_size x the dataset's image size; steps train on crops
            self.crop = (height // args.canvas_size, width // args.canvas_size)
            bounds = (int(self.crop[0] * args.canvas_size), int(self.crop[1] * args.canvas_size))
        self.batches, self.shifts, self.dsa = [], [], []
        chunks = []
        for _ in range(steps):
            if not chunks:
                chunks = list(torch.split(torch.randperm(count), args.batch_syn))
            batch = chunks.pop()
            rows = len(batch)
            if args.texture:
                self.shifts.append([[(int(torch.randint(bounds[0], (1,))), int(torch.randint(bounds[1], (1,))))
                                     for _ in range(rows)] for _ in range(args.canvas_samples)])
                rows *= args.canvas_samples
            like = images.new_empty((rows, images.shape[1], *(self.crop if args.texture else (height, width))))
            self.dsa.append(dc_draws(like, args.dsa_strategy, param=args.dsa_param)
                            if args.dsa and not args.no_aug else None)
            self.batches.append(batch)

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Step n's augmentation (n: the seed of the generator the unroll hands over, see ``plan``): texture mode's
        rolled crops of each canvas sample, then DiffAugment with the drawn parameters."""
        n = generator.initial_seed()
        if self.shifts:
            height, width = self.crop
            x = torch.cat([torch.stack([torch.roll(im, shift, (1, 2))[:, :height, :width]
                                        for im, shift in zip(x, sample)]) for sample in self.shifts[n]])
        return x if self.dsa[n] is None else dsa(x, self.dsa[n])


def match_trajectory(student_net: "ReparamModule", image_syn: torch.Tensor, label_syn: torch.Tensor,
                     syn_lr: torch.Tensor, starting_params, target_params, args,
                     memory_budget: int | float | None = None) -> torch.Tensor:
    """MTT distill.py's inner loop and matching loss in one call, by the exact adjoint unroll (``ddfast.unroll``).

    Replaces the block of distill.py from ``target_params = torch.cat(...)`` to ``grand_loss = param_loss`` (and
    the ``for _ in student_params: del _`` lines that freed its list)::

        grand_loss = match_trajectory(student_net, image_syn, label_syn, syn_lr, starting_params, target_params,
                                      args)

    It runs ``args.syn_steps`` SGD steps of the student (``student_net``, a :class:`ReparamModule`) from the
    starting checkpoint at learning rate ``syn_lr`` on minibatches of ``args.batch_syn`` synthetic images in MTT's
    order (``torch.randperm`` on the global RNG, chunks taken from the end), each augmented as MTT does (texture
    mode's rolled crops when ``args.texture``, with ``args.canvas_size`` and ``args.canvas_samples``; unseeded
    DiffAugment with ``args.dsa_strategy`` and ``args.dsa_param`` when ``args.dsa`` and not ``args.no_aug``), the
    mean cross-entropy as MTT's criterion, and returns ``||theta_N - target||^2 / ||start - target||^2`` (MTT's
    param_loss / param_dist) with gradients to ``image_syn`` and ``syn_lr``. The random draws are MTT's, from the
    global RNG in MTT's order (:class:`_MTTDraws`). The gradient is exact; memory: the graphs of the last fifth of
    the steps (``memory_budget``, as ddfast.unroll's; 0.0 keeps none) instead of all of them.

    MTT's ``--distributed`` (``nn.DataParallel`` around the ReparamModule) is refused with a clear error: the
    unroll runs in one process (ddfast.unroll's ``process_group`` spreads it over torchrun ranks instead).
    """
    from ..ops.param_match_loss import param_match_loss
    from ..ops.unroll import StepPlan, unroll

    if isinstance(student_net, nn.DataParallel) or getattr(args, "distributed", False):
        raise ValueError("match_trajectory runs MTT's inner loop in one process and does not take MTT's --distributed "
                         "nn.DataParallel student: drop --distributed (the adjoint unroll needs a fraction of the "
                         "memory DataParallel spread over GPUs), or span GPUs with torchrun and ddfast.unroll's "
                         "process_group")
    if not isinstance(student_net, ReparamModule):
        raise TypeError(f"student_net must be ddfast.compat.mtt.ReparamModule (import it in place of MTT's), got "
                        f"{type(student_net).__name__}")
    device = image_syn.device
    start = _flat_vector(student_net._flat, starting_params, device, "starting_params")
    target = _flat_vector(student_net._flat, target_params, device, "target_params")
    draws = _MTTDraws(image_syn, args, args.syn_steps)
    plan = StepPlan(draws.batches, list(range(args.syn_steps)))
    theta = unroll(student_net._flat, start, image_syn, label_syn.to(device), syn_lr, args.syn_steps,
                   augment=draws.augment, plan=plan, memory_budget=memory_budget)
    return param_match_loss(theta, start, target)
