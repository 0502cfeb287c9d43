"""ddfast: fused, autograd-ready kernels for the hot paths of dataset distillation."""

from __future__ import annotations

__version__ = "0.1.0"

from .backends import BackendUnavailableError, use_backend
from .compiled import use_autocast, use_compile
from .data import load_dataset
from .errors import UsageError
from .eval import evaluate
from .experts import ExpertHooks, load_buffer, save_buffer, train_experts
from .ops.adjoint_step import adjoint_step
from .ops.bn_stat_loss import BNStatHooks, bn_stat_loss
from .ops.class_mean_distance import class_mean_distance
from .ops.dsa import DSAConfig, DSAParams, dsa, dsa_augment, dsa_sample
from .ops.grad_distance import grad_distance
from .ops.kmeans import KMeansResult, kmeans, nearest_to_centroids
from .ops.mmd import class_mmd, mmd
from .ops.param_match_loss import param_match_loss
from .ops.per_class_gradients import per_class_gradients
from .ops.sgd_step import sgd_step
from .ops.unroll import FlatModel, unroll
from .synthetic import SyntheticSet

__all__ = ["BackendUnavailableError", "BNStatHooks", "DSAConfig", "DSAParams", "ExpertHooks", "FlatModel",
           "KMeansResult", "SyntheticSet", "UsageError", "adjoint_step", "bn_stat_loss", "class_mean_distance",
           "class_mmd", "dsa", "dsa_augment", "dsa_sample", "evaluate", "grad_distance", "kmeans", "load_buffer",
           "load_dataset", "mmd", "nearest_to_centroids", "param_match_loss", "per_class_gradients", "save_buffer",
           "sgd_step", "train_experts", "unroll", "use_autocast", "use_backend", "use_compile", "__version__"]
