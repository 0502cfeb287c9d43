"""What the run arguments and the method settings accept, as two tables: :data:`RUN_ARGUMENTS` (the arguments
of ``distill_run``, ``eval_run`` and ``buffer_run``, named by their command-line flags) and :data:`SETTING_RULES`
(the ranges of the methods' config fields, by field name: a name means the same in every method). A value's
type comes from the table, or for a setting from its config field's annotation; a ``--set`` string is parsed
as that type. Every check raises :class:`ddfast.UsageError` naming the flag or key, what it accepts and what it
got; the runner applies them before it loads data or writes a folder."""

from __future__ import annotations

import ast
import difflib
import importlib
import math
import types
import typing
from dataclasses import dataclass, fields, replace

import torch

from .backends import BACKENDS
from .errors import UsageError

KINDS = {"int": "an integer", "float": "a float", "number": "a number (an integer stays one)", "bool": "true or false", "str": "a string", "tuple": "a tuple",
         "device": "a torch device (cpu, cuda, cuda:1, ...)"}
_BOOLS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _literal(text: str):
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _tupled(value):
    return tuple(_tupled(v) for v in value) if isinstance(value, (list, tuple)) else value


def _convert(kind: str, value, from_text: bool):
    """``value`` as ``kind``; raises TypeError when it is not one. Text (a ``--set`` value) is parsed first."""
    if kind == "str":
        if not isinstance(value, str):
            raise TypeError
        literal = _literal(value) if from_text else value
        return literal if isinstance(literal, str) else value  # a quoted 'name', else the text as it is
    if kind == "bool":
        if from_text and value.strip().lower() in _BOOLS:
            return _BOOLS[value.strip().lower()]
        if isinstance(value, bool):
            return value
        raise TypeError
    if kind == "device":
        try:
            torch.device(value)
        except (RuntimeError, TypeError):
            raise TypeError from None
        return value
    value = _literal(value) if from_text else value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind in ("float", "number") and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value):
        return value if kind == "number" and isinstance(value, int) else float(value)
    if kind == "tuple" and isinstance(value, (list, tuple)):
        return _tupled(value)
    raise TypeError


@dataclass(frozen=True)
class Accepts:
    """The values one argument or setting accepts: ``kind`` (a key of :data:`KINDS`), None too when ``optional``,
    numbers within ``low``/``high`` (excluded where ``*_open``), strings among ``choices``, or among the names
    in ``choices_from`` (module, attribute), read when checked. ``each``: a list whose items are checked so."""

    kind: str = "str"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    choices_from: tuple[str, str] | None = None
    optional: bool = False
    each: bool = False

    def options(self) -> tuple | None:
        if self.choices_from is None:
            return self.choices
        module, attribute = self.choices_from
        return tuple(getattr(importlib.import_module(module), attribute))

    def describe(self) -> str:
        if self.options() is not None:
            text = f"one of {list(self.options())}"
        else:
            text = KINDS[self.kind]
            if self.low is not None and self.high is not None:
                left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
                text += f" in {left}{self.low:g}, {self.high:g}{right}"
            elif self.low is not None:
                text += f" {'>' if self.low_open else '>='} {self.low:g}"
        if self.each:
            text = f"a list of {text}"
        return text

    def check(self, name: str, value, from_text: bool = False):
        """``value`` typed (parsed first when ``from_text``); raises UsageError naming ``name`` otherwise."""
        if self.optional and (value is None or (from_text and value.strip() in ("None", "none"))):
            return None
        if self.each:
            items = value.split(",") if isinstance(value, str) else value
            return [replace(self, each=False).check(name, item, from_text) for item in items]
        try:
            typed = _convert(self.kind, value, from_text)
        except TypeError:
            got = repr(value) if from_text else f"{value!r} ({type(value).__name__})"
            raise UsageError(name, f"{name}: expected {KINDS[self.kind]}, got {got}") from None
        if not self._within(typed):
            options = self.options() or ()
            hint = did_you_mean(typed, options) if isinstance(typed, str) else ""
            raise UsageError(name, f"{name} must be {self.describe()}, got {typed!r}{hint}")
        return typed

    def _within(self, value) -> bool:
        options = self.options()
        if options is not None:
            return value in options
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or (value < self.high or (not self.high_open and value == self.high))


