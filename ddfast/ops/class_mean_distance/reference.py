"""Pure-PyTorch class_mean_distance: THE specification (docs/semantics.md#class_mean_distance).

DM's matching loss (Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023;
VICO-UoE/DatasetCondensation main_DM.py): for every class c,
``loss_c = || mean_{i: y_real=c} f_real_i - mean_{j: y_syn=c} f_syn_j ||^2``.

A class contributes only when it has rows on both sides; otherwise its loss and its gradients are
0 (the public function has already raised for a class present on one side only, unless the caller
asked to ignore it). Sums, means and the distance are in the accumulate dtype (fp32 for fp16/bf16/
fp32 inputs, fp64 for fp64).

Backend contract (shared by cpp and triton):

* ``forward(f_syn, y_syn, f_real, y_real, num_classes, per_class)`` returns ``(out, diff, scale)``:
  out is [K] (per_class) or 0-d (the sum over classes in class order); diff [K, D] =
  mean_real - mean_syn (0 for a class that does not contribute); scale [2, K] = (1 / n_syn_c,
  1 / n_real_c), 0 for a class that does not contribute. diff and scale are saved for backward.
* ``backward(grad_out, y_syn, y_real, diff, scale, dtype, need_syn, need_real)`` returns
  ``(d_syn, d_real)``: d f_syn_j = -2 g_c scale[0, c] diff_c and d f_real_i = 2 g_c scale[1, c] diff_c
  with c the row's label and g_c = grad_out (0-d) or grad_out[c] ([K]); in ``dtype``; an empty
  tensor where not needed.
"""

from __future__ import annotations

import torch

from .._dtypes import accumulate_dtype


def forward(f_syn, y_syn, f_real, y_real, num_classes: int, per_class: bool):
    acc = accumulate_dtype(f_syn.dtype)
    dim = f_syn.shape[1]
    n_syn = torch.bincount(y_syn, minlength=num_classes).to(acc)
    n_real = torch.bincount(y_real, minlength=num_classes).to(acc)
    present = (n_syn > 0) & (n_real > 0)
    sum_syn = torch.zeros(num_classes, dim, dtype=acc, device=f_syn.device).index_add_(0, y_syn, f_syn.to(acc))
    sum_real = torch.zeros(num_classes, dim, dtype=acc, device=f_real.device).index_add_(0, y_real, f_real.to(acc))
    inv_syn = torch.where(present, 1.0 / n_syn.clamp(min=1), 0.0)
    inv_real = torch.where(present, 1.0 / n_real.clamp(min=1), 0.0)
    # where(): a class that does not contribute gives exactly 0, even if its rows hold inf or NaN.
    diff = torch.where(present[:, None], sum_real * inv_real[:, None] - sum_syn * inv_syn[:, None], 0.0)
    loss = (diff * diff).sum(1)
    return (loss if per_class else loss.sum()), diff, torch.stack([inv_syn, inv_real])


def backward(grad_out, y_syn, y_real, diff, scale, dtype: torch.dtype, need_syn: bool, need_real: bool):
    g = grad_out.to(diff.dtype).expand(diff.shape[0])
    coef_syn, coef_real = -2.0 * g * scale[0], 2.0 * g * scale[1]
    d_syn = (coef_syn[y_syn, None] * diff[y_syn]).to(dtype) if need_syn else diff.new_empty(0, dtype=dtype)
    d_real = (coef_real[y_real, None] * diff[y_real]).to(dtype) if need_real else diff.new_empty(0, dtype=dtype)
    return d_syn, d_real
