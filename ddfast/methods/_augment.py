"""How the methods apply ddfast's fused DSA (docs/semantics.md#dsa), following where DC seeds DiffAugment.

* :class:`ClassSiamese`: DC/DSA and DM augment each class's real batch and synthetic images with ONE
  shared parameter set per class (DC calls DiffAugment with the same seed on both). ddfast draws one
  set per class (``groups=K``) for all classes at once and applies it through the labels as group index.
* :func:`per_sample`: DC's unseeded calls (network training in DC/DSA, MTT's inner loop, expert
  training, evaluation) draw a fresh set per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ops.dsa import dsa, dsa_augment, dsa_sample
from . import _common as common

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"


def enabled(strategy: str | None) -> bool:
    return bool(strategy) and strategy != "none"


@dataclass
class ClassSiamese:
    strategy: str
    num_classes: int
    mode: str = "S"  # DC's aug_mode: one family per call ('S') or all in order ('M')

    @classmethod
    def from_strategy(cls, strategy: str | None, num_classes: int, mode: str = "S") -> "ClassSiamese | None":
        return cls(strategy, num_classes, mode) if enabled(strategy) else None

    def sample(self, seed: int, iteration, device):
        """The per-class parameter sets of one iteration (drawn from (seed, "dsa", iteration))."""
        g = common.generator(seed, "dsa", iteration, device=device)
        return dsa_sample(1, self.strategy, g, mode=self.mode, groups=self.num_classes)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor, params) -> torch.Tensor:
        return dsa(x, params, group_index=labels)


def per_sample(strategy: str | None, mode: str = "S"):
    """An ``augment(x, generator)`` callable (per-image parameters) or None when disabled."""
    return dsa_augment(strategy, mode=mode) if enabled(strategy) else None
