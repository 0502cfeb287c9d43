"""Trajectory matching engine (docs/semantics.md#unroll): flat functional models and the unrolled inner loop."""

from __future__ import annotations

from .flat_model import FlatModel
from .plan import StepPlan
from .unroll import DEFAULT_MEMORY_BUDGET, MODES, steps_kept, unroll

__all__ = ["DEFAULT_MEMORY_BUDGET", "FlatModel", "MODES", "StepPlan", "steps_kept", "unroll"]
