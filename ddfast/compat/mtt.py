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
