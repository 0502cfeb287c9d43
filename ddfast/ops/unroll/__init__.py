"""Trajectory matching engine (OPS.md section 3): flat functional models and the unrolled inner loop."""

from __future__ import annotations

from .flat_model import FlatModel

__all__ = ["FlatModel"]
