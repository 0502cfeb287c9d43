"""Compiled networks: ``torch.compile`` (Inductor) of the network calls the methods and evaluation repeat.

The fused ops make the matching losses cheap; what is left of a method's iteration is the network
(convolutions): the real-image embedding, the synthetic set's forward and backward, the network trained on
the synthetic set, the evaluation networks' training and test passes. Each of those call sites wraps its
network call in a :class:`CompiledCall` with a *path* name (:data:`PATHS`). Inductor fuses the
normalisation, activation and pooling around the convolutions; on a 2-core Xeon that made ConvNet-3's
real-image embedding 1.7x and a training step 1.6x faster (bench/bench_compile.py), after 5-20 s of
compilation per graph.

The setting (``compile``: :data:`MODES`), per run: ``with ddfast.use_compile("on"):``, the environment
variable ``DDFAST_COMPILE`` or the CLI's ``--compile``; default ``auto``.

* ``off``: eager, as before.
* ``on``: every path compiles at its first call.
* ``auto``: a path compiles when the rule shipped for its device type (``ddfast/compile_rules.json``, derived
  from bench/results by bench/bench_compile.py) says it is faster there *and* the run is long enough to pay
  for it: the first call runs eagerly and is timed, and the path compiles only if
  ``(calls - 1) x t_eager x (1 - 1 / speedup) > compile_seconds`` for the rule's measured speedup and
  compilation time. A device type or path without a measured rule stays eager.

Double backward (``create_graph`` through a compiled backward) is not supported by Inductor, so call sites
whose output is differentiated twice (DC/DSA's synthetic gradients, the unrolled inner loops) stay eager.
A compilation that fails, or a torch without a working ``torch.compile``, falls back to eager with one
warning per path, never an error. Graphs are specialised to shapes (``dynamic=False``): a handful of
distinct batch shapes compile a handful of graphs.

bf16 autocast (``autocast``: :data:`AUTOCAST`; ``with ddfast.use_autocast("bf16"):``, ``DDFAST_AUTOCAST`` or the
CLI's ``--autocast``; default ``off``) runs the same paths under ``torch.autocast(dtype=torch.bfloat16)`` and
returns their outputs in fp32, so the fused ops after them see fp32. CPUs with AMX and GPUs with tensor
cores run bf16 convolutions several times faster (compiled ConvNet-3 embedding on the 2-core Xeon: 4x the
eager fp32 one), at about 0.5% relative error in the features; it changes results beyond reassociation, so
it is off unless asked for.

Compiled and eager results agree to floating-point reassociation (Inductor reorders sums); a seeded run
is reproducible with the same setting, not bit-identical across settings. :func:`compile_report` gives, per
path, whether it compiled, the calls and the seconds spent compiling, which the runner stores in
``results.json`` apart from the iteration time.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import torch

MODES = ("auto", "on", "off")
PATHS = ("embed", "embed_grad", "train_step", "eval_forward", "class_gradients")
RULES_PATH = Path(__file__).resolve().parent / "compile_rules.json"
MIN_SPEEDUP = 1.05  # a rule below this is not worth the compilation anywhere
AUTOCAST = ("off", "bf16")

class _Setting:
    """A per-run choice among ``choices``: a context variable (set by a ``use_*`` block), else the environment
    variable ``env``, else ``default``; values are checked where they come in, naming their source."""

    def __init__(self, name: str, choices: tuple, env: str, default: str):
        self.name, self.choices, self.env, self.default = name, choices, env, default
        self.var: contextvars.ContextVar[str | None] = contextvars.ContextVar(f"ddfast_{name}", default=None)

    def check(self, value, source: str) -> str:
        if value not in self.choices:
            raise ValueError(f"{source} must be one of {self.choices}, got {value!r}")
        return value

    def get(self) -> str:
        forced = self.var.get()
        if forced is not None:
            return forced
        env = os.environ.get(self.env, "").strip()
        return self.check(env, self.env) if env else self.default

    @contextlib.contextmanager
    def use(self, value: str) -> Iterator[None]:
        token = self.var.set(self.check(value, self.name))
        try:
            yield
        finally:
            self.var.reset(token)


_compile = _Setting("compile", MODES, "DDFAST_COMPILE", "auto")
_autocast = _Setting("autocast", AUTOCAST, "DDFAST_AUTOCAST", "off")
_report: dict[str, dict] = {}
_report_lock = threading.Lock()


def compile_mode() -> str:
    """The compile setting in force: :func:`use_compile`'s, else ``DDFAST_COMPILE``'s, else ``"auto"``."""
    return _compile.get()


def use_compile(mode: str):
    """Run the block with compile setting ``mode`` (``"auto"``, ``"on"`` or ``"off"``)."""
    return _compile.use(mode)


def autocast_mode() -> str:
    """The autocast setting in force: :func:`use_autocast`'s, else ``DDFAST_AUTOCAST``'s, else ``"off"``."""
    return _autocast.get()


def use_autocast(mode: str):
    """Run the network paths of the block under bf16 autocast (``"bf16"``) or in full precision (``"off"``)."""
    return _autocast.use(mode)


@functools.lru_cache(maxsize=1)
def rules() -> dict:
    """The shipped rules: device type -> path -> {"speedup", "compile_s", ...} (empty when the file is absent)."""
    try:
        return json.loads(RULES_PATH.read_text())["rules"]
    except FileNotFoundError:
        return {}


def worth_compiling(path: str, device_type: str, calls: int, eager_seconds: float) -> tuple[bool, str]:
    """``auto``'s decision for ``path`` on ``device_type``: the rule's speedup and compilation time against the
    time the remaining ``calls - 1`` calls would save at ``eager_seconds`` each. Returns (decision, reason)."""
    rule = rules().get(device_type, {}).get(path)
    if rule is None:
        return False, f"no measured rule for {path} on {device_type}"
    speedup, compile_s = float(rule["speedup"]), float(rule["compile_s"])
    if speedup < MIN_SPEEDUP:
        return False, f"measured speedup {speedup:.2f}x on {device_type} is below {MIN_SPEEDUP}x"
    saving = max(calls - 1, 0) * eager_seconds * (1.0 - 1.0 / speedup)
    if saving <= compile_s:
        return False, (f"expected saving {saving:.1f} s ({calls} calls of {1000 * eager_seconds:.1f} ms at "
                       f"{speedup:.2f}x) does not pay for {compile_s:.0f} s of compilation")
    return True, f"expected saving {saving:.1f} s at {speedup:.2f}x for {compile_s:.0f} s of compilation"


def compile_report(reset: bool = False) -> dict[str, dict]:
    """Per path: ``compiled`` (bool), ``calls``, ``compile_seconds``, ``reason``. ``reset`` clears it (the
    runner does at the start of every run)."""
    with _report_lock:
        out = {path: dict(entry) for path, entry in _report.items()}
        if reset:
            _report.clear()
    return out


def _note(path: str, **update) -> dict:
    with _report_lock:
        entry = _report.setdefault(path, {"compiled": False, "calls": 0, "compile_seconds": 0.0, "reason": ""})
        for key, value in update.items():
            entry[key] = entry[key] + value if key in ("calls", "compile_seconds") else value
        return entry


def _device_of(args) -> torch.device:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device
    return torch.device("cpu")


def forward(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``net(x)``: the function compiled for the ``train_step`` and ``eval_forward`` paths."""
    return net(x)


