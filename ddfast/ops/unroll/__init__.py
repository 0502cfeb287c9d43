"""Trajectory matching engine (docs/semantics.md#unroll): flat functional models and the unrolled inner loop.

A composite, not a custom op: Python over the fused sgd_step and adjoint_step ops and torch autograd, with no
declaration, dispatch table or backend of its own (docs/DESIGN.md, "Layout as built")."""

from __future__ import annotations

from .flat_model import FlatModel
from .plan import StepPlan
from .unroll import DEFAULT_MEMORY_BUDGET, MODES, steps_kept, unroll

__all__ = ["DEFAULT_MEMORY_BUDGET", "FlatModel", "MODES", "StepPlan", "steps_kept", "unroll"]