COUNT = Accepts("int", low=1)
NONNEGATIVE_INT = Accepts("int", low=0)
POSITIVE = Accepts("float", low=0, low_open=True)
NONNEGATIVE = Accepts("float", low=0)
FRACTION = Accepts("float", low=0, high=1)
NETWORK = Accepts(choices_from=("ddfast.models", "NETWORKS"))

# Run arguments: argument name -> (command-line flag, what it accepts).
RUN_ARGUMENTS = {
    "method": ("--method", Accepts(choices_from=("ddfast.methods", "METHODS"))),
    "ipc": ("--ipc", COUNT),
    "iterations": ("--iterations", replace(COUNT, optional=True)),
    "seed": ("--seed", NONNEGATIVE_INT),
    "device": ("--device", Accepts("device", optional=True)),
    "backend": ("--backend", Accepts(choices=("auto",) + BACKENDS)),
    "eval_preset": ("--eval-preset", Accepts(choices_from=("ddfast.eval", "PRESETS"))),
    "eval_model": ("--eval-model", NETWORK),
    "eval_runs": ("--eval-runs", replace(COUNT, optional=True)),
    "eval_epochs": ("--eval-epochs", replace(COUNT, optional=True)),
    "checkpoint_every": ("--checkpoint-every", COUNT),
    "eval_every": ("--eval-every", NONNEGATIVE_INT),
    "compile": ("--compile", Accepts(choices_from=("ddfast.compiled", "MODES"))),
    "autocast": ("--autocast", Accepts(choices_from=("ddfast.compiled", "AUTOCAST"))),
    "source": ("--source", Accepts(choices=("ddfast", "dc", "mtt"))),
    "models": ("--models", replace(NETWORK, each=True)),
    "preset": ("--preset", Accepts(choices_from=("ddfast.eval", "PRESETS"))),
    "runs": ("--runs", replace(COUNT, optional=True)),
    "epochs": ("--epochs", replace(COUNT, optional=True)),
    "lr": ("--lr", replace(POSITIVE, optional=True)),
    "temperature": ("--temperature", POSITIVE),
    "experts": ("--experts", COUNT),
    "batch_size": ("--batch-size", COUNT),
    "model": ("--model", NETWORK),
    "recipe": ("--recipe", Accepts(choices_from=("ddfast.runner", "BUFFER_RECIPES"))),
}

# Method settings: config field name -> its range or choices (the type is the field's annotation).
SETTING_RULES = {
    **dict.fromkeys(("ipc", "batch_real", "batch_train", "batch_size", "batch_syn", "outer_loop",
                     "inner_loop", "syn_steps", "expert_epochs", "max_start_epoch", "inner_steps", "interval",
                     "kmeans_iters", "net_samples", "net_batch", "factor", "num_subsets", "experts", "buffer_epochs"),
                    COUNT),
    # iterations 0: the initial set, unchanged (a run's --iterations needs >= 1: it writes the set's checkpoint)
    **dict.fromkeys(("iterations", "seed", "pretrain_epochs", "early_exit_window", "jitter", "round_iterations"),
                    NONNEGATIVE_INT),
    **dict.fromkeys(("lr_img", "lr_net", "lr_lr", "lr_teacher", "lr_teacher_later", "expert_lr", "pretrain_lr", "lr",
                     "temperature"), POSITIVE),
    **dict.fromkeys(("kmeans_tol", "dm_weight", "early_exit_tol", "perturb", "r_bn", "first_bn_multiplier"),
                    NONNEGATIVE),
    **dict.fromkeys(("momentum", "student_momentum", "ema", "milestone"), FRACTION),
    **dict.fromkeys(("beta1", "beta2"), Accepts("float", low=0, high=1, high_open=True)),
    **dict.fromkeys(("min_crop", "max_crop"), Accepts("float", low=0, high=1, low_open=True)),
    # the unroll's memory budget: a fraction of the steps (float, at most 1: the unroll checks) or bytes (int)
    "memory_budget": Accepts(low=0),
    "model": NETWORK,
    "metric": Accepts(choices_from=("ddfast.ops.grad_distance.plan", "METRICS")),
    "strategy": Accepts(choices_from=("ddfast.ops.per_class_gradients", "STRATEGIES")),
    "mode": Accepts(choices_from=("ddfast.ops.unroll.unroll", "MODES")),
    "forward": Accepts(choices_from=("ddfast.methods.dm", "FORWARDS")),
    "shift": Accepts(choices_from=("ddfast.methods.lcs_gm", "SHIFTS")),
    "network": Accepts(choices_from=("ddfast.methods.lcs_gm", "NETWORKS")),
}


