"""Loads the compiled extension ``ddfast._C`` when it is present and built for this torch.

Never raises: on any problem the extension is simply absent and ``status()`` says why, so that
``import ddfast`` works on a pure-Python install (docs/semantics.md#backends-and-dispatch).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import torch

_BUILD_INFO_PATH = Path(__file__).resolve().parent / "build_info.json"


def _read_build_info() -> dict:
    try:
        return json.loads(_BUILD_INFO_PATH.read_text())
    except (OSError, ValueError):
        return {}


def _load():
    info = _read_build_info()
    if not info.get("cpp"):  # a pure-Python install, or a failed build: any _C*.so left over is stale
        reason = info.get("build_error") or info.get("skipped") or "no build_info.json (ddfast was not installed)"
        return None, info, f"not built: {reason}"
    if importlib.util.find_spec("ddfast._C") is None:
        return None, info, "not built: ddfast._C is missing; reinstall with `pip install -e . --no-build-isolation`"
    built_for = info.get("torch_version")
    if built_for != torch.__version__:
        return None, info, (f"ddfast._C was built against torch {built_for} but torch {torch.__version__} is "
                            "running; rebuild with `pip install -e . --no-build-isolation`")
    try:
        module = importlib.import_module("ddfast._C")
    except (ImportError, OSError) as exc:
        return None, info, f"import failed: {exc}"
    return module, info, None


_C, BUILD_INFO, LOAD_ERROR = _load()


def has_cpp() -> bool:
    return _C is not None


def has_cuda_kernels() -> bool:
    return _C is not None and bool(_C.built_with_cuda())
