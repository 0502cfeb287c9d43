"""Faithful re-creation of SRe2L's BN-statistics loss (VILA-Lab/SRe2L, recover code), written by us
from its published semantics: one forward hook per BatchNorm2d computing the batch mean, the
biased batch variance (permute, reshape, var) and two torch.norm calls, then a Python sum over the
hooks with the first layer weighted by ``first_bn_multiplier``. About 10 small kernels per layer
forward, more backward; this is what ddfast's fused bn_stat_loss and BNStatHooks replace."""

from __future__ import annotations

import torch
from torch import nn


def layer_loss(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor) -> torch.Tensor:
    """One BNFeatureHook: ||running_var - var||_2 + ||running_mean - mean||_2 for input x [B, C, H, W]."""
    nch = x.shape[1]
    mean = x.mean([0, 2, 3])
    var = x.permute(1, 0, 2, 3).contiguous().reshape([nch, -1]).var(1, unbiased=False)
    return torch.norm(running_var - var, 2) + torch.norm(running_mean - mean, 2)


def loop_loss(activations, running_means, running_vars, first_bn_multiplier: float = 10.0) -> torch.Tensor:
    """The recover loop's sum over layers, on already captured BN inputs."""
    rescale = [first_bn_multiplier] + [1.0] * (len(activations) - 1)
    return sum(layer_loss(x, m, v) * rescale[i] for i, (x, m, v) in enumerate(zip(activations, running_means,
                                                                                   running_vars)))


class BNFeatureHook:
    """SRe2L's hook object: computes its layer's term during the forward pass."""

    def __init__(self, module: nn.BatchNorm2d):
        self.hook = module.register_forward_hook(self.hook_fn)
        self.r_feature = None

    def hook_fn(self, module, inputs, output):
        self.r_feature = layer_loss(inputs[0], module.running_mean.data, module.running_var.data)

    def close(self):
        self.hook.remove()


def install(model: nn.Module) -> list[BNFeatureHook]:
    return [BNFeatureHook(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def hooks_loss(hooks, first_bn_multiplier: float = 10.0) -> torch.Tensor:
    rescale = [first_bn_multiplier] + [1.0] * (len(hooks) - 1)
    return sum(mod.r_feature * rescale[i] for i, mod in enumerate(hooks))
