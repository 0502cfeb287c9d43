"""Pure-PyTorch grad_distance: THE specification (docs/semantics.md#grad_distance).

DC's ``match_loss`` / ``distance_wb`` (VICO-UoE/DatasetCondensation, utils.py), batched over a
leading class dimension K:

* ``ours``: every tensor with ndim >= 2 is split into rows ([out, in, kh, kw] -> [out, in*kh*kw],
  [C, h, w] -> [C, h*w], 2-D as is); distance = sum over rows of
  1 - <gr, gs> / (||gr|| * ||gs|| + 1e-6); 1-D tensors contribute exactly 0.
* ``mse``: sum over all elements of (gs - gr)^2 (a sum, not a mean).
* ``cos``: 1 - <gr, gs> / (||gr|| * ||gs|| + 1e-6) over the concatenation of all tensors.
* ``l1``: sum over all elements of |gs - gr| (IDC's variant).

Weights multiply each tensor's term (ours, mse, l1); a weight of 0 skips the tensor entirely (also
under ``cos``, where it drops the tensor from the concatenation). fp16/bf16 inputs accumulate in
fp32 and the distance is returned in fp32 (its sums overflow fp16: ConvNet-3's 'mse' is ~6e5).
The backward is the closed-form derivative of the same formulas; the tests check it against
autograd of an independent implementation and against finite differences (gradcheck).
"""

from __future__ import annotations

import torch

from .._dtypes import accumulate_dtype
from .plan import EPS, is_row_tensor, rows_and_cols


def _acc(t: torch.Tensor) -> torch.Tensor:
    return t.to(accumulate_dtype(t.dtype))


def _row_terms(gs: torch.Tensor, gr: torch.Tensor):
    """<gr, gs>, ||gr||, ||gs|| per row; inputs [K, rows, cols]."""
    return (gr * gs).sum(-1), gr.norm(dim=-1), gs.norm(dim=-1)


def forward(g_syn, g_real, metric: str, weights, batched: bool):
    """Returns (distance [K] or [], statistics saved for backward), both in the accumulate dtype."""
    num_classes = g_syn[0].shape[0] if batched else 1
    device = g_syn[0].device
    acc_dtype = _acc(g_syn[0]).dtype
    total = torch.zeros(num_classes, dtype=acc_dtype, device=device)
    stats = torch.zeros(0, dtype=acc_dtype, device=device)
    pairs = [(_acc(gs).reshape(num_classes, -1), _acc(gr).reshape(num_classes, -1), w, gs.shape[batched:])
             for gs, gr, w in zip(g_syn, g_real, weights) if w != 0]
    if metric == "ours":
        row_stats = []
        for gs, gr, w, shape in pairs:
            if not is_row_tensor(shape, w, metric):
                continue  # DC's distance_wb returns 0 for 1-D tensors
            rows, cols = rows_and_cols(shape)
            gs, gr = gs.reshape(num_classes, rows, cols), gr.reshape(num_classes, rows, cols)
            dot, norm_r, norm_s = _row_terms(gs, gr)
            total = total + w * (1 - dot / (norm_r * norm_s + EPS)).sum(-1)
            row_stats.append(torch.stack([dot, norm_r.square(), norm_s.square()], dim=-1))
        if row_stats:
            stats = torch.cat(row_stats, dim=1).reshape(-1)
    elif metric == "cos":
        if pairs:
            gs = torch.cat([p[0] for p in pairs], dim=1)
            gr = torch.cat([p[1] for p in pairs], dim=1)
        else:
            gs = gr = torch.zeros(num_classes, 0, dtype=acc_dtype, device=device)
        dot, norm_r, norm_s = _row_terms(gs, gr)
        total = 1 - dot / (norm_r * norm_s + EPS)
        stats = torch.stack([dot, norm_r.square(), norm_s.square()], dim=-1).reshape(-1)
    elif metric == "mse":
        for gs, gr, w, _ in pairs:
            total = total + w * (gs - gr).square().sum(-1)
    elif metric == "l1":
        for gs, gr, w, _ in pairs:
            total = total + w * (gs - gr).abs().sum(-1)
    else:
        raise ValueError(f"unknown metric {metric!r}")
    return (total if batched else total.reshape(())), stats.detach()


