"""Lazy imports of optional backend modules (Triton is an optional dependency)."""

from __future__ import annotations

import importlib


class LazyModule:
    """Imports ``name`` on first attribute access, so importing ddfast never imports triton."""

    def __init__(self, name: str):
        self._name = name
        self._module = None

    def __getattr__(self, attr: str):
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)