def did_you_mean(word: str, options) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options`` to ``word``, or "" when none is close."""
    close = difflib.get_close_matches(word, [str(option) for option in options], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""

# One-line meanings of the settings most methods share (``--show-config``); a field's trailing comment in its config
# class says more where it has one.
SETTING_MEANINGS = {
    "ipc": "synthetic images per class",
    "iterations": "outer iterations (updates of the synthetic set)",
    "lr_img": "learning rate of the synthetic images",
    "momentum": "SGD momentum of the synthetic images",
    "batch_real": "real images per class in each iteration's batch",
    "model": "network the set is matched through",
    "init": "initial images: real (random real images) or noise",
    "dsa_strategy": "DSA augmentation families",
    "syn_steps": "student steps on the synthetic set per iteration",
    "expert_epochs": "expert epochs those steps are matched against",
    "max_start_epoch": "latest expert epoch a start point is drawn from",
    "lr_teacher": "initial learned student learning rate",
    "lr_lr": "learning rate of the learned student learning rate",
    "batch_syn": "synthetic images per student step (None: the whole set)",
    "mode": "unroll mode: adjoint, autograd or tesla",
    "seed": "seed every random draw derives from",
}


def check_run_arguments(**values) -> None:
    """Check run arguments (names of :data:`RUN_ARGUMENTS`) against their entries; raises UsageError."""
    for name, value in values.items():
        flag, accepts = RUN_ARGUMENTS[name]
        accepts.check(flag, value)


def _field_accepts(name: str, annotation) -> Accepts:
    """The field's rule from :data:`SETTING_RULES` with the kind and optionality of its annotation."""
    optional, args = False, [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
    kinds = {(typing.get_origin(a) or a).__name__ for a in args}
    kind = "number" if kinds == {"int", "float"} else (typing.get_origin(args[0]) or args[0]).__name__
    return replace(SETTING_RULES.get(name, Accepts()), kind=kind, optional=optional)


def check_settings(method: str, settings: dict) -> dict:
    """``settings`` of ``method``'s config typed by the config's field annotations and checked against
    :data:`SETTING_RULES`; string values (from ``--set key=value``) are parsed as the field's type. Unknown
    keys, and values other than those the method fixes (DSA's ``dsa``), raise UsageError listing what is valid."""
    from .methods import METHODS

    check_run_arguments(method=method)
    spec = METHODS[method]
    hints = typing.get_type_hints(spec.config)
    names = [f.name for f in fields(spec.config)]
    unknown = sorted(set(settings) - set(names))
    if unknown:
        named = ", ".join(key + did_you_mean(key, names) for key in unknown)
        raise UsageError(f"--set {unknown[0]}", f"--set {named}: method {method!r} has no such "
                                                f"setting; valid keys: {sorted(names)} (defaults: ddfast "
                                                f"distill --method {method} --show-config)")
    typed = {key: _field_accepts(key, hints[key]).check(f"--set {key}", value, from_text=isinstance(value, str))
             for key, value in settings.items()}
    fixed = spec.fixed
    clash = sorted(k for k in fixed if k in typed and typed[k] != fixed[k])
    if clash:
        raise UsageError(f"--set {clash[0]}", f"--set {', '.join(clash)}: method {method!r} fixes "
                                              f"{ {k: fixed[k] for k in clash} }")
    return typed
