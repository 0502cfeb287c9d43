"""Reference implementations of the DD methods on ddfast's public ops (docs/methods.md).

Each method module has a config dataclass with the paper's defaults and ``distill(data, config, ...)``
returning a :class:`ddfast.SyntheticSet`. :data:`METHODS` maps the CLI's method names to them, and
:data:`DATASET_DEFAULTS` holds the per-dataset settings that differ from the papers' CIFAR defaults.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Callable

from ..usage import SETTING_MEANINGS, check_settings
from . import ast, dc, delt, dm, dream, lcs_gm, mtt, seqmatch, sre2l
# What the runner uses to drive the methods: checkpoints, seeds, labels, DC's per-image augmentation.
from ._augment import DEFAULT_STRATEGY, per_sample
from ._common import Checkpointing, class_labels, derive_seed, read_checkpoint


@dataclass(frozen=True)
class Method:
    config: type
    distill: Callable
    fixed: dict  # settings that define the method (DSA is DC with dsa=True)
    needs_buffer: bool = False
    needs_teacher: bool = False  # SRe2L/DELT: recover from a trained teacher, evaluate by the KD protocol
    check: Callable | None = None  # check(config, data): the settings' errors, before any costly set-up


METHODS = {
    "dc": Method(dc.DCConfig, dc.distill, {"dsa": False}),
    "dsa": Method(dc.DCConfig, dc.distill, {"dsa": True}),
    "dm": Method(dm.DMConfig, dm.distill, {}),
    "mtt": Method(mtt.MTTConfig, mtt.distill, {}, needs_buffer=True),
    "ast": Method(ast.ASTConfig, ast.distill, {}, needs_buffer=True),
    "seqmatch": Method(seqmatch.SeqMatchConfig, seqmatch.distill, {}, needs_buffer=True),
    "lcs_gm": Method(lcs_gm.LCSGMConfig, lcs_gm.distill, {}),
    "dream": Method(dream.DREAMConfig, dream.distill, {}),
    "sre2l": Method(sre2l.SRe2LConfig, sre2l.distill, {}, needs_teacher=True, check=sre2l.check_settings),
    "delt": Method(delt.DELTConfig, delt.distill, {}, needs_teacher=True, check=delt.check_settings),
}

# How the runner trains a teacher for SRe2L/DELT where none is given (TeacherRecipe's defaults otherwise).
TEACHER_DEFAULTS = {
    "digits": {"model": "ConvNetBN", "epochs": 50},
}

# Settings for the embedded digits data (16x16x1, about 144 training images per class), chosen so the
# quick start and `make results` run in minutes on 2 CPU cores; keys (method, dataset) apply to every
# ipc, (method, dataset, ipc) on top. Everything else keeps the papers' defaults.
DATASET_DEFAULTS = {
    ("dc", "digits"): {"iterations": 100, "batch_real": 32},
    ("dc", "digits", 10): {"iterations": 20, "inner_loop": 10},
    ("dsa", "digits"): {"iterations": 100, "batch_real": 32},
    ("dsa", "digits", 10): {"iterations": 20, "inner_loop": 10},
    ("dm", "digits"): {"iterations": 200, "batch_real": 64},
    ("mtt", "digits"): {"iterations": 200, "syn_steps": 20, "max_start_epoch": 5, "lr_img": 100.0},
    ("mtt", "digits", 10): {"iterations": 100},
    ("mtt", "cifar10", 1): {"syn_steps": 50, "max_start_epoch": 2, "lr_lr": 1e-7},  # MTT's README table
    ("mtt", "cifar10", 50): {"syn_steps": 30, "max_start_epoch": 40},
    # AST's student momentum makes each inner step ~10x longer: on the short digits trajectories lr 0.01 and
    # lr_lr 1e-5 (MTT's digits values) diverged within 3 iterations; 0.001 / 1e-7 did not
    ("ast", "digits"): {"iterations": 200, "syn_steps": 20, "max_start_epoch": 5, "lr_img": 100.0,
                        "lr_teacher": 0.001, "lr_lr": 1e-7},
    ("ast", "digits", 10): {"iterations": 100},
    # 15-epoch digits buffers as MTT's; K = 2 from IPC 2 on (IPC 1 cannot be split: SeqMatch is MTT there)
    ("seqmatch", "digits"): {"iterations": 100, "syn_steps": 20, "lr_img": 100.0, "lr_teacher": 0.01,
                             "num_subsets": 2, "intervals": ((0, 7), (0, 7)), "experts": 5, "buffer_epochs": 10,
                             "pretrain_epochs": 300},
    ("seqmatch", "digits", 1): {"iterations": 200, "num_subsets": 1, "intervals": ((0, 7),)},
    ("lcs_gm", "digits"): {"iterations": 100, "batch_real": 32},
    ("dream", "digits"): {"iterations": 10, "inner_steps": 10, "batch_real": 32, "net_samples": 256},
    # each image's share of the class-mean and gradient terms shrinks with ipc: at IPC 10 a 10x lr keeps the
    # per-image step of IPC 1 (lr 0.005 left the digits IPC 10 set below the random real subset)
    ("dream", "digits", 10): {"lr_img": 0.05},
    ("dream", "cifar10"): {"factor": 2},  # DREAM's run.sh: condense(_improve).py --reproduce -d cifar10 -f 2
    # SRe2L's CIFAR recover length (1000) and DELT's 8 rounds (ImageNet: 4000 / 500); jitter scaled to 16 px
    ("sre2l", "digits"): {"iterations": 1000, "jitter": 2},
    ("delt", "digits"): {"iterations": 1000, "round_iterations": 125},
    # Fashion-MNIST (28x28x1; ConvNet pads its first conv by 3, as DC's networks.py does for 28x28 grayscale): the
    # papers' CIFAR settings hold for DC, DSA and DM (DC's main.py and main_DM.py have no per-dataset values);
    # DC's Table 1 (its README: main.py --dataset FashionMNIST without --init) starts from noise, the parser
    # default, where DSA's and DM's README commands pass --init real
    ("dc", "fashion_mnist"): {"init": "noise"},
}


def teacher_recipe(dataset: str, **overrides):
    """The :class:`sre2l.TeacherRecipe` for ``dataset`` (its :data:`TEACHER_DEFAULTS`), then ``overrides`` (None
    values ignored)."""
    settings = {**TEACHER_DEFAULTS.get(dataset, {}), **{k: v for k, v in overrides.items() if v is not None}}
    return replace(sre2l.TeacherRecipe(), **settings)


def make_config(method: str, dataset: str, **overrides):
    """The config of ``method`` with its dataset (and dataset + ipc) defaults, then ``overrides`` (None values
    ignored; typed and checked by :func:`ddfast.usage.check_settings`, so strings parse as the field's type)."""
    overrides = check_settings(method, {k: v for k, v in overrides.items() if v is not None})
    spec = METHODS[method]
    ipc = overrides.get("ipc", spec.config().ipc)
    settings = {**DATASET_DEFAULTS.get((method, dataset), {}), **DATASET_DEFAULTS.get((method, dataset, ipc), {}),
                **overrides}
    return replace(spec.config(), **{**settings, **spec.fixed})


def setting_meanings(config_type: type) -> dict[str, str]:
    """One line per field of a config dataclass: its :data:`ddfast.usage.SETTING_MEANINGS` entry and its trailing
    ``# comment`` in the class source (base classes included), where it has them."""
    comments = {}
    for cls in reversed(config_type.__mro__):
        if not is_dataclass(cls):
            continue
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):  # no source shipped
            continue
        comments.update(re.findall(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", source, re.MULTILINE))
    return {f.name: "; ".join(filter(None, (SETTING_MEANINGS.get(f.name), comments.get(f.name))))
            for f in fields(config_type)}


__all__ = ["DATASET_DEFAULTS", "METHODS", "Method", "TEACHER_DEFAULTS", "ast", "dc", "delt", "dm", "dream", "lcs_gm",
           "make_config", "mtt", "seqmatch", "setting_meanings", "sre2l", "teacher_recipe"]
