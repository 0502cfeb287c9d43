"""Pure-PyTorch bn_stat_loss: THE specification (docs/semantics.md#bn_stat_loss).

SRe2L's ``BNFeatureHook`` (VILA-Lab/SRe2L, recover code) and DELT, for the input a_l of every
BatchNorm layer l, viewed as [B, C, S]:

    mean_l = mean of a_l over (B, S)          per channel
    var_l  = biased variance of a_l over (B, S) per channel (divide by B*S)
    loss   = sum_l w_l * ( ||mean_l - running_mean_l||_2 + ||var_l - running_var_l||_2 )

The norms are NOT squared. Everything is computed in the accumulate dtype (fp32 for fp16/bf16/fp32,
fp64 for fp64); the loss is returned in it. The backward is the closed-form derivative:

    d/da_l[b, c, s] = g w_l ( dm_c / (||dm|| N) + 2 dv_c (a_l[b, c, s] - mean_c) / (||dv|| N) )

with dm = mean_l - running_mean_l, dv = var_l - running_var_l, N = B*S, and the subgradient 0 where a
norm is 0 (as torch.linalg.vector_norm's backward); the running statistics get -g w_l dm / ||dm|| and
-g w_l dv / ||dv||. The tests check it against autograd of an independent transcription of SRe2L's
hook and against finite differences (gradcheck).

Statistics saved for backward (one flat tensor in the accumulate dtype): the batch means of all
channels of all layers, then their batch variances, then ||dm|| of every layer, then ||dv||.
"""

from __future__ import annotations

import torch

from .plan import accumulate_dtype, bcs


def _view(a: torch.Tensor) -> torch.Tensor:
    """[B, C, S] in the accumulate dtype."""
    b, c, s = bcs(a.shape)
    return a.to(accumulate_dtype(a.dtype)).reshape(b, c, s)


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, and 0 where den == 0 (the norm's subgradient at 0; NaN still propagates)."""
    return torch.where(den == 0, torch.zeros_like(num), num / torch.where(den == 0, torch.ones_like(den), den))


def forward(activations, running_means, running_vars, weights):
    """Returns (loss, statistics saved for backward), both in the accumulate dtype."""
    acc = accumulate_dtype(activations[0].dtype)
    means, variances, norm_m, norm_v = [], [], [], []
    loss = torch.zeros((), dtype=acc, device=activations[0].device)
    for a, mu, rv, w in zip(activations, running_means, running_vars, weights):
        x = _view(a)
        mean = x.mean(dim=(0, 2))
        var = x.var(dim=(0, 2), correction=0)
        nm = torch.linalg.vector_norm(mean - mu.to(acc))
        nv = torch.linalg.vector_norm(var - rv.to(acc))
        loss = loss + w * (nm + nv)
        means.append(mean)
        variances.append(var)
        norm_m.append(nm)
        norm_v.append(nv)
    stats = torch.cat([*means, *variances, torch.stack(norm_m), torch.stack(norm_v)])
    return loss, stats.detach()


def split_stats(stats: torch.Tensor, channels: list[int]):
    """(per-layer means, per-layer variances, norms of dm [L], norms of dv [L]) from the flat statistics."""
    total, num_layers = sum(channels), len(channels)
    means = stats[:total].split(channels)
    variances = stats[total:2 * total].split(channels)
    return means, variances, stats[2 * total:2 * total + num_layers], stats[2 * total + num_layers:]


def backward(grad_out, activations, running_means, running_vars, stats, weights, need_act: bool, need_stats: bool):
    """Gradients (activations, running_means, running_vars), each a list (empty where not needed)."""
    channels = [a.shape[1] for a in activations]
    means, variances, norm_m, norm_v = split_stats(stats, channels)
    g = grad_out.to(stats.dtype)
    d_act, d_mean, d_var = [], [], []
    for l, (a, mu, rv, w) in enumerate(zip(activations, running_means, running_vars, weights)):
        b, c, s = bcs(a.shape)
        n = b * s
        coef_m = g * w * _safe_div(means[l] - mu.to(stats.dtype), norm_m[l])  # dL/dmean
        coef_v = g * w * _safe_div(variances[l] - rv.to(stats.dtype), norm_v[l])  # dL/dvar
        if need_act:
            x = _view(a)
            grad = coef_m[None, :, None] / n + (2 * coef_v / n)[None, :, None] * (x - means[l][None, :, None])
            d_act.append(grad.to(a.dtype).reshape(a.shape))
        if need_stats:
            d_mean.append((-coef_m).to(mu.dtype))
            d_var.append((-coef_v).to(rv.dtype))
    return d_act, d_mean, d_var
