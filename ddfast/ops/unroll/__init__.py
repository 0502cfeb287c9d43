"""Trajectory matching engine (OPS.md section 3): flat functional models and the unrolled inner loop."""

from __future__ import annotations

from .flat_model import FlatModel
from .unroll import MODES, unroll

__all__ = ["FlatModel", "MODES", "unroll"]
