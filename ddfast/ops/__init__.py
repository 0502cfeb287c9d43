"""Fused hot paths, one package per op (ARCHITECTURE.md, "Layers")."""