def _cosine_grads(gs, gr, scale):
    """Gradients of scale * (1 - <gr,gs> / (||gr|| ||gs|| + eps)) w.r.t. gs and gr, reducing over the
    last dimension; the norm's gradient at 0 is 0 (autograd's convention for torch.norm)."""
    dot, norm_r, norm_s = _row_terms(gs, gr)
    den = norm_r * norm_s + EPS
    coef_s = torch.where(norm_s > 0, dot * norm_r / (norm_s * den * den), 0)
    coef_r = torch.where(norm_r > 0, dot * norm_s / (norm_r * den * den), 0)
    scale = scale.unsqueeze(-1)
    return (scale * (coef_s.unsqueeze(-1) * gs - gr / den.unsqueeze(-1)),
            scale * (coef_r.unsqueeze(-1) * gr - gs / den.unsqueeze(-1)))


def backward(grad_out, g_syn, g_real, stats, metric: str, weights, batched: bool, need_syn: bool, need_real: bool):
    """Gradients w.r.t. g_syn and g_real (lists; empty where not needed): the closed-form
    derivatives of ``forward`` (autograd cannot run inside a custom-op kernel). ``stats`` is recomputed."""
    del stats
    num_classes = g_syn[0].shape[0] if batched else 1
    go = _acc(grad_out).reshape(num_classes)
    syn_grads, real_grads = [], []
    cos_parts = []
    for gs_t, gr_t, w in zip(g_syn, g_real, weights):
        shape = gs_t.shape[batched:]
        gs, gr = _acc(gs_t).reshape(num_classes, -1), _acc(gr_t).reshape(num_classes, -1)
        if w == 0 or (metric == "ours" and not is_row_tensor(shape, w, metric)):
            d_syn, d_real = torch.zeros_like(gs), torch.zeros_like(gr)
        elif metric == "ours":
            rows, cols = rows_and_cols(shape)
            scale = (go * w).reshape(num_classes, 1).expand(num_classes, rows)
            d_syn, d_real = _cosine_grads(gs.reshape(num_classes, rows, cols), gr.reshape(num_classes, rows, cols), scale)
        elif metric == "cos":
            cos_parts.append(len(syn_grads))
            d_syn = d_real = None  # filled below from the whole concatenation
        elif metric == "mse":
            d_syn = 2 * (go * w).unsqueeze(-1) * (gs - gr)
            d_real = -d_syn
        else:
            d_syn = (go * w).unsqueeze(-1) * torch.sign(gs - gr)
            d_real = -d_syn
        syn_grads.append(d_syn)
        real_grads.append(d_real)
    if cos_parts:
        gs = torch.cat([_acc(g_syn[i]).reshape(num_classes, -1) for i in cos_parts], dim=1)
        gr = torch.cat([_acc(g_real[i]).reshape(num_classes, -1) for i in cos_parts], dim=1)
        d_syn, d_real = _cosine_grads(gs, gr, go)
        sizes = [g_syn[i].numel() // num_classes for i in cos_parts]
        for i, ds, dr in zip(cos_parts, d_syn.split(sizes, dim=1), d_real.split(sizes, dim=1)):
            syn_grads[i], real_grads[i] = ds, dr
    def shaped(grads, like):  # fresh tensors: custom-op outputs may not alias each other
        return [torch.empty_like(t).copy_(g.reshape(t.shape)) for g, t in zip(grads, like)]

    return shaped(syn_grads, g_syn) if need_syn else [], shaped(real_grads, g_real) if need_real else []