def embed(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``net.embed(x)``: the function compiled for the ``embed`` and ``embed_grad`` paths."""
    return net.embed(x)


def _in_bf16(fn: Callable) -> Callable:
    """``fn`` under bf16 autocast on its inputs' device, its tensor output returned in fp32."""
    @functools.wraps(fn)
    def run(*args):
        with torch.autocast(_device_of(args).type, dtype=torch.bfloat16):
            out = fn(*args)
        return out.float() if isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16 else out
    return run


class CompiledCall:
    """``fn(*args)``, compiled or eager according to the compile setting in force when it was made.

    ``path`` names the call site's kind (:data:`PATHS`, the key of the shipped rules); ``calls`` is how often
    the caller expects to call it in this run (``auto`` weighs the compilation against it). ``fn`` should take
    the network as its first argument rather than close over it: the compiled code then serves every network
    of the same class (a fresh network per iteration does not recompile), and once a path has compiled for a
    network class on a device type, later calls in the process reuse it at no compilation cost, so ``auto``
    compiles them without weighing."""

    _failed: set[str] = set()  # paths whose compilation failed in this process: eager from then on
    _paid: set[tuple] = set()  # (path, device type, network class) compiled before in this process

    def __init__(self, fn: Callable, path: str, calls: int = 1):
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        self.path, self.calls = path, max(int(calls), 1)
        self.fn = _in_bf16(fn) if autocast_mode() == "bf16" else fn
        self.mode = compile_mode()
        self._compiled: Callable | None = None
        self._first_key: tuple | None = None  # set while the compiled code has not run yet
        self._decided = self.mode == "off" or path in CompiledCall._failed
        if self._decided:
            _note(path, reason="compile off" if self.mode == "off" else "compilation failed earlier")

    def __call__(self, *args):
        if self._decided:
            return self._run(args)
        self._decided = True
        key = (self.path, _device_of(args).type, type(args[0]).__qualname__ if args else None)
        if self.mode == "on" or key in CompiledCall._paid:
            self._start_compiling(key, "compile on" if self.mode == "on" else "compiled earlier in this process")
            return self._run(args)
        start = time.perf_counter()  # auto: one eager call, timed, then the decision
        out = self.fn(*args)
        if isinstance(out, torch.Tensor) and out.device.type == "cuda":
            torch.cuda.synchronize(out.device)
        decision, reason = worth_compiling(self.path, key[1], self.calls, time.perf_counter() - start)
        _note(self.path, calls=1, reason=reason)
        if decision:
            self._start_compiling(key, reason)
        return out

    def _start_compiling(self, key: tuple, reason: str) -> None:
        self._compiled, self._first_key = torch.compile(self.fn, dynamic=False), key
        _note(self.path, compiled=True, reason=reason)

    def _run(self, args):
        _note(self.path, calls=1)
        if self._compiled is None:
            return self.fn(*args)
        if self._first_key is None:
            return self._compiled(*args)
        start = time.perf_counter()  # the first compiled call: the compilation (its run is a small part)
        try:
            out = self._compiled(*args)
        except Exception as error:  # noqa: BLE001 - any compiler failure falls back to eager, with one warning
            CompiledCall._failed.add(self.path)
            self._compiled = None
            message = str(error).splitlines()[0] if str(error) else ""
            _note(self.path, compiled=False, reason=f"compilation failed: {type(error).__name__}: {message}"[:200])
            warnings.warn(f"ddfast: torch.compile of the {self.path} path failed ({type(error).__name__}: "
                          f"{message}); running it eagerly", stacklevel=3)
            return self.fn(*args)
        _note(self.path, compile_seconds=time.perf_counter() - start)
        CompiledCall._paid.add(self._first_key)
        self._first_key = None
        return out
