"""Fused hot paths, one package per op (docs/DESIGN.md#layout-as-built).

A package is a fused op, declared once through ``_registry.FusedOp`` in its ``_op.py`` with one module per
backend, or a composite, Python over fused ops and torch with no custom op of its own: ``unroll``,
``per_class_gradients`` and the k-means driver in ``kmeans/__init__.py`` (whose three steps are fused ops).
The flat-vector family (param_match_loss, sgd_step, adjoint_step) shares ``_flat.py``."""
