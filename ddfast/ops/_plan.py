"""What the work plans of the fused ops (bn_stat_loss, grad_distance) share: a plan is built once per
shape on the host and cached; the index tables its kernels read are copied to each device once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch


@dataclass(frozen=True)
class DeviceTables:
    """Base of a frozen plan dataclass: ``on(device)`` returns the tensors named by the subclass's ``TABLES``,
    in that order, on ``device``, copied once per device."""

    TABLES: ClassVar[tuple[str, ...]] = ()
    _on_device: dict = field(default_factory=dict, compare=False, repr=False, kw_only=True)

    def on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = tuple(getattr(self, name).to(device) for name in self.TABLES)
        return self._on_device[key]
