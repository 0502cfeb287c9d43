"""Fused hot paths, one package per op (docs/DESIGN.md#layout-as-built)."""
