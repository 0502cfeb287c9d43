"""Backend registry and dispatch (docs/semantics.md#backends-and-dispatch).

Backends: ``reference`` (pure PyTorch, every device, the oracle), ``cpp`` (C++ CPU kernels in
``ddfast._C``), ``cuda`` (CUDA kernels in ``ddfast._C``), ``triton`` (CUDA tensors; CPU tensors only
under ``TRITON_INTERPRET=1``). ``auto`` sends CPU tensors to ``cpp`` when built, else ``reference``;
CUDA tensors to the op's preferred GPU backend among those recorded as validated on a GPU for the
current source in ``ddfast/gpu_validated.json``, else ``reference`` with a one-time notice.
``DDFAST_BACKEND=<name>`` or ``with ddfast.use_backend(name):`` forces one backend; a forced backend
that cannot run raises :class:`BackendUnavailableError` saying what is missing.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import json
import os
import warnings
from pathlib import Path
from typing import Callable, Iterator

import torch

from . import _ext
from ._source_hash import triton_source_hash

BACKENDS = ("reference", "cpp", "cuda", "triton")
GPU_BACKENDS = ("cuda", "triton")
VALIDATED_PATH = Path(__file__).resolve().parent / "gpu_validated.json"

_REGISTRY: list["OpDispatch"] = []
_RAN: dict[str, set[str]] = {}  # op -> backends its calls resolved to, since the last backends_ran(reset=True)
_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("ddfast_backend", default=None)


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run this call."""


def _check_name(name: str, source: str) -> str:
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"{source}: unknown ddfast backend {name!r}; choose one of {('auto',) + BACKENDS}")
    return name


