"""FlatModel: a module run functionally on views of one flat parameter vector (docs/semantics.md#flatmodel).

MTT's ``ReparamModule`` (GeorgeCazenavette/mtt-distillation) flattens a module's parameters into one
vector in registration order and swaps views of it into the module's attributes before each call.
FlatModel keeps the same vector layout (the order of ``module.named_parameters()``, so MTT's expert
buffers load as they are) but runs the module through ``torch.func.functional_call`` on views of the
vector: no attribute surgery, and autograd flows to the vector.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Sequence

import torch
from torch import nn


class FlatModel:
    """``fm = FlatModel(module)``; ``theta = fm.flat_params()``; ``fm(theta, x)`` = ``module(x)`` with
    the parameters taken from ``theta``. Buffers (e.g. BatchNorm running statistics) stay the module's."""

    def __init__(self, module: nn.Module):
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        params = list(module.named_parameters())
        if not params:
            raise ValueError(f"module ({type(module).__name__}) has no parameters")
        self.names = [name for name, _ in params]
        self.shapes = [tuple(p.shape) for _, p in params]
        self.numels = [p.numel() for _, p in params]
        self.num_params = sum(self.numels)

    def flat_params(self) -> torch.Tensor:
        """The module's current parameters as one contiguous vector (a detached copy)."""
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()])

    def check(self, theta: torch.Tensor, name: str = "theta") -> None:
        if not isinstance(theta, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(theta).__name__}")
        if theta.dim() != 1 or theta.numel() != self.num_params:
            raise ValueError(f"{name} must be a flat vector of {self.num_params} parameters (the module's), got shape "
                             f"{tuple(theta.shape)}")

    def unflatten(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """Per-parameter views of ``theta`` in registration order."""
        self.check(theta)
        return [t.view(shape) for t, shape in zip(torch.split(theta, self.numels), self.shapes)]

    def state_dict(self, theta: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """The parameters of ``theta`` by name (views), e.g. for ``module.load_state_dict(..., strict=False)``."""
        return OrderedDict(zip(self.names, self.unflatten(theta)))

    def flatten(self, params: Sequence[torch.Tensor] | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One flat vector from per-parameter tensors (a list in registration order, or a mapping by name)."""
        if isinstance(params, Mapping):
            missing = [n for n in self.names if n not in params]
            if missing:
                raise ValueError(f"params lacks parameters {missing[:5]} of the module")
            params = [params[n] for n in self.names]
        params = list(params)
        if len(params) != len(self.shapes):
            raise ValueError(f"params has {len(params)} tensors but the module has {len(self.shapes)} parameters")
        for i, (p, shape) in enumerate(zip(params, self.shapes)):
            if tuple(p.shape) != shape:
                raise ValueError(f"params[{i}] ({self.names[i]}) has shape {tuple(p.shape)}, expected {shape}")
        return torch.cat([p.reshape(-1) for p in params])

    def __call__(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.module, self.state_dict(theta), (x,), strict=False)
