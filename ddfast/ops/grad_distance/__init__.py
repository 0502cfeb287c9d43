"""Per-layer gradient distance of gradient matching (docs/semantics.md#grad_distance)."""

from __future__ import annotations

from typing import Sequence

import torch

from .._validate import choice, float_dtype, number_list, tensor_list
from ._op import DISPATCH, OP
from .plan import METRICS

__all__ = ["grad_distance", "DISPATCH"]


def grad_distance(g_syn: Sequence[torch.Tensor], g_real: Sequence[torch.Tensor], metric: str = "ours",
                  weights: Sequence[float] | None = None, batched: bool = False) -> torch.Tensor:
    """Distance between the per-parameter gradients of a synthetic and a real batch.

    Reproduces DC's ``match_loss``/``distance_wb`` (VICO-UoE/DatasetCondensation):

    * ``"ours"``: for each tensor with ndim >= 2, rows [out, in*kh*kw] (conv), [C, h*w] (3-D) or the
      matrix itself; sum over rows of 1 - <gr, gs> / (||gr|| ||gs|| + 1e-6). 1-D tensors (biases,
      norm parameters) contribute exactly 0, as in DC.
    * ``"mse"``: sum of (gs - gr)^2 over all tensors (a sum, not a mean).
    * ``"cos"``: 1 - <gr, gs> / (||gr|| ||gs|| + 1e-6) over the concatenation of all tensors.
    * ``"l1"``: sum of |gs - gr| over all tensors (IDC's variant).

    Args:
        g_syn, g_real: equal-length lists of tensors of pairwise equal shapes, one per parameter.
        weights: optional per-tensor multipliers (0 skips a tensor; under ``"cos"`` only 0 or 1).
        batched: every tensor carries a leading class dimension K; the result is then a length-K
            vector, one distance per class, all computed in one fused call.

    Returns the distance, a 0-d tensor or [K] when batched, in the inputs' dtype, except fp32 for
    fp16/bf16 inputs (accumulated in fp32; the sums overflow fp16). Gradients come in the inputs'
    dtype. Differentiable w.r.t. both lists. Backends: ``auto`` uses the C++ kernels on
    CPU; on CUDA the CUDA kernels (one launch over a pointer table for all tensors and classes),
    then Triton, whichever is recorded as validated on a GPU (see ``ddfast info``).
    """
    g_syn = tensor_list(g_syn, "g_syn")
    g_real = tensor_list(g_real, "g_real")
    if not g_syn:
        raise ValueError("g_syn is empty: grad_distance needs at least one gradient tensor")
    if len(g_syn) != len(g_real):
        raise ValueError(f"g_syn has {len(g_syn)} tensors but g_real has {len(g_real)}")
    choice(metric, METRICS, "metric")
    ref = g_syn[0]
    float_dtype(ref, "g_syn[0]")
    for name, tensors in (("g_syn", g_syn), ("g_real", g_real)):
        for i, t in enumerate(tensors):
            if t.dtype != ref.dtype:
                raise TypeError(f"{name}[{i}] has dtype {t.dtype} but g_syn[0] has {ref.dtype}")
            if t.device != ref.device:
                raise ValueError(f"{name}[{i}] is on {t.device} but g_syn[0] is on {ref.device}")
    for i, (gs, gr) in enumerate(zip(g_syn, g_real)):
        if gs.shape != gr.shape:
            raise ValueError(f"g_syn[{i}] has shape {tuple(gs.shape)} but g_real[{i}] has shape {tuple(gr.shape)}")
    if batched:
        for i, t in enumerate(g_syn):
            if t.dim() == 0:
                raise ValueError(f"batched=True needs a leading class dimension, but g_syn[{i}] is 0-d")
            if t.shape[0] != ref.shape[0]:
                raise ValueError(f"batched=True: g_syn[{i}] has {t.shape[0]} classes (leading dimension) but "
                                 f"g_syn[0] has {ref.shape[0]}")
    weights = [1.0] * len(g_syn) if weights is None else number_list(weights, len(g_syn), "weights")
    if metric == "cos":
        for i, w in enumerate(weights):
            if w not in (0.0, 1.0):
                raise ValueError(f"weights[{i}] is {w}; under metric 'cos' a weight is 0 (drop the tensor) or 1")
    g_syn = [t.contiguous() for t in g_syn]
    g_real = [t.contiguous() for t in g_real]
    # The custom op under torch.compile, else the eager autograd.Function (ddfast.ops._registry).
    return OP(g_syn, g_real, metric, weights, batched)