def requested_backend() -> tuple[str, str]:
    """The backend asked for and where the request came from."""
    forced = _forced.get()
    if forced is not None:
        return forced, "ddfast.use_backend"
    env = os.environ.get("DDFAST_BACKEND", "").strip()
    if env:
        return _check_name(env, "DDFAST_BACKEND"), "DDFAST_BACKEND"
    return "auto", "default"


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force ``name`` (or ``"auto"``) for every ddfast op called inside the block."""
    token = _forced.set(_check_name(name, "use_backend"))
    try:
        yield
    finally:
        _forced.reset(token)


def backends_ran(reset: bool = False) -> dict[str, list[str]]:
    """For each op called since the last reset, the backends its calls ran (sorted); ``reset`` starts anew."""
    ran = {op: sorted(names) for op, names in sorted(_RAN.items())}
    if reset:
        _RAN.clear()
    return ran


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def triton_import_error() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed (pip install triton)"
    try:
        import triton  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - report whatever broke the import
        return f"importing triton failed: {exc}"
    return None


def registered_ops() -> tuple["OpDispatch", ...]:
    """The dispatch tables of all ops imported so far (all public ops, once ddfast is imported)."""
    return tuple(_REGISTRY)


def availability(backend: str, device_type: str) -> str | None:
    """None if ``backend`` can run tensors on ``device_type``, else the reason it cannot."""
    if backend == "reference":
        return None
    if device_type == "cuda" and not torch.cuda.is_available():
        return "no CUDA device is visible"
    if backend == "cpp":
        if device_type != "cpu":
            return f"the cpp backend runs CPU tensors only, got {device_type} tensors"
        return None if _ext.has_cpp() else f"ddfast._C is unavailable ({_ext.LOAD_ERROR})"
    if backend == "cuda":
        if device_type != "cuda":
            return f"the cuda backend runs CUDA tensors only, got {device_type} tensors"
        if not _ext.has_cpp():
            return f"ddfast._C is unavailable ({_ext.LOAD_ERROR})"
        if not _ext.has_cuda_kernels():
            return ("ddfast._C was built without CUDA kernels (rebuild with a CUDA build of torch and nvcc, "
                    "or DDFAST_BUILD_CUDA=1)")
        return None
    if backend == "triton":
        error = triton_import_error()
        if error:
            return error
        if device_type == "cuda" or (device_type == "cpu" and triton_interpreting()):
            return None
        return f"Triton runs CUDA tensors (CPU tensors only under TRITON_INTERPRET=1), got {device_type} tensors"
    raise ValueError(f"unknown backend {backend!r}")


@functools.lru_cache(maxsize=1)
def validated_entries() -> tuple[dict, ...]:
    try:
        return tuple(json.loads(VALIDATED_PATH.read_text()).get("kernels", []))
    except (OSError, ValueError):
        return ()


def current_source_hash(op: str, backend: str) -> str | None:
    if backend == "triton":
        return triton_source_hash(op)
    if backend == "cuda":
        return _ext.BUILD_INFO.get("cuda_source_hashes", {}).get(op)
    return None


@functools.lru_cache(maxsize=None)
def validation_record(op: str, backend: str) -> dict | None:
    """The gpu_validated.json entry for this op/backend and the source in use, if any."""
    source = current_source_hash(op, backend)
    for entry in validated_entries():
        if entry.get("op") == op and entry.get("backend") == backend and entry.get("source_hash") == source:
            return entry
    return None


class OpDispatch:
    """The backends of one op and how ``auto`` chooses among them.

    ``impls`` maps backend name to the implementation; ``dtypes`` optionally limits a backend to some
    dtypes; ``cuda_preference`` is the order ``auto`` tries GPU backends in (from bench results, as
    the op's docstring says).
    """

    def __init__(self, op: str, impls: dict[str, Callable], cuda_preference: tuple[str, ...],
                 dtypes: dict[str, frozenset] | None = None):
        self.op = op
        self.impls = impls
        self.cuda_preference = cuda_preference
        self.dtypes = dtypes or {}
        self._warned = False
        _REGISTRY.append(self)

    def _supports(self, backend: str, dtype: torch.dtype) -> bool:
        allowed = self.dtypes.get(backend)
        return allowed is None or dtype in allowed

    def resolve(self, device: torch.device, dtype: torch.dtype,
                requested: tuple[str, str] | None = None) -> tuple[str, Callable]:
        """(backend name, implementation) for this call; ``requested`` overrides the caller's
        context (a backward pass runs the backend its forward resolved, since autograd runs CUDA
        backward passes on its own threads, where use_backend() does not reach). The name joins
        :func:`backends_ran`."""
        name = self._choose(device, dtype, requested or requested_backend())
        _RAN.setdefault(self.op, set()).add(name)
        return name, self.impls[name]

    def _choose(self, device: torch.device, dtype: torch.dtype, requested: tuple[str, str]) -> str:
        name, source = requested
        if name != "auto":
            if name not in self.impls:
                raise BackendUnavailableError(f"{self.op}: backend {name!r} (requested by {source}) is not "
                                              f"implemented for this op; it has {sorted(self.impls)}")
            reason = availability(name, device.type)
            if reason is None and not self._supports(name, dtype):
                reason = f"it does not support {dtype}"
            if reason is not None:
                raise BackendUnavailableError(f"{self.op}: backend {name!r} (requested by {source}) cannot run: {reason}")
            return name
        if device.type == "cpu":
            if "cpp" in self.impls and _ext.has_cpp() and self._supports("cpp", dtype):
                return "cpp"
        elif device.type == "cuda":
            for candidate in self.cuda_preference:
                if (candidate in self.impls and availability(candidate, "cuda") is None
                        and self._supports(candidate, dtype) and validation_record(self.op, candidate)):
                    return candidate
            if not self._warned:
                self._warned = True
                warnings.warn(f"ddfast: no GPU kernel of {self.op} is recorded as validated on a GPU for this "
                              f"source (ddfast/gpu_validated.json); running the reference on CUDA. Run "
                              f"scripts/gpu_validate.sh, or force one with ddfast.use_backend().", stacklevel=4)
        return "reference"
